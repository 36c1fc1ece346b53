"""Broker faults: the real job on the real Kafka wire protocol (Tansu with S3 storage, so the
broker keeps its data across a restart), unbounded, parallelism 2, while the broker is
SIGKILLed in the middle of the stream and started again on the same port a few seconds later.

Scripted stream (event time from T0, produced in event-time order at a fixed pace, so each
partition is in order; out-of-orderness 1 min, idleness off, abandon_after 10 min, step 2 at
30 min): 48 customers arrive 30 s apart, identify and add a cart; a third buy before step 1
(cancelled), a third never buy (steps 1 and 2, completed), a third buy between the steps
(step 1, then cancelled and recovered). A page view on each partition every 15 s of event
time is the clock that moves the watermark to T0+60 min, past every step's due time. Four
malformed records are the scripted DLQ records, two before and two after the outage.

The broker is killed once the first reminders are out, while the producer is still sending
and the job is writing: the producer holds its records and retries until the broker is back.
A broker outage is an infrastructure failure, so the job may restart (Flink's shipped restart
strategy), but it must recover by itself. Asserted: every input record is in the events
topic (a retried batch may be there twice: counted); the email requests, deduplicated by
``request_id``, are exactly the expected set (duplicates from at-least-once delivery are
allowed, counted and printed); the outcomes, deduplicated, are exactly the expected ones
(every customer's cart and purchase was processed, nothing is late) apart from ``duplicate``
outcomes for input records stored twice; the DLQ holds the scripted records and nothing else.
Measured and printed: outputs before the outage, recovery time (broker back -> first output
record the job produced after it), the job's restart count, duplicates.

**Producers are not idempotent here** (the test's producer and, through
``kafka.sink_properties``, the job's sinks): Tansu 0.6 records an idempotent producer's
sequence number before it stores the batch, so a batch in flight when the broker stops
(SIGKILL, or SIGTERM: Tansu aborts its requests after 5 s) is answered
DUPLICATE_SEQUENCE_NUMBER on the retry, which Kafka clients count as delivered: those records
are lost without an error, the shipped idempotent sinks' email requests included
(docs/DESIGN.md#tansu). Without idempotence the retry appends them
again: at-least-once, which the job's event-id dedup and the request-id dedup absorb.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.run import partition_keys
from job.config import load_config
from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics, produce
from tests.e2e.conftest import OutputReader, OutRecord, earliest_overrides, running_job
from tests.factories import (
    CAMPAIGN,
    MINUTE,
    SECOND,
    T0,
    cart_add,
    cart_only,
    identify,
    page_view,
    purchase,
    raw,
    teleport,
)
from udfs.clock import wall_ms
from udfs.core.journey import request_id

pytestmark = pytest.mark.slow

CUSTOMERS = 48
ARRIVAL_GAP = 30 * SECOND
ABANDON_AFTER, STEP_2_AFTER = 10 * MINUTE, 30 * MINUTE
CLOCK_TICK = 15 * SECOND
STREAM_END = T0 + 60 * MINUTE  # the clock's last tick: every step 2 is due before
PRODUCE_RATE = 80  # records/s: the stream takes ~8 s to produce
HALT_AFTER_REQUESTS = 3  # kill the broker once this many reminders are out
DOWNTIME_S = 5
WAIT_FOR_JOB_S = 120
# after the restart Tansu reads every batch back from S3 (moto), which is slow: the records
# the job had not read before the outage may take minutes on a loaded machine
WAIT_AFTER_RESTART_S = 300
QUIET_S = 8
PARTITIONS = 2
# reconnect quickly once the broker is back (kafka-python's default backoff grows to 30 s)
CLIENT_BACKOFF = {"reconnect_backoff_ms": 50, "reconnect_backoff_max_ms": 500}
# not idempotent (see the module docstring); one request in flight keeps retried batches in
# order, so a retry cannot put an event behind a later one (it would be late)
INPUT_PRODUCER = {
    **CLIENT_BACKOFF,
    "enable_idempotence": False,
    "max_in_flight_requests_per_connection": 1,
}
JOB_SINK_PROPERTIES = {"enable.idempotence": "false"}


# --------------------------------------------------------------------------- the scenario


def _customer(i: int) -> str:
    return f"bf-{i:03d}"


def scenario() -> tuple[list[tuple[int, str | None, bytes]], set[str], set[tuple]]:
    """(event time, key, payload) of every input record in production order, the expected
    request ids and the expected outcomes (kind, customer, reason, step)."""
    timed: list[tuple[int, str | None, bytes]] = []
    expected_ids: set[str] = set()
    expected_outcomes: set[tuple] = set()

    def add(event: dict) -> None:
        timed.append((event["timestamp"], event["customer_id"], raw(event).encode()))

    for i in range(CUSTOMERS):
        cid, cart = _customer(i), f"cart-{i}"
        arrive = T0 + i * ARRIVAL_GAP
        carted = arrive + SECOND
        add(
            identify(
                cid,
                arrive,
                email=f"{cid}@example.com",
                first_name="Kim",
                event_id=f"{cid}-identify",
            )
        )
        add(cart_add(cid, carted, f"p{i}", 10.0 + i, 1, cart, event_id=f"{cid}-cart"))
        kind = i % 3
        if kind == 0:  # buys before step 1 is due
            add(purchase(cid, carted + 5 * MINUTE, cart, order_id=f"o-{i}", event_id=f"{cid}-buy"))
            expected_outcomes.add(("cancelled", cid, "purchased", 1))
        elif kind == 1:  # never buys: both steps
            expected_ids |= {request_id(CAMPAIGN, cid, cart, carted, s) for s in (1, 2)}
            expected_outcomes |= {
                ("abandoned", cid, None, None),
                ("sent", cid, None, 1),
                ("sent", cid, None, 2),
                ("completed", cid, None, None),
            }
        else:  # buys between the steps: step 1, then recovered
            add(purchase(cid, carted + 15 * MINUTE, cart, order_id=f"o-{i}", event_id=f"{cid}-buy"))
            expected_ids.add(request_id(CAMPAIGN, cid, cart, carted, 1))
            expected_outcomes |= {
                ("abandoned", cid, None, None),
                ("sent", cid, None, 1),
                ("cancelled", cid, "purchased", 2),
                ("recovered", cid, None, 1),
            }
    clocks = partition_keys(PARTITIONS, prefix="bf-clock-")
    for tick, ts in enumerate(range(T0, STREAM_END + 1, CLOCK_TICK)):
        for key in clocks:
            add(page_view(key, ts, event_id=f"{key}-{tick}"))
    timed.sort(key=lambda r: r[0])  # stable: same-time records keep their order
    # the scripted DLQ records: two early, two late (after the outage)
    bad = [
        (None, b"not json at all (early)"),
        (_customer(1), teleport(_customer(1), "bad-early").encode()),
        (None, b"not json at all (late)"),
        (_customer(2), teleport(_customer(2), "bad-late").encode()),
    ]
    for position, (key, payload) in zip((0, 1, len(timed) - 40, len(timed) - 20), bad, strict=True):
        timed.insert(position, (timed[position][0], key, payload))
    return timed, expected_ids, expected_outcomes


SCRIPTED_DLQ = {b"not json at all (early)", b"not json at all (late)"}  # + bad-early, bad-late


# --------------------------------------------------------------------------- job and reader


class _Producer(threading.Thread):
    """Produces the records at a fixed pace through one producer that retries across the
    outage; ``sent`` counts records handed to the producer so far."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[str | None, bytes]]):
        super().__init__(name="broker-fault-producer", daemon=True)
        self.bootstrap, self.topic, self.records = bootstrap, topic, records
        self.sent = 0
        self.deliveries: list[tuple[int, int]] | None = None
        self.error: BaseException | None = None

    def _paced(self) -> Iterator[tuple[str | None, bytes, None]]:
        for key, value in self.records:
            yield key, value, None
            self.sent += 1

    def run(self) -> None:
        try:
            self.deliveries = produce(
                self.bootstrap, self.topic, self._paced(), rate=PRODUCE_RATE, **INPUT_PRODUCER
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def s3_broker() -> Iterator[TansuBroker]:
    with TansuBroker(storage="s3") as b:
        yield b


@dataclass
class FaultRun:
    """What one run of the scenario left: the input, the outputs read, the measurements."""

    topics: dict[str, str]
    records: list[tuple[str | None, bytes]]
    outputs: list[OutRecord]
    report: dict[str, Any] = field(default_factory=dict)

    def of(self, topic: str) -> list[OutRecord]:
        return [r for r in self.outputs if r.topic == self.topics[topic]]


def run_broker_fault(broker: TansuBroker, checkpoint_dir: Path) -> FaultRun:
    """Runs the scenario: job up, stream paced, broker SIGKILLed once the first reminders
    are out, down for ``DOWNTIME_S``, started again on the same port, rest of the stream,
    outputs drained. Raises only when the job died or the stream could not be produced;
    missing outputs are left to the caller's assertions."""
    run = uuid.uuid4().hex[:8]
    topics = {t: f"bf-{run}.{t}" for t in ("events", "dlq", "email_requests", "outcomes")}
    create_topics(
        broker.bootstrap,
        {
            topics["events"]: PARTITIONS,
            topics["dlq"]: 1,
            topics["email_requests"]: PARTITIONS,
            topics["outcomes"]: PARTITIONS,
        },
    )
    sections = earliest_overrides(
        broker,
        f"bf-{run}",
        {"topics": topics, "sink_properties": JOB_SINK_PROPERTIES},
        watermarks={"out_of_orderness": "1m", "idleness": "0s"},
        **cart_only("10m", [{"after": "30m", "template": "abandoned_cart_2"}]),
    )
    cfg = load_config(env={}, overrides=sections)
    timed, expected_ids, _ = scenario()
    out = FaultRun(topics, [(key, payload) for _, key, payload in timed], [])
    records, report = out.records, out.report
    requests_topic = topics["email_requests"]
    # reconnects within 0.5 s of the broker's return
    reader = OutputReader(
        broker.bootstrap, [requests_topic, topics["dlq"], topics["outcomes"]], **CLIENT_BACKOFF
    )
    try:
        # a broker outage is an infrastructure failure: a restart is allowed, and counted
        with running_job(cfg, checkpoint_dir, allow_restarts=True) as job:
            # warm-up: the first scripted DLQ record comes out once the job reads
            produce(
                broker.bootstrap,
                topics["events"],
                [(records[0][0], records[0][1], None)],
                **INPUT_PRODUCER,
            )
            report["job_ready_s"] = round(
                reader.wait_for(
                    lambda r: len(r.of(topics["dlq"])) >= 1,
                    "the first DLQ record",
                    WAIT_FOR_JOB_S,
                    job,
                ),
                1,
            )
            producer = _Producer(broker.bootstrap, topics["events"], records[1:])
            producer.start()
            reader.wait_for(
                lambda r: len(r.of(requests_topic)) >= HALT_AFTER_REQUESTS,
                "the first reminders",
                WAIT_FOR_JOB_S,
                job,
            )

            # the outage: SIGKILL, a few seconds down, started again on the same port
            report["before_outage"] = {
                "input_records_sent": producer.sent + 1,
                "requests": len(reader.of(requests_topic)),
                "outcomes": len(reader.of(topics["outcomes"])),
                "dlq": len(reader.of(topics["dlq"])),
            }
            broker.halt(kill=True)
            time.sleep(DOWNTIME_S)
            report["records_sent_during_outage"] = (
                producer.sent + 1 - report["before_outage"]["input_records_sent"]
            )
            back_ms = wall_ms()
            broker.start()  # same port, same S3 server: the data acknowledged before
            report["broker_start_s"] = round((wall_ms() - back_ms) / 1000, 2)

            # recovery: the first output record the job produced after the broker was back
            # (the sinks stamp each record with their wall clock)
            def new_outputs(r: OutputReader) -> list[OutRecord]:
                return [x for x in r.records if x.timestamp_ms >= back_ms]

            reader.wait_for(
                lambda r: bool(new_outputs(r)), "an output after the restart", WAIT_FOR_JOB_S, job
            )
            report["recovery_s"] = round(
                (min(x.timestamp_ms for x in new_outputs(reader)) - back_ms) / 1000, 2
            )

            producer.join(timeout=WAIT_FOR_JOB_S)
            if producer.is_alive() or producer.error is not None:
                raise AssertionError(f"producing failed: {producer.error!r}")
            report["input_records_sent"] = producer.sent + 1
            with suppress(AssertionError):  # the assertions below name what is missing
                reader.wait_for(
                    lambda r: {x.value["request_id"] for x in r.of(requests_topic)} >= expected_ids,
                    "every expected reminder",
                    WAIT_AFTER_RESTART_S,
                    job,
                )
            reader.drain(QUIET_S, job)
            job()
            # restarts = failures in the exception history (available at once, where the
            # numRestarts metric lags by the REST server's metric fetch interval)
            failures = job.failures()
            report["restarts"] = len(failures)
            report["failures"] = [f"{f.exception}: {f.summary}" for f in failures]
    finally:
        out.outputs = list(reader.records)
        reader.close()
    return out


def test_job_recovers_by_itself_from_a_broker_restart_without_losing_anything(
    s3_broker: TansuBroker, tmp_path: Path
) -> None:
    broker = s3_broker
    _, expected_ids, expected_outcomes = scenario()
    run = run_broker_fault(broker, tmp_path / "checkpoints")
    # the whole events topic (Tansu reads each stored batch from S3: slow, hence the wait)
    stored = Counter(
        r.value
        for r in consume(broker.bootstrap, run.topics["events"], idle_timeout_s=10, max_wait_s=120)
    )
    stored_twice = {
        json.loads(v).get("event_id") for v, n in stored.items() if n > 1 and v.startswith(b"{")
    }
    got_ids = Counter(r.value["request_id"] for r in run.of("email_requests"))
    outcomes = [
        (r.value["kind"], r.key, r.value.get("reason"), r.value.get("step"))
        for r in run.of("outcomes")
        if r.value["kind"] != "duplicate"
    ]
    duplicates = [r.value["event_id"] for r in run.of("outcomes") if r.value["kind"] == "duplicate"]
    dlq = Counter(r.value["payload"] for r in run.of("dlq"))
    run.report["after"] = {
        "input_records_stored": sum(stored.values()),
        "input_records_stored_twice": sum(n - 1 for n in stored.values()),
        "requests": sum(got_ids.values()),
        "distinct_requests": len(got_ids),
        "duplicate_requests": sum(got_ids.values()) - len(got_ids),
        "outcomes": len(outcomes),
        "distinct_outcomes": len(set(outcomes)),
        "duplicate_event_outcomes": len(duplicates),
        "dlq": sum(dlq.values()),
        "distinct_dlq": len(dlq),
    }
    print("\nbroker fault report:", json.dumps(run.report, indent=1))

    # no event lost on the way in: every input record is stored (a retried batch may be
    # stored twice, at-least-once)
    assert set(stored) == {payload for _, payload in run.records}

    # every expected reminder, nothing else; duplicates only from at-least-once delivery
    assert sorted(expected_ids - set(got_ids)) == [], "reminders missing"
    assert sorted(set(got_ids) - expected_ids) == [], "reminders not expected"
    assert all(r.key == r.value["customer_id"] for r in run.of("email_requests"))
    # every customer's cart and purchase was processed, nothing was late; the job's
    # event-id dedup reported exactly the input records that were stored twice
    assert sorted(expected_outcomes - set(outcomes), key=str) == [], "outcomes missing"
    assert sorted(set(outcomes) - expected_outcomes, key=str) == [], "outcomes not expected"
    assert set(duplicates) <= stored_twice
    # the DLQ holds the scripted records and nothing else
    assert {r.value.get("event_id") for r in run.of("dlq")} == {None, "bad-early", "bad-late"}
    assert {p.encode() for p in dlq} == SCRIPTED_DLQ | {
        payload for _, payload in run.records if b'"teleport"' in payload
    }
