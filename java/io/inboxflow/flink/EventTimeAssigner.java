package io.inboxflow.flink;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.java.tuple.Tuple;
import org.apache.flink.types.Row;

/**
 * Reads the event time that {@link EnvelopeExtractor} / {@link EnvelopeDeserializer} put into
 * the envelope, on the JVM side.
 *
 * <p>Elements are {@code Row(customer_id, Tuple(customer_id, event_time_ms, json, kafka_ms))}
 * (the shape PyFlink's own key_by produces). PyFlink's Python TimestampAssigner costs an extra
 * Python operator per event, and its {@code with_idleness()} silently drops the assigner, which
 * turns event time into Kafka's record time (docs/DESIGN.md#event-time). The Kafka record
 * timestamp passed in here is deliberately ignored.
 */
public class EventTimeAssigner implements SerializableTimestampAssigner<Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public long extractTimestamp(Row element, long recordTimestamp) {
        Object value = element.getField(1);
        Object ts = value instanceof Row ? ((Row) value).getField(1) : ((Tuple) value).getField(1);
        return (Long) ts;
    }
}
