package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.flink.api.common.state.BroadcastState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.JsonWriteFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedMultiInput;
import org.apache.flink.streaming.api.operators.InputSelectable;
import org.apache.flink.streaming.api.operators.InputSelection;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.types.Row;
import org.apache.flink.util.OutputTag;

/**
 * The product catalog joined to the events in the stream, before they are keyed by customer
 * (docs/DESIGN.md#catalog). Input 1: the {@code KEYED_EVENT} envelopes
 * {@code Row(key, Row(key, event_time_ms, raw, kafka_ms))}, forward from the source (same
 * parallelism, so each partition's order is kept); each leaves with its raw JSON enriched by
 * {@link Catalog#enrich} and its stream timestamp unchanged. Input 2 (when there is a catalog
 * stream): product records {@code Row(product_id, json or null)}, broadcast to every subtask;
 * an empty value removes the product (a Kafka tombstone). Without a catalog stream the operator
 * runs as a one-input operator on the file's records alone (chained to the source).
 *
 * <ul>
 *   <li><b>Order of truth.</b> The file's records (constructor) first, then the stream's records
 *       in arrival order, which replace or remove them. Only the stream's records are state:
 *       operator broadcast state {@value #STATE} (product id to record JSON, "" = removed),
 *       checkpointed and restored on every subtask; the file is read again on every start, so
 *       a changed file applies to every product the stream has not named.
 *   <li><b>Watermarks.</b> Input 1's watermarks and watermark status pass as they are; input 2's
 *       are ignored, so an idle or slow catalog never holds back event time.
 *   <li><b>Invalid records</b> change nothing and leave on the side output {@link #REJECTED} as a
 *       dead-letter record {@code Row(null, json)}: reason {@value #REASON}, the product id when
 *       readable, the JSON path and a short message, never the record itself. Every subtask
 *       receives every record; subtask 0 alone reports a refused one.
 *   <li><b>Metrics</b> (the operator's group): counters {@code catalog_enriched} and
 *       {@code catalog_rejected}, gauge {@code catalog_products} (a field the task thread sets).
 * </ul>
 */
public class CatalogJoin extends AbstractStreamOperator<Row>
        implements TwoInputStreamOperator<Row, Row, Row>, OneInputStreamOperator<Row, Row> {
    private static final long serialVersionUID = 1L;

    public static final String REASON = "catalog_invalid";
    public static final String STATE = "catalog";
    private static final TypeInformation<Row> KEYED_JSON = Types.ROW(Types.STRING, Types.STRING);
    /** Dead-letter records of refused catalog records, {@code Row(null, json)}. */
    public static final OutputTag<Row> REJECTED = new OutputTag<>("catalog_rejected", KEYED_JSON);
    private static final ObjectMapper DLQ_JSON = new ObjectMapper(
            JsonFactory.builder().enable(JsonWriteFeature.ESCAPE_NON_ASCII).build());
    private static final DateTimeFormatter ISO_MS =
            DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private final ArrayList<String> fileRecords;
    private final long maxEventBytes;

    private transient Catalog catalog;
    private transient Set<String> fileIds;
    private transient BroadcastState<String, String> state;
    private transient Counter enriched;
    private transient Counter rejected;
    private transient boolean reportsRejects;
    private transient volatile int products;

    /**
     * @param fileRecords the catalog file's records, one JSON text per line (checked when the
     *     job was built), applied before the stream's
     * @param maxEventBytes {@code limits.max_event_bytes}: an event the catalog would make
     *     larger than this stays as it was sent
     */
    public CatalogJoin(String fileRecords, long maxEventBytes) {
        this.fileRecords = new ArrayList<>();
        for (String line : fileRecords.split("\n")) {
            if (!line.isBlank()) {
                this.fileRecords.add(line);
            }
        }
        this.maxEventBytes = maxEventBytes;
    }

    /** A {@link CatalogFirst}: reads a bounded catalog stream whole before any event. */
    public static CatalogJoin catalogFirst(String fileRecords, long maxEventBytes) {
        return new CatalogFirst(fileRecords, maxEventBytes);
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        state = context.getOperatorStateStore().getBroadcastState(
                new MapStateDescriptor<>(STATE, Types.STRING, Types.STRING));
        catalog = new Catalog(maxEventBytes);
        fileIds = new HashSet<>();
        for (String record : fileRecords) {
            if (catalog.apply(null, record) == null) {
                fileIds.add(catalog.appliedId);
            }
        }
        List<Map.Entry<String, String>> restored = new ArrayList<>();
        for (Map.Entry<String, String> entry : state.entries()) {
            restored.add(entry);
        }
        for (Map.Entry<String, String> entry : restored) {
            catalog.apply(entry.getKey(), entry.getValue());
        }
        products = catalog.size();
    }

    @Override
    public void open() throws Exception {
        super.open();
        reportsRejects = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() == 0;
        enriched = getMetricGroup().counter("catalog_enriched");
        rejected = getMetricGroup().counter("catalog_rejected");
        getMetricGroup().gauge("catalog_products", (Gauge<Integer>) () -> products);
    }

    /** An event envelope (input 1, or the only input without a catalog stream). */
    @Override
    public void processElement1(StreamRecord<Row> element) {
        Row envelope = element.getValue();
        Object inner = envelope == null ? null : envelope.getField(1);
        if (!(inner instanceof Row)) {
            output.collect(element);
            return;
        }
        Row event = (Row) inner;
        Object raw = event.getField(2);
        String text = raw instanceof String ? (String) raw : null;
        String out = catalog.enrich(text);
        if (out == text) {
            output.collect(element);
            return;
        }
        enriched.inc();
        Row copy = Row.of(event.getField(0), event.getField(1), out, event.getField(3));
        output.collect(element.replace(Row.of(envelope.getField(0), copy)));
    }

    @Override
    public void processElement(StreamRecord<Row> element) {
        processElement1(element);
    }

    /** A catalog record {@code Row(product_id, json or null)} (input 2). */
    @Override
    public void processElement2(StreamRecord<Row> element) throws Exception {
        Row record = element.getValue();
        String key = record == null ? null : asText(record.getField(0));
        String value = record == null ? null : asText(record.getField(1));
        Catalog.Problem problem = catalog.apply(key, value);
        if (problem != null) {
            if (!reportsRejects) {
                return; // every subtask gets the record: subtask 0 alone reports it
            }
            rejected.inc();
            Row dlq = Row.of(null, deadLetter(problem.productId, problem.path, problem.message,
                    value, System.currentTimeMillis()));
            output.collect(REJECTED, element.hasTimestamp()
                    ? new StreamRecord<>(dlq, element.getTimestamp()) : new StreamRecord<>(dlq));
            return;
        }
        String id = catalog.appliedId;
        if (value == null || value.isBlank()) {
            if (fileIds.contains(id)) {
                state.put(id, "");
            } else {
                state.remove(id);
            }
        } else {
            state.put(id, value);
        }
        products = catalog.size();
    }

    private static String asText(Object field) {
        return field == null ? null : field.toString();
    }

    /**
     * The dead-letter JSON of a refused record, in the shape of every DLQ record
     * ({@code udfs.core.validation.dlq_record}) with the payload cut to nothing (the record
     * itself is never quoted; {@code payload_bytes} is its size) and the product id, when
     * readable, added last. ASCII only.
     */
    public static String deadLetter(String productId, String path, String message, String value,
                                    long seenAt) throws Exception {
        int size = value == null ? 0 : value.getBytes(StandardCharsets.UTF_8).length;
        ObjectNode out = DLQ_JSON.createObjectNode();
        out.put("payload", "");
        out.put("payload_truncated", size > 0);
        out.put("payload_bytes", size);
        out.put("reason", REASON);
        out.put("path", path);
        out.put("message", message);
        out.putNull("event_id");
        out.putNull("customer_id");
        out.put("seen_at", seenAt);
        out.put("seen_at_iso", ISO_MS.format(Instant.ofEpochMilli(seenAt)));
        out.put("product_id", productId);
        return DLQ_JSON.writeValueAsString(out);
    }

    /** The events' watermark passes as it is. */
    @Override
    public void processWatermark1(Watermark mark) throws Exception {
        processWatermark(mark);
    }

    /** The catalog's watermark never holds back (nor moves) event time. */
    @Override
    public void processWatermark2(Watermark mark) {
    }

    /** Input 1's status (idle / active) passes as it is; the catalog's is ignored. */
    @Override
    protected void processWatermarkStatus(WatermarkStatus status, int index) {
        if (index == 0) {
            output.emitWatermarkStatus(status);
        }
    }

    /**
     * Reads a bounded catalog stream whole before any event (tests, a snapshot as a stream):
     * the events then see the catalog as of its end. Never for an unbounded catalog, whose end
     * never comes.
     */
    public static class CatalogFirst extends CatalogJoin implements InputSelectable,
            BoundedMultiInput {
        private static final long serialVersionUID = 1L;
        private transient boolean catalogEnded;

        public CatalogFirst(String fileRecords, long maxEventBytes) {
            super(fileRecords, maxEventBytes);
        }

        @Override
        public InputSelection nextSelection() {
            return catalogEnded ? InputSelection.ALL : InputSelection.SECOND;
        }

        @Override
        public void endInput(int inputId) {
            if (inputId == 2) {
                catalogEnded = true;
            }
        }
    }
}
