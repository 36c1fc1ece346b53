package io.inboxflow.flink;

import java.time.OffsetDateTime;
import java.util.Locale;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Reads just enough of a raw event, on the JVM, to key it and to give it its event time:
 * top-level {@code customer_id} (trimmed) and {@code timestamp} (epoch ms or RFC 3339 with
 * offset). Emits {@code Row(key, Row(key, event_time_ms, raw, kafka_record_ms))}, the shape
 * PyFlink's keyed operators expect.
 *
 * <p>It validates nothing and never fails: anything it cannot read gets key "" and event time
 * {@code Long.MIN_VALUE}, and the Python validator in the keyed function sends it to the DLQ
 * with the precise reason. A key holding an unpaired UTF-16 surrogate (JSON can spell one as
 * an escape, {@code "\ud800"}) is unreadable too: handing such a string to the Python
 * interpreter fails the task (pemja cannot convert it), and the validator rejects the event
 * as {@code unpaired_surrogate}. For the same reason unpaired surrogates in the raw text (only
 * possible from non-Kafka sources: Kafka bytes are decoded with U+FFFD replacement) are
 * replaced with U+FFFD. Doing this in Java saves a whole Python operator per event (in
 * thread mode all Python operators of a TaskManager share one interpreter lock).
 *
 * <p>The Kafka source builds the same envelope in {@link EnvelopeDeserializer}, with the Kafka
 * append time (carried only to measure freshness, never used as event time); this operator
 * serves sources of raw strings (bounded test inputs), whose stream timestamp it carries.
 */
public class EnvelopeExtractor extends ProcessFunction<String, Row> {
    private static final long serialVersionUID = 1L;
    public static final long NO_TIME = Long.MIN_VALUE;

    private final long maxFutureMs;
    private transient JsonFactory factory;

    /**
     * @param maxFutureMs an event stamped further than this ahead of the wall clock gets no
     *     event time here (the validator rejects it), so it cannot drag the watermark forward
     *     and make every later event late or fire timers early.
     */
    public EnvelopeExtractor(long maxFutureMs) {
        this.maxFutureMs = maxFutureMs;
    }

    @Override
    public void processElement(String raw, Context ctx, Collector<Row> out) {
        if (factory == null) {
            factory = new JsonFactory();
        }
        Long kafkaTime = ctx.timestamp();
        out.collect(envelope(factory, raw, kafkaTime == null ? -1L : kafkaTime, maxFutureMs));
    }

    /** {@code Row(key, Row(key, event_time_ms, raw, kafka_record_ms))} for one raw event. */
    static Row envelope(JsonFactory factory, String raw, long kafkaTime, long maxFutureMs) {
        String text = raw == null ? "" : withoutUnpairedSurrogates(raw);
        if (text.startsWith("\uFEFF")) {
            // A byte order mark: dropped. Jackson refuses it (the key would be lost), and the
            // hand-over to the Python interpreter drops a leading U+FEFF anyway.
            text = text.substring(1);
        }
        String key = "";
        long eventTime = NO_TIME;
        try (JsonParser parser = factory.createParser(text)) {
            if (parser.nextToken() == JsonToken.START_OBJECT) {
                while (parser.nextToken() == JsonToken.FIELD_NAME) {
                    String name = parser.getCurrentName();
                    JsonToken token = parser.nextToken();
                    if ("customer_id".equals(name)) {
                        key = token == JsonToken.VALUE_STRING ? parser.getText().strip() : "";
                    } else if ("timestamp".equals(name)) {
                        eventTime = parseTime(parser, token);
                    }
                    // an object or array value (of any field, these two included) is skipped
                    // whole: its members are not top-level fields
                    parser.skipChildren();
                }
            }
        } catch (Exception | StackOverflowError e) {
            // not JSON or truncated: keep what was read; the validator names the reason
        }
        if (hasUnpairedSurrogate(key)) {
            key = "";
        }
        if (eventTime != NO_TIME && eventTime > System.currentTimeMillis() + maxFutureMs) {
            eventTime = NO_TIME;
        }
        return Row.of(key, Row.of(key, eventTime, text, kafkaTime));
    }

    /** True when {@code s} holds a surrogate that is not part of a high-low pair. */
    static boolean hasUnpairedSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length()
                    && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return true;
            }
        }
        return false;
    }

    /** {@code s} with every unpaired surrogate replaced by U+FFFD ({@code s} itself if none). */
    static String withoutUnpairedSurrogates(String s) {
        if (!hasUnpairedSurrogate(s)) {
            return s;
        }
        StringBuilder out = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length()
                    && Character.isLowSurrogate(s.charAt(i + 1))) {
                out.append(c).append(s.charAt(++i));
            } else {
                out.append(Character.isSurrogate(c) ? '\uFFFD' : c);
            }
        }
        return out.toString();
    }

    static long parseTime(JsonParser parser, JsonToken token) {
        try {
            if (token == JsonToken.VALUE_NUMBER_INT) {
                return parser.getLongValue();
            }
            if (token == JsonToken.VALUE_STRING) {
                // RFC 3339 allows "t" and "z" in lower case, as the Python validator does
                return OffsetDateTime.parse(parser.getText().toUpperCase(Locale.ROOT))
                        .toInstant().toEpochMilli();
            }
        } catch (Exception e) {
            // unparseable: no event time; the validator rejects the event
        }
        return NO_TIME;
    }
}
