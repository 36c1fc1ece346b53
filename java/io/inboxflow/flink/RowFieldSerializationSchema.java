package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.types.Row;

/**
 * Serializes one string field of a {@link Row} as UTF-8.
 *
 * <p>PyFlink's Kafka sink can only apply a serialization schema to the whole element, so a
 * (key, value) row cannot put the customer id into the record key with the stock schemas.
 * The job emits {@code Row(key, value)} and uses this schema once for field 0 (key) and once
 * for field 1 (value). A null field becomes a null key/value.
 */
public class RowFieldSerializationSchema implements SerializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    private final int field;

    public RowFieldSerializationSchema(int field) {
        this.field = field;
    }

    @Override
    public byte[] serialize(Row row) {
        Object value = row.getField(field);
        return value == null ? null : value.toString().getBytes(StandardCharsets.UTF_8);
    }
}
