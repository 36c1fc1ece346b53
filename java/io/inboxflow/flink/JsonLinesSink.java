package io.inboxflow.flink;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.types.Row;

/**
 * Appends the JSON of each {@code Row(key, json)} as one line to a local file: the dry run's
 * stand-in for a Kafka sink. Every line is flushed at once, so the file can be followed while the
 * job runs. Run it at parallelism 1 (one writer per file). After a restart the elements since the
 * last checkpoint are appended again (at least once, like the Kafka sinks).
 */
public class JsonLinesSink implements Sink<Row> {
    private static final long serialVersionUID = 1L;

    private final String path;

    public JsonLinesSink(String path) {
        this.path = path;
    }

    @Override
    public SinkWriter<Row> createWriter(WriterInitContext context) throws IOException {
        Path file = Paths.get(path);
        if (file.getParent() != null) {
            Files.createDirectories(file.getParent());
        }
        BufferedWriter out = Files.newBufferedWriter(file, StandardCharsets.UTF_8,
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        return new SinkWriter<Row>() {
            @Override
            public void write(Row element, Context ctx) throws IOException {
                Object value = element.getField(1);
                out.write(value == null ? "null" : value.toString());
                out.write('\n');
                out.flush();
            }

            @Override
            public void flush(boolean endOfInput) throws IOException {
                out.flush();
            }

            @Override
            public void close() throws IOException {
                out.close();
            }
        };
    }
}
