"""The JVM's view of a Kafka record, computed by the job's own Java code through PyFlink's
gateway (``io.inboxflow.flink.EnvelopeDeserializer``): the key and the text the Python
customer function receives. Tests use it to predict exactly what the job sees, rather than
a Python model of Java's UTF-8 decoding and JSON reading. Needs the gateway with the
project's jars (``job.main.create_env`` has run)."""

from __future__ import annotations


class JvmEnvelope:
    def __init__(self, max_future_ms: int) -> None:
        from pyflink.java_gateway import get_gateway

        from udfs.flink.customer_function import KEYED_EVENT

        self._jvm = get_gateway().jvm
        self._deserializer = self._jvm.io.inboxflow.flink.EnvelopeDeserializer(
            max_future_ms, KEYED_EVENT.get_java_type_info()
        )

    def envelope(self, value: bytes | None, kafka_ms: int = 0) -> tuple[str, int, str]:
        """(key, event time ms, text) of one Kafka value (None: a tombstone)."""
        jvm = self._jvm
        found = jvm.java.util.ArrayList()
        record = jvm.org.apache.kafka.clients.consumer.ConsumerRecord(
            "events",
            0,
            0,
            kafka_ms,
            jvm.org.apache.kafka.common.record.TimestampType.CREATE_TIME,
            0,
            0,
            None,
            None if value is None else bytearray(value),
            jvm.org.apache.kafka.common.header.internals.RecordHeaders(),
            jvm.java.util.Optional.empty(),
        )
        self._deserializer.deserialize(
            record, jvm.org.apache.flink.api.common.functions.util.ListCollector(found)
        )
        row = found.get(0)
        inner = row.getField(1)
        return row.getField(0), inner.getField(1), inner.getField(2)

    def view(self, value: bytes | None) -> tuple[str, str]:
        """(key, text) as the customer function receives them."""
        key, _, text = self.envelope(value)
        return key, text
