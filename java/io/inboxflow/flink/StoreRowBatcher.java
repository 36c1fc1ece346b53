package io.inboxflow.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Joins the ClickHouse rows of many events of one shard into one element for the (Python)
 * writer: {@code Row(shard, Tuple3(shard, "", lines))} in, the same shape out with the lines of
 * up to {@code maxEvents} elements, at most {@code maxDelayMs} after the first was buffered.
 *
 * <p>In thread mode every element handed to a Python operator, and every ListState append it
 * makes, is a trip between the JVM and the one shared interpreter; per event that cost halved
 * the job's throughput. Nothing is held across a checkpoint: the buffers are emitted in
 * {@link #prepareSnapshotPreBarrier}, before the barrier goes downstream, so every row is in
 * the writer's state (or already in ClickHouse) when the checkpoint covers its event; and
 * before the final watermark of a bounded input.
 */
public class StoreRowBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {
    private static final long serialVersionUID = 1L;

    private final int maxEvents;
    private final long maxDelayMs;
    private transient Map<Integer, StringBuilder> buffers;
    private transient Map<Integer, Integer> counts;
    private transient boolean timerPending;

    public StoreRowBatcher(int maxEvents, long maxDelayMs) {
        this.maxEvents = maxEvents;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffers = new HashMap<>();
        counts = new HashMap<>();
    }

    @Override
    @SuppressWarnings("unchecked")
    public void processElement(StreamRecord<Row> element) {
        Row row = element.getValue();
        int shard = (Integer) row.getField(0);
        String lines = ((Tuple3<Integer, String, String>) row.getField(1)).f2;
        StringBuilder buffer = buffers.computeIfAbsent(shard, k -> new StringBuilder());
        if (buffer.length() > 0) {
            buffer.append('\n');
        }
        buffer.append(lines);
        if (counts.merge(shard, 1, Integer::sum) >= maxEvents) {
            emit(shard);
        } else if (!timerPending) {
            timerPending = true;
            long due = getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs;
            getProcessingTimeService().registerTimer(due, time -> {
                timerPending = false;
                emitAll();
            });
        }
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        emitAll();
    }

    /**
     * The end of a bounded input reaches this operator as the final watermark before
     * {@link #endInput}; the writer flushes on that watermark and its processing-time timers
     * never fire once the input has ended, so the buffers must go downstream first.
     */
    @Override
    public void processWatermark(Watermark mark) throws Exception {
        if (mark.getTimestamp() == Long.MAX_VALUE) {
            emitAll();
        }
        super.processWatermark(mark);
    }

    @Override
    public void endInput() {
        emitAll();
    }

    private void emitAll() {
        for (Integer shard : new ArrayList<>(buffers.keySet())) {
            emit(shard);
        }
    }

    private void emit(int shard) {
        StringBuilder buffer = buffers.remove(shard);
        counts.remove(shard);
        if (buffer != null && buffer.length() > 0) {
            output.collect(new StreamRecord<>(Row.of(shard, Tuple3.of(shard, "", buffer.toString()))));
        }
    }
}
