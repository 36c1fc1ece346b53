package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * The Kafka source's deserializer: each record becomes the keyed envelope of
 * {@link EnvelopeExtractor} ({@code Row(key, Row(key, event_time_ms, raw, kafka_record_ms))})
 * inside the source itself, so the source's WatermarkStrategy (with {@link EventTimeAssigner})
 * can stamp every record with the event's own time and keep one watermark per Kafka
 * partition. A subtask reading several partitions then emits the minimum of their
 * watermarks, and a partition that runs ahead cannot make another's events late.
 *
 * <p>Never drops a record: a tombstone (null value) becomes an empty string, which the
 * validator sends to the dead-letter topic; undecodable bytes become U+FFFD, as with
 * Flink's SimpleStringSchema.
 */
public class EnvelopeDeserializer implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    private final long maxFutureMs;
    private final TypeInformation<Row> producedType;
    private transient JsonFactory factory;

    /**
     * @param maxFutureMs see {@link EnvelopeExtractor#EnvelopeExtractor(long)}
     * @param producedType the envelope's type as PyFlink declares it (KEYED_EVENT)
     */
    public EnvelopeDeserializer(long maxFutureMs, TypeInformation<Row> producedType) {
        this.maxFutureMs = maxFutureMs;
        this.producedType = producedType;
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        if (factory == null) {
            factory = new JsonFactory();
        }
        byte[] value = record.value();
        String raw = value == null ? "" : new String(value, StandardCharsets.UTF_8);
        Row envelope;
        try {
            envelope = EnvelopeExtractor.envelope(factory, raw, record.timestamp(), maxFutureMs);
        } catch (RuntimeException | StackOverflowError e) {
            // defensive (envelope() catches what parsing throws): never fail the source
            envelope = Row.of("", Row.of("", EnvelopeExtractor.NO_TIME, raw, record.timestamp()));
        }
        out.collect(envelope);
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return producedType;
    }
}
