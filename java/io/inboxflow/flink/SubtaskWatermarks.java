package io.inboxflow.flink;

import org.apache.flink.api.common.eventtime.TimestampAssigner;
import org.apache.flink.api.common.eventtime.TimestampAssignerSupplier;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.types.Row;

/**
 * Event-time watermarks of the job: bounded out-of-orderness per Kafka partition, with
 * idleness and the lull rule decided for the whole source subtask.
 *
 * <p>Per partition (split), the watermark is the newest event time minus the bound minus 1 ms;
 * the source emits the minimum over its partitions, so a partition that runs ahead cannot make
 * another's events late. What Flink 2.0's own {@code withIdleness} gets wrong: when every
 * partition of a subtask goes idle in the same periodic check, the subtask is marked idle
 * without ever emitting the faster partitions' watermark, and every reminder due after the
 * slower partition's last event waits for new data (docs/DESIGN.md#idle-watermarks). Here the
 * partitions of one subtask share what they have seen:
 *
 * <ul>
 *   <li>a partition with no event for {@code idlenessMs} follows the subtask's newest event
 *       time (it emits the watermark of the subtask's most advanced partition), so it holds
 *       nobody back;</li>
 *   <li>when every partition of the subtask is idle, the subtask emits that watermark (the
 *       maximum over its partitions), and then marks itself idle so that other subtasks are
 *       not held back by it;</li>
 *   <li><b>the lull rule</b>: instead of going idle, when the newest event was live when it
 *       arrived (its event time at most {@code liveWithinMs} behind the wall clock), the
 *       watermark follows the wall clock minus the bound, so a reminder due during a lull
 *       fires within about bound + idleness of its due time. A replay or backfill (event time
 *       far behind the wall clock) never advances this way, and neither does a subtask that is
 *       still reading records. An event that arrives later with an event time behind the
 *       advanced watermark is late, as any late event.</li>
 * </ul>
 *
 * <p>One instance of this strategy is deserialized per source subtask, and the source creates
 * one generator per split from it, all on the task thread: the shared {@link Subtask} state
 * needs no locking. Events without a readable time ({@link EnvelopeExtractor#NO_TIME}) count
 * as activity but move nothing.
 */
public class SubtaskWatermarks implements WatermarkStrategy<Row> {
    private static final long serialVersionUID = 1L;

    private final long boundMs;
    private final long idlenessMs;
    private final long liveWithinMs;
    private transient Subtask subtask;

    /**
     * @param boundMs out-of-orderness bound
     * @param idlenessMs a partition without events for this long is idle (0: never)
     * @param liveWithinMs the lull rule applies when the newest event's time was at most this
     *     far behind the wall clock when it arrived (0: the rule is off)
     */
    public SubtaskWatermarks(long boundMs, long idlenessMs, long liveWithinMs) {
        this.boundMs = boundMs;
        this.idlenessMs = idlenessMs;
        this.liveWithinMs = liveWithinMs;
    }

    @Override
    public WatermarkGenerator<Row> createWatermarkGenerator(
            WatermarkGeneratorSupplier.Context context) {
        if (subtask == null) {
            subtask = new Subtask();
        }
        return new PartitionGenerator(subtask);
    }

    @Override
    public TimestampAssigner<Row> createTimestampAssigner(
            TimestampAssignerSupplier.Context context) {
        return new EventTimeAssigner();
    }

    /** What all partitions of one source subtask have seen. */
    static final class Subtask {
        long newestEventTime = Long.MIN_VALUE;
        long newestArrival = Long.MIN_VALUE;  // wall clock when that event arrived
        long lastActivity = Long.MIN_VALUE;   // wall clock of the last record of any partition
    }

    /** Watermark of one partition; see the class comment. */
    final class PartitionGenerator implements WatermarkGenerator<Row> {
        private final Subtask shared;
        private long newest = Long.MIN_VALUE;
        private long lastActivity;
        private boolean followedOnce;

        PartitionGenerator(Subtask shared) {
            this.shared = shared;
            this.lastActivity = now();
        }

        @Override
        public void onEvent(Row event, long eventTime, WatermarkOutput output) {
            long wall = now();
            lastActivity = wall;
            shared.lastActivity = wall;
            followedOnce = false;
            if (eventTime == EnvelopeExtractor.NO_TIME) {
                return;
            }
            newest = Math.max(newest, eventTime);
            if (eventTime > shared.newestEventTime) {
                shared.newestEventTime = eventTime;
                shared.newestArrival = wall;
            }
        }

        @Override
        public void onPeriodicEmit(WatermarkOutput output) {
            long wall = now();
            if (idlenessMs <= 0 || wall - lastActivity < idlenessMs) {
                output.emitWatermark(new Watermark(
                        watermarkOf(newest)));
                return;
            }
            long follow = watermarkOf(shared.newestEventTime);
            if (wall - shared.lastActivity < idlenessMs) {
                // other partitions of this subtask are active: do not hold them back
                output.emitWatermark(new Watermark(follow));
                return;
            }
            if (liveWithinMs > 0 && shared.newestEventTime != Long.MIN_VALUE
                    && shared.newestEventTime >= shared.newestArrival - liveWithinMs) {
                // the lull rule: live data, nothing arriving: follow the wall clock
                output.emitWatermark(new Watermark(
                        Math.max(follow, wall - boundMs - 1)));
                return;
            }
            if (!followedOnce) {
                // the subtask's newest watermark goes out before the subtask turns idle
                followedOnce = true;
                output.emitWatermark(new Watermark(follow));
                return;
            }
            output.markIdle();
        }

        private long watermarkOf(long eventTime) {
            return eventTime == Long.MIN_VALUE ? Long.MIN_VALUE : eventTime - boundMs - 1;
        }
    }

    static long now() {
        return System.currentTimeMillis();
    }
}
