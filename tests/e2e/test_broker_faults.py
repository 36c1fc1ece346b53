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

The broker is killed once the first reminders are out, while the producer is still sending:
the producer (idempotent, retrying) holds its records until the broker is back. A broker
outage is an infrastructure failure, so the job may restart (Flink's shipped restart
strategy), but it must recover by itself. Asserted: every input record is in the events topic
exactly once; the email requests, deduplicated by ``request_id``, are exactly the expected
set (duplicates from at-least-once replay after a restart are allowed, counted and printed);
the outcomes, deduplicated, are exactly the expected ones (every customer's cart and purchase
was processed, nothing is late); the DLQ holds the scripted records and nothing else.
Measured and printed: outputs before the outage, recovery time (broker back -> first output
record the job produced after it), the job's restart count, duplicates.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from bench.run import partition_keys
from job.broker import TansuBroker, free_port
from job.config import load_config
from job.kafka_io import consume, create_topics, produce
from tests.conftest import (
    MINUTE,
    SECOND,
    T0,
    cart_add,
    identify,
    page_view,
    purchase,
    raw,
)
from tests.e2e.conftest import JobFailed, OutputReader, OutRecord
from udfs.journey import request_id

pytestmark = pytest.mark.slow

CAMPAIGN = "abandoned_cart"
CUSTOMERS = 48
ARRIVAL_GAP = 30 * SECOND
ABANDON_AFTER, STEP_2_AFTER = 10 * MINUTE, 30 * MINUTE
CLOCK_TICK = 15 * SECOND
STREAM_END = T0 + 60 * MINUTE      # the clock's last tick: every step 2 is due before
PRODUCE_RATE = 80                  # records/s: the stream takes ~8 s to produce
HALT_AFTER_REQUESTS = 3            # kill the broker once this many reminders are out
DOWNTIME_S = 5
WAIT_FOR_JOB_S = 120
QUIET_S = 8
PARTITIONS = 2
# reconnect quickly once the broker is back (kafka-python's default backoff grows to 30 s)
CLIENT_BACKOFF = {"reconnect_backoff_ms": 50, "reconnect_backoff_max_ms": 500}


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
        add(identify(cid, arrive, email=f"{cid}@example.com", first_name="Kim",
                     event_id=f"{cid}-identify"))
        add(cart_add(cid, carted, f"p{i}", 10.0 + i, 1, cart, event_id=f"{cid}-cart"))
        kind = i % 3
        if kind == 0:    # buys before step 1 is due
            add(purchase(cid, carted + 5 * MINUTE, cart, order_id=f"o-{i}",
                         event_id=f"{cid}-buy"))
            expected_outcomes.add(("cancelled", cid, "purchased", 1))
        elif kind == 1:  # never buys: both steps
            expected_ids |= {request_id(CAMPAIGN, cid, cart, carted, s) for s in (1, 2)}
            expected_outcomes |= {("abandoned", cid, None, None), ("sent", cid, None, 1),
                                  ("sent", cid, None, 2), ("completed", cid, None, None)}
        else:            # buys between the steps: step 1, then recovered
            add(purchase(cid, carted + 15 * MINUTE, cart, order_id=f"o-{i}",
                         event_id=f"{cid}-buy"))
            expected_ids.add(request_id(CAMPAIGN, cid, cart, carted, 1))
            expected_outcomes |= {("abandoned", cid, None, None), ("sent", cid, None, 1),
                                  ("cancelled", cid, "purchased", 2),
                                  ("recovered", cid, None, 1)}
    clocks = partition_keys(PARTITIONS, prefix="bf-clock-")
    for tick, ts in enumerate(range(T0, STREAM_END + 1, CLOCK_TICK)):
        for key in clocks:
            add(page_view(key, ts, event_id=f"{key}-{tick}"))
    timed.sort(key=lambda r: r[0])  # stable: same-time records keep their order
    # the scripted DLQ records: two early, two late (after the outage)
    bad = [
        (None, b"not json at all (early)"),
        (_customer(1), json.dumps({"event_id": "bad-early", "event_type": "teleport",
                                   "customer_id": _customer(1), "timestamp": T0}).encode()),
        (None, b"not json at all (late)"),
        (_customer(2), json.dumps({"event_id": "bad-late", "event_type": "teleport",
                                   "customer_id": _customer(2),
                                   "timestamp": T0}).encode()),
    ]
    for position, (key, payload) in zip((0, 1, len(timed) - 40, len(timed) - 20), bad):
        timed.insert(position, (timed[position][0], key, payload))
    return timed, expected_ids, expected_outcomes


SCRIPTED_DLQ = {b"not json at all (early)", b"not json at all (late)"}  # + bad-early, bad-late


# --------------------------------------------------------------------------- job and reader


class _FastReconnectReader(OutputReader):
    """:class:`OutputReader` whose consumer reconnects within 0.5 s after a broker outage."""

    def __init__(self, bootstrap: str, topics: list[str], timeout_s: float = 30) -> None:
        self.records: list[OutRecord] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100,
            client_id="inboxflow-broker-fault-reader", **CLIENT_BACKOFF)
        deadline = time.monotonic() + timeout_s
        assigned = []
        for topic in topics:
            while not (partitions := self._consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic!r} has no partitions in the metadata")
                time.sleep(0.2)
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)


class _Job:
    """The submitted job: liveness that tolerates restarts, and its restart count."""

    def __init__(self, client, rest_port: int) -> None:
        self.client, self.rest_port = client, rest_port
        self.statuses: Counter[str] = Counter()

    def alive(self) -> None:
        """Raises :class:`JobFailed` once the job has ended; RESTARTING is allowed here
        (a broker outage is an infrastructure failure), it must come back by itself."""
        status = self.client.get_job_status().result()
        self.statuses[status.name] += 1
        if status.is_globally_terminal_state():
            error = None
            try:
                self.client.get_job_execution_result().result()
            except Exception as exc:  # noqa: BLE001 - reported below
                error = exc
            raise JobFailed(f"job is {status.name}: {error}")

    def restarts(self, timeout_s: float = 30) -> int:
        """Flink's ``numRestarts`` job metric, through the mini-cluster's REST API (the REST
        endpoint fetches metrics asynchronously: the first answers can be empty)."""
        job_id = str(self.client.get_job_id())
        url = f"http://127.0.0.1:{self.rest_port}/jobs/{job_id}/metrics?get=numRestarts"
        deadline = time.monotonic() + timeout_s
        while True:
            with urllib.request.urlopen(url, timeout=10) as response:
                metrics = json.loads(response.read())
            for metric in metrics:
                if metric["id"] == "numRestarts":
                    return int(metric["value"])
            if time.monotonic() > deadline:
                raise AssertionError(f"no numRestarts metric at {url} in {timeout_s} s")
            time.sleep(0.5)


@contextmanager
def _running_job_keeping_restarts(cfg, checkpoint_dir: Path,
                                  parallelism: int = 2) -> Iterator[_Job]:
    """The real Kafka job (unbounded, no profile store) in a local mini-cluster, with the
    shipped restart strategy and a REST port of its own; cancelled on exit.

    TODO(shared fixture): replace with ``tests.e2e.conftest.running_job`` once it keeps the
    shipped restart strategy (no ``restart-strategy.type: none``) and yields an object with
    ``restarts()``; this is a local copy of what that change provides.
    """
    from job.main import build_kafka_job, create_env, flink_settings

    rest_port = free_port()
    settings = flink_settings(overrides={
        "parallelism.default": str(parallelism),
        # checkpoints make the AT_LEAST_ONCE Kafka sinks flush regularly, and give a
        # restart a recent place to resume from
        "execution.checkpointing.interval": "2s",
        "execution.checkpointing.dir": checkpoint_dir.as_uri(),
        "rest.bind-address": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-port": str(rest_port),
        "rest.port": str(rest_port),
    })
    env = create_env(settings)
    build_kafka_job(env, cfg, None, store=False)
    client = env.execute_async("inboxflow-broker-faults")
    try:
        yield _Job(client, rest_port)
    finally:
        with suppress(Exception):  # the job already ended (e.g. it failed)
            client.cancel().result()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.get_job_status().result().is_globally_terminal_state():
                    break
            except Exception:  # noqa: BLE001 - the mini-cluster already shut down
                break
            time.sleep(0.2)


class _Producer(threading.Thread):
    """Produces the records at a fixed pace through one idempotent producer that retries
    across the outage; ``sent`` counts records handed to the producer so far."""

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
            self.deliveries = produce(self.bootstrap, self.topic, self._paced(),
                                      rate=PRODUCE_RATE, **CLIENT_BACKOFF)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def s3_broker() -> Iterator[TansuBroker]:
    with TansuBroker(storage="s3") as b:
        yield b


def _requests(reader: OutputReader, topic: str) -> list[str]:
    return [r.value["request_id"] for r in reader.of(topic)]


def test_job_recovers_by_itself_from_a_broker_restart_without_losing_anything(
        s3_broker: TansuBroker, tmp_path: Path) -> None:
    broker = s3_broker
    run = uuid.uuid4().hex[:8]
    topics = {t: f"bf-{run}.{t}" for t in ("events", "dlq", "email_requests", "outcomes")}
    create_topics(broker.bootstrap, {topics["events"]: PARTITIONS, topics["dlq"]: 1,
                                     topics["email_requests"]: PARTITIONS,
                                     topics["outcomes"]: PARTITIONS})
    cfg = load_config(env={}, overrides={
        "kafka": {"bootstrap_servers": broker.bootstrap, "starting_offsets": "earliest",
                  "group_id": f"bf-{run}", "topics": topics},
        "watermarks": {"out_of_orderness": "1m", "idleness": "0s"},
        "journey": {"abandon_after": "10m",
                    "steps": [{"after": "30m", "template": "abandoned_cart_2"}]},
        "clickhouse": {"enabled": False},
    })
    timed, expected_ids, expected_outcomes = scenario()
    records = [(key, payload) for _, key, payload in timed]
    reader = _FastReconnectReader(broker.bootstrap, [topics["email_requests"], topics["dlq"],
                                                     topics["outcomes"]])
    report: dict[str, object] = {"input_records": len(records),
                                 "expected_requests": len(expected_ids)}
    try:
        with _running_job_keeping_restarts(cfg, tmp_path / "checkpoints") as job:
            # warm-up: the first scripted DLQ record comes out once the job reads
            produce(broker.bootstrap, topics["events"], [(records[0][0], records[0][1], None)])
            reader.wait_for(lambda r: len(r.of(topics["dlq"])) >= 1, "the first DLQ record",
                            WAIT_FOR_JOB_S, job.alive)
            producer = _Producer(broker.bootstrap, topics["events"], records[1:])
            producer.start()
            reader.wait_for(lambda r: len(r.of(topics["email_requests"]))
                            >= HALT_AFTER_REQUESTS, "the first reminders", WAIT_FOR_JOB_S,
                            job.alive)

            # the outage: SIGKILL, a few seconds down, started again on the same port
            report["before_outage"] = {
                "input_records_sent": producer.sent + 1,
                "requests": len(reader.of(topics["email_requests"])),
                "outcomes": len(reader.of(topics["outcomes"])),
                "dlq": len(reader.of(topics["dlq"]))}
            broker.halt(kill=True)
            time.sleep(DOWNTIME_S)
            sent_during_outage = producer.sent + 1 - report["before_outage"]["input_records_sent"]
            back_wall_ms = time.time_ns() // 1_000_000
            broker.start()  # same port, same S3 server: the data acknowledged before
            back_ms = time.time_ns() // 1_000_000
            report["broker_start_s"] = round((back_ms - back_wall_ms) / 1000, 2)
            report["records_queued_during_outage"] = sent_during_outage

            # recovery: the first output record the job produced after the broker was back
            # (the sinks stamp records with their wall clock)
            def new_outputs(r: OutputReader) -> list[OutRecord]:
                return [x for x in r.records if x.timestamp_ms >= back_ms]

            reader.wait_for(lambda r: bool(new_outputs(r)), "an output after the restart",
                            WAIT_FOR_JOB_S, job.alive)
            first = min(x.timestamp_ms for x in new_outputs(reader))
            report["recovery_s"] = round((first - back_wall_ms) / 1000, 2)

            producer.join(timeout=WAIT_FOR_JOB_S)
            assert not producer.is_alive(), "the producer did not finish"
            assert producer.error is None, f"producing failed: {producer.error!r}"
            reader.wait_for(lambda r: set(_requests(r, topics["email_requests"]))
                            >= expected_ids, "every expected reminder", WAIT_FOR_JOB_S,
                            job.alive)
            reader.drain(QUIET_S, job.alive)
            job.alive()
            report["restarts"] = job.restarts()
            report["statuses_seen"] = dict(job.statuses)
    finally:
        reader.close()

    got_ids = Counter(_requests(reader, topics["email_requests"]))
    outcomes = [(r.value["kind"], r.key, r.value.get("reason"), r.value.get("step"))
                for r in reader.of(topics["outcomes"])]
    dlq = Counter(r.value["payload"] for r in reader.of(topics["dlq"]))
    report["after"] = {
        "requests": sum(got_ids.values()), "distinct_requests": len(got_ids),
        "duplicate_requests": sum(got_ids.values()) - len(got_ids),
        "outcomes": len(outcomes), "distinct_outcomes": len(set(outcomes)),
        "dlq": sum(dlq.values()), "distinct_dlq": len(dlq)}
    print("\nbroker fault report:", json.dumps(report, indent=1))

    # no event lost on the way in: every input record is stored, none twice
    stored = consume(broker.bootstrap, topics["events"], until_count=len(records) + 100,
                     idle_timeout_s=3, max_wait_s=60)
    assert Counter(r.value for r in stored) == Counter(payload for _, payload in records)

    # every expected reminder, nothing else; duplicates only from replay (counted above)
    assert set(got_ids) == expected_ids
    for r in reader.of(topics["email_requests"]):
        assert r.key == r.value["customer_id"]
    # every customer's cart and purchase was processed, nothing was late or a duplicate
    assert set(outcomes) == expected_outcomes
    # the DLQ holds the scripted records and nothing else
    bad_ids = {r.value.get("event_id") for r in reader.of(topics["dlq"])} - {None}
    assert bad_ids == {"bad-early", "bad-late"}
    assert {p.encode() for p in dlq} == SCRIPTED_DLQ | {
        payload for _, payload in records if b'"teleport"' in payload}
