package io.inboxflow.flink;

import java.util.HashMap;
import java.util.Map;

import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.kafka.common.TopicPartition;

/**
 * Builds an explicit-offsets initializer from {@code "partition:offset,..."}.
 *
 * <p>py4j turns small Python ints into {@code Integer}, but the connector casts the map's
 * values to {@code Long}; PyFlink's own helper also expects the shaded kafka-clients of the SQL
 * fat jar. Parsing a string here sidesteps both.
 */
public final class StoppingOffsets {
    private StoppingOffsets() {}

    public static OffsetsInitializer of(String topic, String spec) {
        Map<TopicPartition, Long> offsets = new HashMap<>();
        for (String part : spec.split(",")) {
            String[] kv = part.trim().split(":");
            offsets.put(new TopicPartition(topic, Integer.parseInt(kv[0])), Long.parseLong(kv[1]));
        }
        return OffsetsInitializer.offsets(offsets);
    }
}
