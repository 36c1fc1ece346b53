package io.inboxflow.flink;

import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ScheduledFuture;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.tuple.Tuple4;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.python.embedded.AbstractEmbeddedDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * PyFlink's thread-mode keyed process operator for the customer function, plus one duty: it
 * drains the ClickHouse rows the Python function buffers ({@code udfs.flink.customer_function}).
 *
 * <p>Each element a Python function hands to the JVM costs a round trip through the shared
 * interpreter, far more than building the rows (docs/PERFORMANCE.md#costs-behind-the-design),
 * so the function buffers the rows of many events per shard and emits them as one element. A
 * buffer in Python is invisible to Flink's checkpoints (docs/DESIGN.md#python-sink), so this
 * operator empties it
 * <ul>
 *   <li>in {@link #prepareSnapshotPreBarrier}, before the barrier goes downstream: a completed
 *       checkpoint never covers an event whose rows lived only in the buffer;</li>
 *   <li>every {@code drainIntervalMs} of processing time (bounds the added freshness);</li>
 *   <li>before the final watermark of a bounded input, at its end and in {@link #finish}.</li>
 * </ul>
 * The function also emits a full buffer itself, and drains inline in timers fired by the final
 * watermark. The drain runs on the task thread, like every other call into the function.
 *
 * <p>When it starts from restored state (a checkpoint or savepoint), it registers the event-time
 * timer {@link #RESCHEDULE_CHECK} for every customer with a pending journey. It fires with the
 * first watermark and lets the function move the journey's timer to its due time per the
 * current schedule: after a timing change in the config, a reminder due earlier now fires at
 * the new time even for a customer who sends no further event ({@code udfs.core.journey}).
 */
public class CustomerOperator
        extends EmbeddedPythonKeyedProcessOperator<Row, Row, Tuple4<Integer, Integer, String, String>> {
    private static final long serialVersionUID = 1L;

    /**
     * The Python module and function that hand over the buffer: a flat list (shard, rows, ...).
     * Called with invokeMethod and one argument, the call PyFlink itself makes per element:
     * pemja's invoke of a global function without arguments crashed the JVM here on the third
     * call (func_dealloc, the function's reference count runs out; docs/DESIGN.md#pemja-calls).
     * This constant, DRAIN, RESCHEDULE_CHECK and JOURNEY_STATE are checked against the Python
     * side by tests/unit/test_contract.py.
     */
    private static final String MODULE = "udfs.flink.customer_function";
    private static final String MODULE_NAME = "_inboxflow_operators";
    private static final String DRAIN = "drain_store_rows";
    /** Event time of the reschedule check; must match udfs.core.journey.RESCHEDULE_CHECK. */
    static final long RESCHEDULE_CHECK = Long.MIN_VALUE + 1;
    /** The keyed state (udfs.flink.customer_function.JOURNEY_STATE) that is set while a reminder is pending. */
    private static final String JOURNEY_STATE = "journey";
    /** PyFlink's timer service of the keyed process operator (EmbeddedPythonKeyedProcessOperator). */
    private static final String USER_TIMERS = "user-timers";

    private final TypeInformation<Row> inputType;
    private final long drainIntervalMs;
    private transient ScheduledFuture<?> drainTimer;
    private transient boolean functionClosed;
    private transient boolean restored;

    public CustomerOperator(Configuration config, DataStreamPythonFunctionInfo functionInfo,
                            TypeInformation<Row> inputType,
                            TypeInformation<Tuple4<Integer, Integer, String, String>> outputType,
                            long drainIntervalMs) {
        super(config, functionInfo, inputType, outputType);
        this.inputType = inputType;
        this.drainIntervalMs = drainIntervalMs;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        restored = context.isRestored();
    }

    @Override
    public void open() throws Exception {
        super.open();  // opens the Python function on this (the task) thread
        interpreter.exec("import " + MODULE + " as " + MODULE_NAME);
        // The first call also tells the function that someone drains it; until then it emits
        // every event's rows at once (which is also what happens under a plain operator).
        if (interpreter.invokeMethod(MODULE_NAME, DRAIN, "open") == null) {
            throw new IllegalStateException(
                    "no customer function with a row buffer was opened on this task thread");
        }
        if (restored) {
            scheduleRescheduleChecks();
        }
        if (drainIntervalMs > 0) {
            drainTimer = getProcessingTimeService().scheduleWithFixedDelay(
                    time -> drain("timer"), drainIntervalMs, drainIntervalMs);
        }
    }

    /** One {@link #RESCHEDULE_CHECK} timer per key of this subtask with a pending journey. */
    private void scheduleRescheduleChecks() throws Exception {
        InternalTimerService<VoidNamespace> timers =
                getInternalTimerService(USER_TIMERS, VoidNamespaceSerializer.INSTANCE, this);
        List<Row> keys;
        try (Stream<Row> stream = this.<Row>getKeyedStateBackend()
                .getKeys(JOURNEY_STATE, VoidNamespace.INSTANCE)) {
            keys = stream.collect(Collectors.toList());
        }
        for (Row key : keys) {
            setCurrentKey(key);
            timers.registerEventTimeTimer(VoidNamespace.INSTANCE, RESCHEDULE_CHECK);
        }
        LOG.info("restored state: {} pending journeys will be checked against the current schedule",
                keys.size());
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        drain("checkpoint");
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    /**
     * Rows of events processed so far go out ahead of the final watermark. Rows of the timers it
     * fires are drained by the function itself (it sees the final watermark in those timers).
     */
    @Override
    public void processWatermark(Watermark mark) throws Exception {
        if (mark.getTimestamp() == Long.MAX_VALUE) {
            drain("final watermark");
        }
        super.processWatermark(mark);
    }

    /** PyFlink closes the Python function here: nothing may call into it afterwards. */
    @Override
    public void endInput() {
        drain("end of input");
        if (drainTimer != null) {
            drainTimer.cancel(false);
        }
        functionClosed = true;
        super.endInput();
    }

    @Override
    public void finish() throws Exception {
        drain("finish");
        super.finish();
    }

    private void drain(String why) {
        if (functionClosed) {
            return;
        }
        Object drained = interpreter.invokeMethod(MODULE_NAME, DRAIN, why);
        if (drained == null) {
            return;
        }
        List<?> flat = drained instanceof Object[] ? Arrays.asList((Object[]) drained) : (List<?>) drained;
        for (int i = 0; i + 1 < flat.size(); i += 2) {
            int shard = ((Number) flat.get(i)).intValue();
            output.collect(new StreamRecord<>(
                    Tuple4.of(OutputRouter.STORE, shard, "", (String) flat.get(i + 1))));
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> AbstractEmbeddedDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo functionInfo, TypeInformation<T> outputTypeInfo) {
        return (AbstractEmbeddedDataStreamPythonFunctionOperator<T>) new CustomerOperator(
                config, functionInfo, inputType,
                (TypeInformation<Tuple4<Integer, Integer, String, String>>) outputTypeInfo,
                drainIntervalMs);
    }
}
