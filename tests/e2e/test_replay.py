"""Replays: ``inboxflow run --from-timestamp T`` (where reading starts, by Kafka record time) and
``--dry-run`` (outputs to JSONL files; nothing to Kafka or ClickHouse; the production group's
offsets untouched), on this module's own broker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from job.config import DEFAULT_CONFIG, _merge, load_config
from job.dev.broker import TansuBroker
from job.dev.kafka_io import create_topics, produce
from job.replay import DRY_RUN_FILES, parse_timestamp
from tests.e2e.cli_run import CliRun, committed_offsets
from tests.e2e.conftest import OutputReader
from tests.factories import (
    CAMPAIGN,
    DAY,
    HOUR,
    MINUTE,
    T0,
    cart_add,
    cart_only,
    identify,
    job_yaml,
    kafka_record,
    page_view,
)
from udfs.core.journey import request_id

A, B, C = "cust-a", "cust-b", "cust-c"  # partitions 1, 1, 0 (murmur2 % 2)
EXPECTED_PARTITION = {A: 1, B: 1, C: 0, "shopper-1": 0, "shopper-0": 1}
WAIT_S = 150
QUIET_S = 6
# Kafka record times: three days after the events' own times, one hour apart between the part
# of the history the replay skips and the part it reads
KAFKA_OLD = T0 + 3 * DAY
REPLAY_FROM = KAFKA_OLD + HOUR


def test_from_timestamp_takes_epoch_ms_or_rfc3339_with_an_offset() -> None:
    assert parse_timestamp("1767600000000") == T0
    assert parse_timestamp("2026-01-05T08:00:00Z") == T0
    assert parse_timestamp("2026-01-05T09:00:00.250+01:00") == T0 + 250
    for bad in ("2026-01-05T08:00:00", "2026-01-05", "yesterday", "", "-5"):
        with pytest.raises(ValueError, match="--from-timestamp"):
            parse_timestamp(bad)


@pytest.mark.slow
def test_start_offsets_by_record_time_are_exact_where_the_broker_answers_by_append_time(
    broker: TansuBroker,
) -> None:
    """The premise: Tansu answers ListOffsets by timestamp with its append time and with
    offset 0 for a time after its last record. The resolved offsets are still exact."""
    from job.main import create_env, flink_settings
    from job.replay import start_offsets_for_timestamp

    topic = "replay-lookup.events"
    create_topics(broker.bootstrap, {topic: 1})
    produce(broker.bootstrap, topic, [("k", b"{}", KAFKA_OLD + i * 1000) for i in range(4)])
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        answers = {
            ts: consumer.offsets_for_times({tp: ts})[tp]
            for ts in (KAFKA_OLD + 1500, KAFKA_OLD + 9000)
        }
    finally:
        consumer.close()
    assert [a.offset if a else None for a in answers.values()] == [0, 0]  # Kafka: 2, None

    create_env(flink_settings())  # the gateway
    cfg = load_config(
        env={},
        overrides={"kafka": {"bootstrap_servers": broker.bootstrap, "topics": {"events": topic}}},
    )
    found = {
        ts - KAFKA_OLD: start_offsets_for_timestamp(cfg, ts)
        for ts in (KAFKA_OLD - 1, KAFKA_OLD, KAFKA_OLD + 1500, KAFKA_OLD + 2000, KAFKA_OLD + 9000)
    }
    assert found == {-1: {0: 0}, 0: {0: 0}, 1500: {0: 2}, 2000: {0: 2}, 9000: {0: 4}}


# skipped by the replay (Kafka time before REPLAY_FROM); read, they would remind A and C
OLD = [
    identify(A, T0, email="ann@example.com", first_name="Ann"),
    cart_add(A, T0, cart_id="cart-a"),
    identify(C, T0, email="cy@example.com", first_name="Cy"),
    cart_add(C, T0, cart_id="cart-c"),
]
NEW = [
    identify(B, T0 + 2 * HOUR, email="bob@example.com", first_name="Bob"),
    cart_add(B, T0 + 2 * HOUR, cart_id="cart-b"),
    page_view("shopper-1", T0 + 6 * HOUR),
    page_view("shopper-0", T0 + 6 * HOUR),
]
HISTORY = (
    [kafka_record(e, KAFKA_OLD + i) for i, e in enumerate(OLD)]
    + [(C, b"not json, old", KAFKA_OLD + 10)]
    + [(C, b"not json, new", REPLAY_FROM)]
    + [kafka_record(e, REPLAY_FROM + 1 + i) for i, e in enumerate(NEW)]
)


def _changed_timing_config(path: Path) -> Path:
    """The shipped conf/job.yaml, the cart campaign alone (:func:`cart_only`) with step 1
    after 30 min (shipped: 1 h) and step 2 after 3 h (shipped: 24 h); its campaigns file
    next to it."""
    data = _merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), cart_only("30m", [{"after": "3h"}]))
    path.write_text(yaml.safe_dump(job_yaml(data, path.parent), sort_keys=False))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_dry_run_replays_from_a_record_time_with_a_changed_journey_and_mails_nobody(
    broker: TansuBroker, tmp_path: Path
) -> None:
    topics = load_config(env={}).kafka.topics
    create_topics(
        broker.bootstrap,
        {topics.events: 2, topics.dlq: 1, topics.email_requests: 1, topics.outcomes: 1},
    )
    deliveries = produce(broker.bootstrap, topics.events, HISTORY)
    for (key, _, _), (partition, _) in zip(HISTORY, deliveries, strict=True):  # the premise
        assert partition == EXPECTED_PARTITION[key], key
    # the production group is somewhere in the history; the dry run must leave it there
    production = {0: 1, 1: 2}
    committer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id="inboxflow",
        enable_auto_commit=False,
        session_timeout_ms=6000,
    )
    try:
        committer.assign([TopicPartition(topics.events, p) for p in production])
        committer.commit(
            {
                TopicPartition(topics.events, p): OffsetAndMetadata(o, "", -1)
                for p, o in production.items()
            }
        )
    finally:
        committer.close(autocommit=False)
    assert committed_offsets(broker.bootstrap, "inboxflow", topics.events) == production

    config = _changed_timing_config(tmp_path / "job.yaml")
    out = tmp_path / "out"
    since = datetime.fromtimestamp(REPLAY_FROM / 1000, UTC).isoformat()
    requests_file = out / DRY_RUN_FILES["requests"]
    with CliRun(
        broker,
        tmp_path / "work",
        "--config",
        str(config),
        "--from-timestamp",
        since,
        "--dry-run",
        "--output",
        str(out),
    ) as run:
        deadline = time.monotonic() + WAIT_S
        while len(_lines(requests_file)) < 2:
            run()
            assert time.monotonic() < deadline, f"no dry-run requests yet:\n{run.log_tail()}"
            time.sleep(0.5)
        time.sleep(QUIET_S)  # anything else (A's or C's reminders) would arrive meanwhile
        run()
        # a checkpoint completes meanwhile (every 10 s): it must not commit
        time.sleep(max(0.0, 12 - QUIET_S))
        run()
    log = run.log_path.read_text()
    assert "partition 0 offset 3, partition 1 offset 2" in log, run.log_tail()

    requests = _lines(requests_file)
    assert sorted(
        (r["customer_id"], r["to"], r["step"], r["request_id"], r["metadata"]["due_at_ms"])
        for r in requests
    ) == [
        (
            B,
            "bob@example.com",
            1,
            request_id(CAMPAIGN, B, "cart-b", T0 + 2 * HOUR, 1),
            T0 + 2 * HOUR + 30 * MINUTE,
        ),
        (
            B,
            "bob@example.com",
            2,
            request_id(CAMPAIGN, B, "cart-b", T0 + 2 * HOUR, 2),
            T0 + 5 * HOUR,
        ),
    ]
    assert sorted(
        (o["kind"], o["customer_id"], o.get("step"))
        for o in _lines(out / DRY_RUN_FILES["outcomes"])
    ) == [("abandoned", B, None), ("completed", B, None), ("sent", B, 1), ("sent", B, 2)]
    assert [(d["reason"], d["payload"]) for d in _lines(out / DRY_RUN_FILES["dlq"])] == [
        ("not_json", "not json, new")
    ]

    # nothing reached Kafka's output topics or ClickHouse; the production group did not move
    # and the dry run's own group committed nothing
    reader = OutputReader(broker.bootstrap, [topics.email_requests, topics.outcomes, topics.dlq])
    try:
        reader.drain(2)
    finally:
        reader.close()
    assert reader.records == []
    assert not (tmp_path / "work" / "var" / "clickhouse").exists()
    assert committed_offsets(broker.bootstrap, "inboxflow", topics.events) == production
    assert committed_offsets(broker.bootstrap, "inboxflow.dry-run", topics.events) == {}
