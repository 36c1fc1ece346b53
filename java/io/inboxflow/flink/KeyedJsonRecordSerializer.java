package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.types.Row;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * {@code Row(key, json)} to a Kafka record of {@code topic}: key = the customer id (UTF-8, so
 * Kafka's default partitioner keeps one customer on one partition), value = the JSON.
 *
 * <p>The record timestamp is left to the producer (its wall clock when the job sends it). The
 * stock builder would stamp the element's event time, which for a replay or a late stream
 * lies days in the past: brokers would then apply time-based retention to those records
 * almost at once, and consumers would see Kafka time jump around.
 */
public class KeyedJsonRecordSerializer implements KafkaRecordSerializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    private final String topic;

    public KeyedJsonRecordSerializer(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(Row element, KafkaSinkContext context,
                                                    Long timestamp) {
        Object key = element.getField(0);
        Object value = element.getField(1);
        return new ProducerRecord<>(topic, null, null,
                key == null ? null : key.toString().getBytes(StandardCharsets.UTF_8),
                value == null ? null : value.toString().getBytes(StandardCharsets.UTF_8));
    }
}
