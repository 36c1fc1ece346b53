package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple4;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Splits the customer function's single output, on the JVM, into the streams the job writes.
 *
 * <p>Input: {@code Tuple4(kind, shard, key, payload)} ({@code udfs.core.contract}, whose
 * {@code Kind} must match the constants here: tests/unit/test_contract.py). Kind {@link #STORE}
 * leaves on the main output as {@code Row(shard, Tuple2(shard, payload))}, the shape PyFlink's
 * keyed operators expect, for the ClickHouse writer; the other kinds leave on side outputs as
 * {@code Row(key, payload)} for the Kafka sinks.
 *
 * <p>Why not Python side outputs: in thread mode each one is a separate call from Python into
 * the JVM, far dearer than a main-output element, and a Python side output that feeds another
 * Python operator can deadlock under backpressure (docs/DESIGN.md#side-outputs). Chained to the
 * customer function, this costs no network hop.
 */
public class OutputRouter extends ProcessFunction<Tuple4<Integer, Integer, String, String>, Row> {
    private static final long serialVersionUID = 1L;

    public static final int STORE = 0;
    public static final int REQUEST = 1;
    public static final int DLQ = 2;
    public static final int OUTCOME = 3;

    private static final TypeInformation<Row> KEYED_JSON = Types.ROW(Types.STRING, Types.STRING);
    private static final OutputTag<Row> REQUESTS = new OutputTag<>("email_requests", KEYED_JSON);
    private static final OutputTag<Row> DLQ_RECORDS = new OutputTag<>("dlq", KEYED_JSON);
    private static final OutputTag<Row> OUTCOMES = new OutputTag<>("outcomes", KEYED_JSON);
    private static final DateTimeFormatter ISO_MS =
            DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    /** The side output of {@code kind} (REQUEST, DLQ or OUTCOME). */
    public static OutputTag<Row> tag(int kind) {
        switch (kind) {
            case REQUEST:
                return REQUESTS;
            case DLQ:
                return DLQ_RECORDS;
            case OUTCOME:
                return OUTCOMES;
            default:
                throw new IllegalArgumentException("no side output for kind " + kind);
        }
    }

    /**
     * Never fails on an element's content: an element of an unknown kind (or with a null kind
     * or shard) becomes a DLQ record with reason {@code processing_error}, so a bug in what
     * the Python function emits cannot restart the job.
     */
    @Override
    public void processElement(Tuple4<Integer, Integer, String, String> in, Context ctx,
                               Collector<Row> out) {
        Integer kind = in.f0;
        if (kind != null && kind == STORE && in.f1 != null) {
            out.collect(Row.of(in.f1, Tuple2.of(in.f1, in.f3)));
        } else if (kind != null && (kind == REQUEST || kind == DLQ || kind == OUTCOME)) {
            ctx.output(tag(kind), Row.of(in.f2, in.f3));
        } else {
            ctx.output(DLQ_RECORDS, Row.of(in.f2, malformed(in, System.currentTimeMillis())));
        }
    }

    /**
     * The DLQ record for an element this router cannot route: JSON built by hand, with the
     * fields of every DLQ record ({@code udfs.core.validation.dlq_record}), the payload in full.
     */
    public static String malformed(Tuple4<Integer, Integer, String, String> in, long seenAt) {
        String payload = in.f3 == null ? "" : in.f3;
        return "{\"payload\":" + quote(payload)
                + ",\"payload_truncated\":false"
                + ",\"payload_bytes\":" + payload.getBytes(StandardCharsets.UTF_8).length
                + ",\"reason\":\"processing_error\""
                + ",\"path\":\"$\""
                + ",\"message\":\"output element of unknown kind " + in.f0 + " (OutputRouter)\""
                + ",\"event_id\":null"
                + ",\"customer_id\":" + quote(in.f2)
                + ",\"seen_at\":" + seenAt
                + ",\"seen_at_iso\":\"" + ISO_MS.format(Instant.ofEpochMilli(seenAt)) + "\""
                + "}";
    }

    /** A JSON string literal (or null), ASCII only: every non-ASCII char escaped. */
    static String quote(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
