package io.inboxflow.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.tuple.Tuple4;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.python.embedded.AbstractEmbeddedDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * The customer operator: keyed by customer, it applies events and fired timers in batches with
 * <b>one</b> call into Python per batch ({@code udfs.core.batch}), and keeps the customer's
 * state and timer on the JVM.
 *
 * <p>PyFlink's keyed process operator calls into the shared interpreter once per element, once
 * per output and once per state or timer access; in thread mode its bundle settings change
 * nothing (Flink 2.0's embedded operators finish no bundles). This operator extends it only to
 * reuse its set-up: the interpreter with the job's Python environment, and the Python function
 * ({@code udfs.flink.customer_function.CustomerFunction}) opened with a runtime context, which
 * gives it its metrics. Then it takes over every per-element path:
 * <ul>
 *   <li>{@link #processElement} appends the event to the batch, and the customer's state
 *       (one {@code byte[]} value, {@link #CUSTOMER_STATE}) the first time the batch names the
 *       customer;</li>
 *   <li>{@link #onEventTime} appends the fired timer the same way;</li>
 *   <li>{@link #flush} sends the batch as one MessagePack payload, and applies the answer: new
 *       states or deletions, timer deletions and registrations, then the outputs in order.</li>
 * </ul>
 * A batch is flushed when it holds {@code maxBatchEvents}, {@code maxBatchDelayMs} after its
 * first entry (processing time), before a watermark moves (then the timers the watermark fires
 * are flushed too, repeatedly, until a flush registers no timer that the watermark makes due:
 * "a step already due fires before the watermark passes"), before every checkpoint barrier
 * ({@link #prepareSnapshotPreBarrier}: no checkpoint covers an event whose effects are only in
 * a buffer) and at the end of the input. So every event sees the watermark that was current
 * when it arrived, and the order of one customer's events and timers is the order of arrival,
 * as with one call per element.
 *
 * <p>When it starts from restored state, it registers the event-time timer
 * {@link #RESCHEDULE_CHECK} for every customer with a pending timer; it fires with the first
 * watermark and moves the journey's timer to its due time per the current schedule
 * ({@code udfs.core.journey}).
 *
 * <p>Written against Flink 2.0.2 (flink-python's {@link EmbeddedPythonKeyedProcessOperator});
 * {@code job/flink_bridge.py} builds it.
 */
public class BatchCustomerOperator
        extends EmbeddedPythonKeyedProcessOperator<Row, Row, Tuple4<Integer, Integer, String, String>> {
    private static final long serialVersionUID = 1L;

    /**
     * The Python module and its functions. Called with invokeMethod and one argument: pemja's
     * invoke of a global function without arguments crashed the JVM here on the third call
     * (docs/DESIGN.md#pemja-calls). These names, the entry kinds, RESCHEDULE_CHECK and
     * CUSTOMER_STATE are checked against the Python side by tests/unit/test_contract.py.
     */
    private static final String MODULE = "udfs.flink.customer_function";
    private static final String MODULE_NAME = "_inboxflow_operators";
    private static final String OPENED = "opened";
    private static final String PROCESS_BATCH = "process_batch";
    private static final String MIGRATE_STATES = "migrate_states";
    /**
     * The keyed states of versions before the batched operator: three JSON strings per
     * customer, read once after a restore and replaced by CUSTOMER_STATE (see migrateLegacyState).
     */
    static final String[] LEGACY_STATES = {"profile", "cart", "journey"};
    private static final int MIGRATE_CHUNK = 1000;
    /** Entry kinds of a batch: udfs.core.batch.EVENT and TIMER. */
    static final int EVENT = 0;
    static final int TIMER = 1;
    /** Event time of the reschedule check; must match udfs.core.journey.RESCHEDULE_CHECK. */
    static final long RESCHEDULE_CHECK = Long.MIN_VALUE + 1;
    /** The customer's state: udfs.flink.customer_function.CUSTOMER_STATE. */
    static final String CUSTOMER_STATE = "customer";
    /** PyFlink's timer service name of the keyed process operator: timers of savepoints. */
    private static final String USER_TIMERS = "user-timers";

    private final TypeInformation<Row> inputType;
    private final int maxBatchEvents;
    private final long maxBatchDelayMs;

    private transient ValueState<byte[]> customers;
    private transient InternalTimerService<VoidNamespace> timers;
    private transient boolean restored;
    private transient boolean functionClosed;
    /** Entries of the batch, already as MessagePack (5 values each). */
    private transient Pack.Writer entries;
    /** (key, state) of each customer of the batch, as MessagePack. */
    private transient Pack.Writer states;
    private transient int entryCount;
    /** The Flink key (a Row) of each customer of the batch, by customer id. */
    private transient Map<String, Object> keys;
    /** Counts flushes, so that a delay timer of an earlier batch does nothing. */
    private transient long generation;

    public BatchCustomerOperator(Configuration config, DataStreamPythonFunctionInfo functionInfo,
                                 TypeInformation<Row> inputType,
                                 TypeInformation<Tuple4<Integer, Integer, String, String>> outputType,
                                 int maxBatchEvents, long maxBatchDelayMs) {
        super(config, functionInfo, inputType, outputType);
        if (maxBatchEvents < 1 || maxBatchDelayMs < 0) {
            throw new IllegalArgumentException("batch: events must be >= 1 and delay >= 0 ms, got "
                    + maxBatchEvents + " and " + maxBatchDelayMs);
        }
        this.inputType = inputType;
        this.maxBatchEvents = maxBatchEvents;
        this.maxBatchDelayMs = maxBatchDelayMs;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        restored = context.isRestored();
    }

    @Override
    public void open() throws Exception {
        super.open();  // the timer service "user-timers" and the Python function (task thread)
        entries = new Pack.Writer(1 << 16);
        states = new Pack.Writer(1 << 16);
        keys = new HashMap<>();
        customers = getPartitionedState(new ValueStateDescriptor<>(
                CUSTOMER_STATE, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO));
        timers = getInternalTimerService(USER_TIMERS, VoidNamespaceSerializer.INSTANCE, this);
        interpreter.exec("import " + MODULE + " as " + MODULE_NAME);
        if (interpreter.invokeMethod(MODULE_NAME, OPENED, "open") == null) {
            throw new IllegalStateException(
                    "no customer function was opened on this task thread");
        }
        if (restored) {
            migrateLegacyState();
            scheduleRescheduleChecks();
        }
    }

    /**
     * State restored from a version before the batched operator holds each customer in three
     * JSON strings (LEGACY_STATES, PyFlink's string ValueStates of the old operator, same uid).
     * Each customer's three values go to Python in chunks ({@code migrate_states}), come back as
     * one encoded state, are written to CUSTOMER_STATE and cleared; the customer's timer stays
     * as it was restored. A value Python cannot read is logged there by customer and dropped.
     */
    private void migrateLegacyState() throws Exception {
        List<Object> legacyKeys;
        try (Stream<Object> stream =
                     getKeyedStateBackend().getKeys(LEGACY_STATES[0], VoidNamespace.INSTANCE)) {
            legacyKeys = stream.collect(Collectors.toList());
        }
        if (legacyKeys.isEmpty()) {
            return;
        }
        List<ValueState<String>> legacy = new ArrayList<>();
        for (String name : LEGACY_STATES) {
            legacy.add(getPartitionedState(
                    new ValueStateDescriptor<>(name, BasicTypeInfo.STRING_TYPE_INFO)));
        }
        int migrated = 0;
        for (int start = 0; start < legacyKeys.size(); start += MIGRATE_CHUNK) {
            List<Object> chunk =
                    legacyKeys.subList(start, Math.min(start + MIGRATE_CHUNK, legacyKeys.size()));
            Map<String, Object> byId = new HashMap<>();
            Pack.Writer payload = new Pack.Writer(1 << 16);
            payload.arrayHeader(chunk.size() * (1 + LEGACY_STATES.length));
            for (Object key : chunk) {
                setCurrentKey(key);
                String id = (String) ((Row) key).getField(0);
                byId.put(id, key);
                payload.string(id);
                for (ValueState<String> value : legacy) {
                    payload.string(value.value());
                }
            }
            Object answer = interpreter.invokeMethod(MODULE_NAME, MIGRATE_STATES,
                    (Object) payload.toByteArray());
            Pack.Reader in = new Pack.Reader((byte[]) answer);
            for (int i = in.arrayHeader() / 2; i > 0; i--) {
                setCurrentKey(keyOf(byId, in.stringOrNull()));
                byte[] state = in.binaryOrNull();
                if (state != null) {
                    customers.update(state);
                    migrated++;
                }
                for (ValueState<String> value : legacy) {
                    value.clear();
                }
            }
        }
        LOG.info("restored state of a version before the batched operator: {} of {} customers "
                + "moved to the state '{}'", migrated, legacyKeys.size(), CUSTOMER_STATE);
    }

    /** One {@link #RESCHEDULE_CHECK} timer per key of this subtask with a pending timer. */
    private void scheduleRescheduleChecks() throws Exception {
        List<Object> pending = new ArrayList<>();
        timers.forEachEventTimeTimer((namespace, time) -> pending.add(getCurrentKey()));
        for (Object key : pending) {
            setCurrentKey(key);
            timers.registerEventTimeTimer(VoidNamespace.INSTANCE, RESCHEDULE_CHECK);
        }
        LOG.info("restored state: {} pending journeys will be checked against the current schedule",
                pending.size());
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row raw = (Row) element.getValue().getField(1);
        String key = (String) raw.getField(0);
        Long time = (Long) raw.getField(1);
        String text = (String) raw.getField(2);
        Long kafkaTime = (Long) raw.getField(3);
        append(EVENT, key, time == null ? Long.MIN_VALUE : time, text == null ? "" : text,
                kafkaTime == null ? -1 : kafkaTime);
    }

    @Override
    public void onEventTime(InternalTimer<Row, VoidNamespace> timer) throws Exception {
        // the timer service set the timer's key as the current key
        append(TIMER, (String) timer.getKey().getField(0), timer.getTimestamp(), null, 0);
    }

    private void append(int kind, String key, long time, String text, long kafkaTime)
            throws Exception {
        if (!keys.containsKey(key)) {
            keys.put(key, getCurrentKey());
            states.string(key);
            states.binary(customers.value());
        }
        entries.int64(kind);
        entries.string(key);
        entries.int64(time);
        entries.string(text);
        entries.int64(kafkaTime);
        entryCount++;
        if (entryCount >= maxBatchEvents) {
            flush();
        } else if (entryCount == 1 && kind == EVENT) {
            long due = generation;
            getProcessingTimeService().registerTimer(
                    getProcessingTimeService().getCurrentProcessingTime() + maxBatchDelayMs,
                    now -> {
                        if (generation == due) {
                            flush();
                        }
                    });
        }
    }

    /** Applies the batch, if any; true when it held anything. */
    private boolean flush() throws Exception {
        if (entryCount == 0 || functionClosed) {
            return false;
        }
        Pack.Writer payload = new Pack.Writer(entries.size() + states.size() + 32);
        payload.arrayHeader(3);
        payload.int64(timers.currentWatermark());
        payload.arrayHeader(entryCount * 5);
        payload.append(entries);
        payload.arrayHeader(keys.size() * 2);
        payload.append(states);
        Map<String, Object> batchKeys = keys;
        generation++;
        entries.reset();
        states.reset();
        entryCount = 0;
        keys = new HashMap<>();
        Object answer = interpreter.invokeMethod(MODULE_NAME, PROCESS_BATCH,
                (Object) payload.toByteArray());
        apply(new Pack.Reader((byte[]) answer), batchKeys);
        return true;
    }

    private void apply(Pack.Reader in, Map<String, Object> batchKeys) throws Exception {
        if (in.arrayHeader() != 3) {
            throw new IllegalArgumentException("batch result: expected 3 parts");
        }
        for (int i = in.arrayHeader() / 2; i > 0; i--) {
            setCurrentKey(keyOf(batchKeys, in.stringOrNull()));
            byte[] state = in.binaryOrNull();
            if (state == null) {
                customers.clear();
            } else {
                customers.update(state);
            }
        }
        for (int i = in.arrayHeader() / 3; i > 0; i--) {
            setCurrentKey(keyOf(batchKeys, in.stringOrNull()));
            Long delete = in.int64OrNull();
            Long register = in.int64OrNull();
            if (delete != null) {
                timers.deleteEventTimeTimer(VoidNamespace.INSTANCE, delete);
            }
            if (register != null) {
                timers.registerEventTimeTimer(VoidNamespace.INSTANCE, register);
            }
        }
        for (int i = in.arrayHeader() / 4; i > 0; i--) {
            int kind = (int) in.int64();
            int shard = (int) in.int64();
            String key = in.stringOrNull();
            String payload = in.stringOrNull();
            output.collect(new StreamRecord<>(Tuple4.of(kind, shard, key, payload)));
        }
        if (!in.atEnd()) {
            throw new IllegalArgumentException("batch result: bytes after the last part");
        }
    }

    private static Object keyOf(Map<String, Object> batchKeys, String customer) {
        Object key = batchKeys.get(customer);
        if (key == null) {
            throw new IllegalArgumentException("batch result names a customer not in the batch");
        }
        return key;
    }

    /**
     * Flushes the batch, then lets the watermark fire its timers and flushes those, until
     * nothing is pending; only then does the watermark go downstream.
     */
    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        if (timeServiceManager != null) {
            do {
                timeServiceManager.advanceWatermark(mark);
            } while (flush());
        }
        output.emitWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    /** PyFlink closes the Python function here: nothing may call into it afterwards. */
    @Override
    public void endInput() {
        try {
            flush();
        } catch (Exception e) {
            throw new IllegalStateException("flushing the last batch at the end of the input", e);
        }
        functionClosed = true;
        super.endInput();
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> AbstractEmbeddedDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo functionInfo, TypeInformation<T> outputTypeInfo) {
        return (AbstractEmbeddedDataStreamPythonFunctionOperator<T>) new BatchCustomerOperator(
                config, functionInfo, inputType,
                (TypeInformation<Tuple4<Integer, Integer, String, String>>) outputTypeInfo,
                maxBatchEvents, maxBatchDelayMs);
    }
}
