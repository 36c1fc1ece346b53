package io.inboxflow.flink;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.OffsetResetStrategy;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Where the Kafka source starts, built with the classes in {@code lib/}.
 *
 * <p>PyFlink's {@code KafkaOffsetsInitializer.committed_offsets} looks up the shaded
 * {@code OffsetResetStrategy} of the SQL fat jar, which the plain connector jar does not have.
 *
 * <p>{@link #forTimestamp} resolves "the first record whose Kafka timestamp is at or after T" per
 * partition on the client, once, before the job is submitted. The broker's ListOffsets answer is
 * used only when the records around it confirm it; otherwise the partition is scanned. Tansu 0.6
 * answers by its own append time rather than the records' timestamps, and answers offset 0 (not
 * "none") for a time after its last record, so an unchecked answer would replay the whole topic.
 */
public final class StartingOffsets {
    private static final Duration POLL = Duration.ofMillis(200);

    private StartingOffsets() {}

    /** {@code earliest}, {@code latest} or {@code committed} (earliest for a new group). */
    public static OffsetsInitializer named(String name) {
        switch (name) {
            case "earliest":
                return OffsetsInitializer.earliest();
            case "latest":
                return OffsetsInitializer.latest();
            case "committed":
                return OffsetsInitializer.committedOffsets(OffsetResetStrategy.EARLIEST);
            default:
                throw new IllegalArgumentException("unknown starting offsets: " + name);
        }
    }

    /**
     * Partition -> the offset of the first record of {@code topic} whose timestamp is at or after
     * {@code timestampMs} (the end of the partition when there is none). The end of a scanned
     * partition is where nothing new arrives for {@code quietMs}: the broker's end offsets are not
     * trusted either. {@code properties} are the consumer settings (bootstrap, security); no group
     * is used and nothing is committed.
     */
    public static Map<Integer, Long> forTimestamp(
            String topic, long timestampMs, Map<String, String> properties, long quietMs) {
        Properties props = new Properties();
        props.putAll(properties);
        props.remove(ConsumerConfig.GROUP_ID_CONFIG);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
                ByteArrayDeserializer.class.getName());
        Map<Integer, Long> result = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo info : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                partitions.add(new TopicPartition(topic, info.partition()));
            }
            if (partitions.isEmpty()) {
                throw new IllegalStateException("topic " + topic + " has no partitions");
            }
            Map<TopicPartition, Long> query = new HashMap<>();
            partitions.forEach(tp -> query.put(tp, timestampMs));
            Map<TopicPartition, OffsetAndTimestamp> answers =
                    consumer.offsetsForTimes(query, Duration.ofSeconds(30));
            Map<TopicPartition, Long> beginnings =
                    consumer.beginningOffsets(partitions, Duration.ofSeconds(30));
            for (TopicPartition tp : partitions) {
                OffsetAndTimestamp answer = answers.get(tp);
                long begin = beginnings.getOrDefault(tp, 0L);
                Long offset = answer == null ? null : answer.offset();
                if (offset == null || !confirmed(consumer, tp, offset, begin, timestampMs, quietMs)) {
                    offset = scan(consumer, tp, begin, timestampMs, quietMs);
                }
                result.put(tp.partition(), offset);
            }
        }
        return result;
    }

    /** The record at {@code offset} is at or after T and the one before it (if any) is not. */
    private static boolean confirmed(KafkaConsumer<byte[], byte[]> consumer, TopicPartition tp,
                                     long offset, long begin, long timestampMs, long quietMs) {
        if (offset < begin) {
            return false;
        }
        ConsumerRecord<byte[], byte[]> at = recordAt(consumer, tp, offset, quietMs);
        if (at == null || at.offset() != offset || at.timestamp() < timestampMs) {
            return false;
        }
        if (offset == begin) {
            return true;
        }
        ConsumerRecord<byte[], byte[]> before = recordAt(consumer, tp, offset - 1, quietMs);
        return before != null && before.offset() == offset - 1 && before.timestamp() < timestampMs;
    }

    private static ConsumerRecord<byte[], byte[]> recordAt(
            KafkaConsumer<byte[], byte[]> consumer, TopicPartition tp, long offset, long quietMs) {
        consumer.assign(Collections.singletonList(tp));
        consumer.seek(tp, offset);
        long deadline = System.currentTimeMillis() + quietMs;
        while (System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<byte[], byte[]> record : consumer.poll(POLL).records(tp)) {
                return record;
            }
        }
        return null;
    }

    private static long scan(KafkaConsumer<byte[], byte[]> consumer, TopicPartition tp, long begin,
                             long timestampMs, long quietMs) {
        consumer.assign(Collections.singletonList(tp));
        consumer.seek(tp, begin);
        long next = begin;
        long lastNew = System.currentTimeMillis();
        while (System.currentTimeMillis() - lastNew < quietMs) {
            for (ConsumerRecord<byte[], byte[]> record : consumer.poll(POLL).records(tp)) {
                if (record.timestamp() >= timestampMs) {
                    return record.offset();
                }
                next = record.offset() + 1;
                lastNew = System.currentTimeMillis();
            }
        }
        return next;
    }
}
