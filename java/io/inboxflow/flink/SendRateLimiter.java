package io.inboxflow.flink;

import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.JsonWriteFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.OutputTag;

/**
 * The global send rate: email requests ({@code Row(customer id, request JSON)}) pass through
 * while each subtask is within its share of {@code guards.send_rate}; the others wait, in
 * order, in a checkpointed buffer and leave as tokens become available (docs/DESIGN.md#send-rate).
 *
 * <ul>
 *   <li><b>Share.</b> Each subtask allows {@code sendRate / parallelism} requests per second, a
 *       double (10/s over 4 subtasks: 2.5/s each). The bucket holds one second's worth, at
 *       least 1 token, and starts full (also after a restore: the tokens are not checkpointed).
 *   <li><b>Time.</b> Processing time (the wall clock): tokens are refilled from the time since
 *       the last refill; a processing-time timer fires when the next token is due.
 *   <li><b>Order.</b> A request passes at once only when nothing is waiting and a token is
 *       there; otherwise it joins the end of the buffer. The buffer is released from its head.
 *   <li><b>Never dropped.</b> {@code snapshotState} writes the buffer to operator list state,
 *       {@code initializeState} reads it back. On a rescale Flink splits the list over the new
 *       subtasks (each share keeps its order; a customer's waiting and new requests may then
 *       leave from different subtasks).
 *   <li><b>Deferred outcomes.</b> Each request that has to wait emits, once, on the side output
 *       {@link #DEFERRED}, {@code Row(customer id, outcome JSON)}: {@code {"kind":"deferred",
 *       "reason":"send_rate","customer_id":..,"request_id":..,"event_time":..,"queued":..}}
 *       ({@code event_time}: the request's {@code trigger_event_time} in epoch ms, left out when
 *       it is not an ISO instant; {@code queued}: the buffer's length with this request). ASCII
 *       only, like the router's DLQ record.
 *   <li><b>End of input.</b> Flink fires no processing-time timer after the input ended, so
 *       {@link #endInput()} releases what is left, in order and at the same rate, sleeping on
 *       the task thread between tokens: the task does nothing else (no checkpoint) until the
 *       buffer is empty. A stop with savepoint that does not drain never calls it: the buffer
 *       goes into the savepoint.
 *   <li><b>Watermarks</b> pass through at once (a request released later may be behind them:
 *       downstream are only Kafka sinks). Each request keeps its stream timestamp.
 *   <li><b>Metrics</b> (the operator's group): counter {@code send_rate_deferred}, gauge
 *       {@code send_rate_queued} (a field the task thread sets; the metric thread only reads).
 * </ul>
 */
public class SendRateLimiter extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {
    private static final long serialVersionUID = 1L;

    public static final String REASON = "send_rate";
    private static final TypeInformation<Row> KEYED_JSON = Types.ROW(Types.STRING, Types.STRING);
    /** The side output of deferred outcomes, {@code Row(customer id, outcome JSON)}. */
    public static final OutputTag<Row> DEFERRED = new OutputTag<>("send_rate_deferred", KEYED_JSON);
    private static final String BUFFER_STATE = "send-rate-buffer";
    private static final long NO_TIMESTAMP = Long.MIN_VALUE;

    private final int sendRate;

    private transient double perSecond;
    private transient double capacity;
    private transient double tokens;
    private transient long refilledAt;
    private transient ArrayDeque<StreamRecord<Row>> waiting;
    private transient ListState<Tuple3<String, String, Long>> checkpointed;
    private transient boolean timerPending;
    private transient ObjectMapper json;
    private transient Counter deferred;
    private transient volatile int queued;

    /** @param sendRate requests per second across all subtasks; must be positive. */
    public SendRateLimiter(int sendRate) {
        if (sendRate <= 0) {
            throw new IllegalArgumentException("send rate must be positive: " + sendRate);
        }
        this.sendRate = sendRate;
    }

    /** The per-subtask share: {@code sendRate / parallelism} requests per second. */
    public static double share(int sendRate, int parallelism) {
        return (double) sendRate / parallelism;
    }

    /** The bucket size for a share: one second's worth, at least 1 token. */
    public static double bucket(double perSecond) {
        return Math.max(1.0, perSecond);
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        checkpointed = context.getOperatorStateStore().getListState(new ListStateDescriptor<>(
                BUFFER_STATE, Types.TUPLE(Types.STRING, Types.STRING, Types.LONG)));
        waiting = new ArrayDeque<>();
        if (context.isRestored()) {
            for (Tuple3<String, String, Long> held : checkpointed.get()) {
                Row row = Row.of(held.f0, held.f1);
                waiting.add(held.f2 == NO_TIMESTAMP
                        ? new StreamRecord<>(row) : new StreamRecord<>(row, held.f2));
            }
        }
        queued = waiting.size();
    }

    @Override
    public void open() throws Exception {
        super.open();
        perSecond = share(sendRate, getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks());
        capacity = bucket(perSecond);
        tokens = capacity;
        refilledAt = now();
        json = new ObjectMapper(
                JsonFactory.builder().enable(JsonWriteFeature.ESCAPE_NON_ASCII).build());
        deferred = getMetricGroup().counter("send_rate_deferred");
        getMetricGroup().gauge("send_rate_queued", (Gauge<Integer>) () -> queued);
        scheduleRelease();
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        refill();
        release();
        if (waiting.isEmpty() && tokens >= 1.0) {
            tokens -= 1.0;
            output.collect(element);
            return;
        }
        // copied: the record object may be reused by the caller once this returns
        StreamRecord<Row> held = element.hasTimestamp()
                ? new StreamRecord<>(element.getValue(), element.getTimestamp())
                : new StreamRecord<>(element.getValue());
        waiting.add(held);
        queued = waiting.size();
        deferred.inc();
        Row outcome = Row.of(key(held.getValue()), deferredOutcome(held.getValue(), waiting.size()));
        output.collect(DEFERRED, element.hasTimestamp()
                ? new StreamRecord<>(outcome, element.getTimestamp()) : new StreamRecord<>(outcome));
        scheduleRelease();
    }

    /** Releases waiting requests from the head while tokens last. */
    private void release() {
        while (!waiting.isEmpty() && tokens >= 1.0) {
            tokens -= 1.0;
            output.collect(waiting.poll());
        }
        queued = waiting.size();
    }

    private void refill() {
        long now = now();
        if (now > refilledAt) {
            tokens = Math.min(capacity, tokens + (now - refilledAt) * perSecond / 1000.0);
            refilledAt = now;
        }
    }

    /** Milliseconds until the next token is there (at least 1). */
    private long untilNextToken() {
        return Math.max(1L, (long) Math.ceil((1.0 - tokens) * 1000.0 / perSecond));
    }

    private void scheduleRelease() {
        if (timerPending || waiting.isEmpty()) {
            return;
        }
        timerPending = true;
        getProcessingTimeService().registerTimer(now() + untilNextToken(), time -> {
            timerPending = false;
            refill();
            release();
            scheduleRelease();
        });
    }

    private long now() {
        return getProcessingTimeService().getCurrentProcessingTime();
    }

    /**
     * Releases everything still waiting, in order and at the rate, sleeping between tokens
     * (no timer fires after the end of the input).
     */
    @Override
    public void endInput() throws Exception {
        refill();
        release();
        while (!waiting.isEmpty()) {
            Thread.sleep(untilNextToken());
            refill();
            release();
        }
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        List<Tuple3<String, String, Long>> held = new ArrayList<>(waiting.size());
        for (StreamRecord<Row> record : waiting) {
            Row row = record.getValue();
            held.add(Tuple3.of((String) row.getField(0), (String) row.getField(1),
                    record.hasTimestamp() ? record.getTimestamp() : NO_TIMESTAMP));
        }
        checkpointed.update(held);
    }

    private static String key(Row request) {
        Object key = request.getField(0);
        return key == null ? null : key.toString();
    }

    /** The deferred outcome of {@code request}, waiting with {@code queued} requests in all. */
    String deferredOutcome(Row request, int queued) throws Exception {
        String customer = key(request);
        Object text = request.getField(1);
        JsonNode parsed = null;
        if (text != null) {
            try {
                parsed = json.readTree(text.toString());
            } catch (Exception unreadable) {
                parsed = null; // the outcome still goes out, without what the request says
            }
        }
        ObjectNode out = json.createObjectNode();
        out.put("kind", "deferred");
        out.put("reason", REASON);
        out.put("customer_id", customer);
        JsonNode requestId = parsed == null ? null : parsed.get("request_id");
        out.put("request_id", requestId != null && requestId.isTextual() ? requestId.asText() : null);
        JsonNode trigger = parsed == null ? null : parsed.get("trigger_event_time");
        if (trigger != null && trigger.isTextual()) {
            try {
                out.put("event_time", Instant.parse(trigger.asText()).toEpochMilli());
            } catch (DateTimeParseException | ArithmeticException notSimple) {
                // left out: not an ISO instant such as 2026-01-05T09:00:00.000Z
            }
        }
        out.put("queued", queued);
        return json.writeValueAsString(out);
    }
}
