"""Thin kafka-python helpers for tests, the demo and the benchmark (not used by the Flink job).

Checked against Tansu 0.6 (``job.dev.broker``) with kafka-python 3.0.12:

* API version auto-detection works (it settles on (3, 9)); no ``api_version`` pin is needed.
* ListOffsets LATEST / ``KafkaConsumer.end_offsets`` is wrong on Tansu (it answered 1 for
  partitions holding 5-7 records), so nothing here uses it: bounded reads stop on a record
  count or on idleness, and explicit end offsets come from the producer's delivery reports
  (``end_offsets_from_deliveries``).
* Consumer groups work but JoinGroup waits half the session timeout, so ``consume`` assigns
  partitions manually and never joins a group or commits offsets.
* Creating a topic that exists answers TopicAlreadyExistsError (error 36), treated as success.
* Record timestamps given to the producer come back unchanged as CreateTime (type 0).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from udfs.clock import wall_ms

# (key, value, Kafka record timestamp in epoch ms or None = producer's clock)
ProduceRecord = tuple[str | None, bytes, int | None]


@dataclass(frozen=True)
class ConsumedRecord:
    """One record read back from Kafka; ``received_at_ms`` is the wall clock when it was polled."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int
    received_at_ms: int


def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """Create each topic (name -> partitions, replication 1) unless it exists.

    An existing topic with a different partition count is an error: tests that rely on a
    partition count must not silently run against another one.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inboxflow-admin")
    try:
        for name, partitions in topics.items():
            try:
                admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=10_000)
            except TopicAlreadyExistsError:
                pass
        described = {t["name"]: t for t in admin.describe_topics(list(topics))}
    finally:
        admin.close()
    for name, partitions in topics.items():
        found = len(described.get(name, {}).get("partitions") or [])
        if found != partitions:
            raise RuntimeError(
                f"topic {name!r} on {bootstrap} has {found} partitions, expected {partitions}"
            )


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[ProduceRecord],
    *,
    linger_ms: int = 5,
    rate: float | None = None,
    **config: Any,
) -> list[tuple[int, int]]:
    """Send ``records`` in order and flush; return (partition, offset) per record, in input order.

    Keys are UTF-8 encoded and choose the partition with Kafka's default murmur2
    partitioner (the same as the Java client). ``rate`` paces sending to that many
    records per second; the next record is pulled from ``records`` only when it is due,
    so a lazy generator that stamps wall-clock time stamps the real send time.
    Extra keyword arguments are passed to ``KafkaProducer``.
    """
    config.setdefault("batch_size", 262_144)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, client_id="inboxflow-producer", **config
    )
    futures = []
    try:
        iterator = iter(records)
        started = time.monotonic()
        index = 0
        while True:
            if rate:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                key, value, timestamp_ms = next(iterator)
            except StopIteration:
                break
            futures.append(
                producer.send(
                    topic,
                    value=value,
                    key=key.encode("utf-8") if key is not None else None,
                    timestamp_ms=timestamp_ms,
                )
            )
            index += 1
        producer.flush()
        deliveries = []
        for number, future in enumerate(futures):
            metadata = future.get(timeout=30)  # raises the delivery error, if any
            if metadata is None:
                raise RuntimeError(f"record #{number} to {topic!r} has no delivery report")
            deliveries.append((metadata.partition, metadata.offset))
        return deliveries
    finally:
        producer.close(timeout=10)


def end_offsets_from_deliveries(deliveries: Iterable[tuple[int, int]]) -> dict[int, int]:
    """partition -> last delivered offset + 1 (the exclusive stopping offset of a bounded read).

    Used instead of the broker's "latest" offsets, which Tansu reports wrongly. Partitions
    that received nothing are absent.
    """
    ends: dict[int, int] = {}
    for partition, offset in deliveries:
        if offset + 1 > ends.get(partition, 0):
            ends[partition] = offset + 1
    return ends


def consume(
    bootstrap: str,
    topic: str,
    *,
    until_count: int | None = None,
    idle_timeout_s: float = 5.0,
    max_wait_s: float = 120,
    **config: Any,
) -> list[ConsumedRecord]:
    """Read ``topic`` from the beginning of every partition, without a consumer group.

    Stops at the first of: ``until_count`` records read (never returns more), nothing new
    for ``idle_timeout_s`` (counted from the start while nothing has arrived yet), or
    ``max_wait_s`` in total. Records are in poll order: ordered within a partition, not
    across partitions. Extra keyword arguments are passed to ``KafkaConsumer``.
    """
    config.setdefault("fetch_max_wait_ms", 100)
    config.setdefault("max_partition_fetch_bytes", 10 * 1024 * 1024)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="inboxflow-reader",
        **config,
    )
    out: list[ConsumedRecord] = []
    try:
        started = time.monotonic()
        deadline = started + max_wait_s
        partitions = _wait_for_partitions(consumer, topic, deadline)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        last_new = started
        while until_count is None or len(out) < until_count:
            now = time.monotonic()
            if now >= deadline or now - last_new >= idle_timeout_s:
                break
            batches = consumer.poll(timeout_ms=200)
            received_at_ms = wall_ms()
            for records in batches.values():
                for r in records:
                    out.append(
                        ConsumedRecord(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key.decode("utf-8") if r.key is not None else None,
                            value=r.value if r.value is not None else b"",
                            timestamp_ms=r.timestamp,
                            received_at_ms=received_at_ms,
                        )
                    )
                    last_new = time.monotonic()
        return out if until_count is None else out[:until_count]
    finally:
        consumer.close(autocommit=False)


def _wait_for_partitions(consumer: KafkaConsumer, topic: str, deadline: float) -> set[int]:
    """Partition ids of ``topic``, waiting (until ``deadline``) for the topic to appear."""
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic!r} has no partitions in the metadata")
        time.sleep(0.2)
