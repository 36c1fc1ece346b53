"""``make bench``: throughput, reminder lateness and profile freshness of the real Kafka job.

Measurements (each run ``--runs`` times, median reported):

0. pure (first; no broker, no JVM): the job's per-event Python path over the throughput
   events, µs per event of each stage and of ``CustomerCore`` as is (:mod:`bench.pure`,
   ``--pure-events``);
1. throughput with the store off, parallelism 1 and 2: a bounded read of N pre-produced
   events (explicit stopping offsets from the delivery reports, docs/DESIGN.md#tansu); the
   wall time of ``job.main.run`` minus the median wall time of a 200-event run at the same
   settings (JVM start, job submission and teardown) gives the adjusted events/s;
   passthrough (first in every round): the same bounded reads through a Java-only job, the
   job's own Kafka source straight into its own Kafka sink at parallelism 1, measured the
   same way; its output topic is counted back. Every job row is also given as a ratio of
   the passthrough's events/s (runs of one round paired), p2 rows also against p1;
2. the same with the ClickHouse writer on (fresh embedded chdb path per run), plus rows/s
   into ClickHouse;
3. reminder lateness: unbounded source, live events at a fixed rate stamped with the wall
   clock, abandon_after 5 s, out-of-orderness 2 s; lateness = time the request was read
   from ``email.requests`` minus its due time;
4. profile freshness: as 3 with the store on; the writer logs, per profile row, ms from the
   event's append to Kafka until its insert committed;
5. burst: as 3 (store off), scripted "units" (one new customer each, outcome known in
   advance) at ``--rate``, then ``--burst-events`` sent at once through librdkafka (several
   times the job's capacity: Kafka holds the backlog while the source reads what the job
   can take), then ``--rate`` again: events produced vs accounted for (every event is in a
   predicted output: a reminder, a cancellation or the DLQ), the backlog (send -> output
   delay of each cancellation), restarts, and the seconds after the burst until reminder
   lateness is back to normal (p95 of a 2 s sliding window of reminders at most the
   out-of-orderness bound + 1 s, for good); at the end the events topic is read back, so
   that a unit without its output is known to have been lost upstream of the job (its
   records are not in the topic) or by the job or its sinks (they are);
6. send rate: ``SEND_RATE_BURST`` synthetic email requests at once through the job's
   send-rate limiter (``guards.send_rate`` = ``SEND_RATE``, parallelism
   ``SEND_RATE_PARALLELISM``) on the mini-cluster (the bench's broker is not used): each
   request is stamped with the wall clock as it arrives and as it leaves the limiter; the
   most requests in any second (overall and once all had arrived), and the drain time and
   rate against the configured rate;
7. collector (``--only collector``, :mod:`bench.collector`): ``inboxflow collect`` in a
   process of its own against the bench's broker, ``--collector-connections`` keep-alive
   connections posting single events, then batches of 100, back to back for
   ``--collector-seconds`` after a 2 s warm-up: requests/s, events/s, p50/p99 latency, every
   answer 202 and the topic holding exactly the events answered 202; and a "produce floor"
   (the same events straight through one librdkafka producer with the collector's settings)
   that the collector's events/s are quoted against, run i against run i.

Every run is a child process (``--child``) in its own process group: chdb hosts one path
per process (docs/DESIGN.md#chdb-lock) and a fresh JVM per run keeps runs independent; the group is
killed when a run ends, fails or times out, and the broker is stopped on any exit, so
nothing the bench started survives it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from udfs.clock import wall_ms

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
LOG_DIR = RESULTS_DIR / "logs"

SEED = 42
CUSTOMERS = 5000
TINY_EVENTS = 200
PARTITIONS = 2
LIVE_PARALLELISM = 2
OUT_OF_ORDERNESS = "2s"
ABANDON_AFTER = "5s"
# "lateness after a lull": a reminder due this long into silence on every partition, no clock
LULL_DUE_AFTER = "30s"
LULL_SILENCE_S = 45  # longer than the shipped idleness (30 s) + the due time
CLOCK_INTERVAL_S = 0.25
FRESHNESS_TARGET_P95_MS = 1000  # issue 13 (issue 3 asked for 2 s)
STORE_TARGET_RATIO = 0.8  # issue 3: writer on within 20% of the spine's events/s
NOISY_LOGGERS = ("kafka", "py4j", "apache_beam")
# kafka-python also warns at WARNING about its own event loop while producing in bulk
KAFKA_LOG_LEVEL = logging.ERROR
# "pure": the job's per-event Python path without Flink or Kafka, µs per stage (bench/pure.py);
# first, as it takes about a minute and needs no broker. "passthrough": a Java-only Kafka ->
# Kafka job over the throughput events, the floor the job's events/s are compared with.
MEASUREMENTS = (
    "pure",
    "passthrough",
    "throughput",
    "store",
    "lateness",
    "freshness",
    "burst",
    "send_rate",
    "cluster",
    "collector",
)
PASSTHROUGH_PARALLELISM = 1
# issue 13: the job's adjusted events/s as a share of the passthrough's (writer off p1 and on
# p1), and parallelism 2 no slower than parallelism 1
PASSTHROUGH_TARGETS = {"throughput-p1": 0.5, "store-p1": 0.4}
P2_OVER_P1_TARGET = 1.0
# the "cluster" rows: the packaged job on a standalone cluster, store off, in these shapes
# (TaskManagers, slots each), measured alternately in each run
CLUSTER_SHAPES = ((2, 1), (1, 2))
BURST_EVENTS, BURST_EVENTS_QUICK = 50_000, 10_000
# steady --rate before and after the burst (after: the backlog drains, lateness recovers)
# (the first reminders arrive abandon_after + out-of-orderness after the start)
BURST_STEADY_S, BURST_STEADY_S_QUICK = (20, 40), (12, 25)
LATENESS_WINDOW_MS = 2000
NORMAL_LATENESS_SLACK_MS = 1000  # "normal": sliding p95 <= out-of-orderness bound + 1 s
BURST_DRAIN_TIMEOUT_S = 120  # after the clock: every unit's output must have arrived by then
# "send rate": a burst through the limiter, far above its rate (about 5 s of draining)
SEND_RATE, SEND_RATE_BURST, SEND_RATE_PARALLELISM = 100, 600, 2

log = logging.getLogger("inboxflow.bench")


@dataclass(frozen=True)
class Plan:
    """What one bench invocation runs; ``quick`` shrinks every size for a smoke test."""

    events: int
    runs: int
    rate: int
    live_seconds: int
    clock_seconds: int
    measurements: tuple[str, ...]
    quick: bool
    burst_events: int = BURST_EVENTS
    # the burst run's steady phases and clock through an idempotent producer (kafka-python's
    # default) or one without idempotence (acks all, retries may store duplicates)
    idempotence: bool = True
    # the collector row (bench/collector.py): measured seconds per run and connections;
    # None: that module's defaults (10 s, 3 s with quick; 16 connections)
    collector_seconds: float | None = None
    collector_connections: int | None = None


# --------------------------------------------------------------------------- pure helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def adjusted_rate(count: float, seconds: float | None, fixed: float | None) -> float | None:
    """count / (seconds - fixed): the rate once the fixed start-up cost is taken out."""
    if seconds is None or fixed is None or seconds - fixed <= 0:
        return None
    return count / (seconds - fixed)


def most_in_window(stamps: Sequence[int], window_ms: int = 1000) -> int:
    """The most of ``stamps`` (ms) in any window ``[t, t + window_ms)``, t one of them."""
    ordered = sorted(stamps)
    j, most = 0, 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + window_ms:
            j += 1
        most = max(most, j - i)
    return most


def send_rate_bucket(rate: int, parallelism: int) -> float:
    """What the limiter's subtasks pass at once together: each holds one second of its share
    ``rate / parallelism``, at least 1 (io.inboxflow.flink.SendRateLimiter)."""
    return parallelism * max(1.0, rate / parallelism)


def partition_keys(partitions: int, prefix: str = "bench-clock-") -> list[str]:
    """One customer id per partition, chosen so Kafka's default (murmur2) partitioner puts
    key i on partition i: the clock must advance the watermark of every source split, or an
    idle split holds it back for ``watermarks.idleness``."""
    from kafka.partitioner.default import murmur2

    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"{prefix}{n}"
        keys.setdefault((murmur2(key.encode()) & 0x7FFFFFFF) % partitions, key)
        n += 1
    return [keys[p] for p in range(partitions)]


def quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(KAFKA_LOG_LEVEL)


def recovered_after(
    samples: Sequence[tuple[int, float]],
    since_ms: int,
    bound_ms: float,
    window_ms: int = LATENESS_WINDOW_MS,
    q: float = 95,
    min_count: int = 5,
) -> float | None:
    """Seconds from ``since_ms`` until the lateness is back to normal for good.

    ``samples`` are (received_ms, lateness_ms) of reminders. At each reminder received at
    t >= ``since_ms`` a window holds the reminders received in (t - window_ms, t]; its
    ``q``-percentile is judged once it holds ``min_count`` of them. The result is measured to
    the end of the first window that is within ``bound_ms`` after the last one that was not
    (0.0 when none was above); None when the last judged window is still above the bound or
    no window after ``since_ms`` could be judged (the run ended before it recovered)."""
    ordered = sorted(samples)
    received = [r for r, _ in ordered]
    start = 0
    last_bad: int | None = None
    judged: list[tuple[int, bool]] = []  # (window end, within bound)
    for i, (t, _) in enumerate(ordered):
        while received[start] <= t - window_ms:
            start += 1
        if t < since_ms or i + 1 - start < min_count:
            continue
        ok = percentile([lat for _, lat in ordered[start : i + 1]], q) <= bound_ms
        judged.append((t, ok))
        if not ok:
            last_bad = len(judged) - 1
    if not judged or not judged[-1][1]:
        return None
    if last_bad is None:
        return 0.0
    return max(0.0, (judged[last_bad + 1][0] - since_ms) / 1000)


BURST_PREFIX = "bu-"
UNIT_EVENTS = {"bad": 1, "buy": 2, "abandon": 2}
EVENTS_PER_UNIT = 1.9  # the mean over the cycle of unit_kind (1 bad, 4 buy, 5 abandon)


def unit_kind(j: int) -> str:
    """Burst unit ``j`` is one new customer whose output is known in advance: "bad" (one
    record of an unknown event type: the DLQ), "buy" (cart_add + purchase of that cart: one
    "cancelled" outcome) or "abandon" (identify + cart_add: one reminder, abandon_after
    later). Cycle of 10: 1 bad, 4 buy, 5 abandon."""
    r = j % 10
    return "bad" if r == 0 else "buy" if r <= 4 else "abandon"


def unit_records(j: int, now_ms: int) -> list[tuple[str, bytes]]:
    """(key, value) of unit ``j``'s records, stamped ``now_ms``."""
    cid = f"{BURST_PREFIX}{j}"
    kind = unit_kind(j)
    base = {"customer_id": cid, "timestamp": now_ms}
    if kind == "bad":
        return [
            (
                cid,
                json.dumps(
                    {**base, "event_id": f"{cid}-bad", "event_type": "bench_unknown"}
                ).encode(),
            )
        ]
    cart = {
        **base,
        "event_id": f"{cid}-cart",
        "event_type": "cart_add",
        "properties": {
            "product_id": f"p{j % 50}",
            "price": 19.5,
            "quantity": 1,
            "currency": "EUR",
            "cart_id": f"c{j}",
            "name": "Mug",
            "category": "kitchen",
        },
    }
    if kind == "buy":
        second = {
            **base,
            "event_id": f"{cid}-buy",
            "event_type": "purchase",
            "properties": {
                "order_id": f"o{j}",
                "revenue": 19.5,
                "currency": "EUR",
                "cart_id": f"c{j}",
            },
        }
        return [(cid, json.dumps(cart).encode()), (cid, json.dumps(second).encode())]
    identify = {
        **base,
        "event_id": f"{cid}-id",
        "event_type": "identify",
        "traits": {"email": f"{cid}@example.com", "first_name": "Sam"},
    }
    return [(cid, json.dumps(identify).encode()), (cid, json.dumps(cart).encode())]


def unit_count(events: int) -> int:
    return max(1, round(events / EVENTS_PER_UNIT))


def unit_event_ids(j: int) -> list[str]:
    """The event ids of unit ``j``'s records, in the order ``unit_records`` yields them."""
    cid = f"{BURST_PREFIX}{j}"
    return [
        f"{cid}-{suffix}"
        for suffix in {"bad": ("bad",), "buy": ("cart", "buy"), "abandon": ("id", "cart")}[
            unit_kind(j)
        ]
    ]


def missing_units(
    units: range, requests: Sequence[dict], outcomes: Sequence[dict], dlq: Sequence[dict]
) -> list[str]:
    """Every customer of ``units`` without the output its kind must produce, in unit order."""
    kinds = {f"{BURST_PREFIX}{j}": unit_kind(j) for j in units}
    got = _unit_outputs(kinds, requests, outcomes, dlq)
    return [f"{BURST_PREFIX}{j}" for j in units if f"{BURST_PREFIX}{j}" not in got[unit_kind(j)]]


def _unit_outputs(
    kinds: dict[str, str], requests: Sequence[dict], outcomes: Sequence[dict], dlq: Sequence[dict]
) -> dict[str, set[str]]:
    reminded = {r["customer_id"] for r in requests if r.get("customer_id") in kinds}
    cancelled = {
        o["customer_id"]
        for o in outcomes
        if o.get("customer_id") in kinds
        and o.get("kind") == "cancelled"
        and o.get("reason") == "purchased"
    }
    rejected = {
        d.get("customer_id")
        for d in dlq
        if d.get("customer_id") in kinds and str(d.get("event_id", "")).endswith("-bad")
    }
    return {"abandon": reminded, "buy": cancelled, "bad": rejected}


def account_units(
    units: range, requests: Sequence[dict], outcomes: Sequence[dict], dlq: Sequence[dict]
) -> dict[str, int]:
    """Every event of ``units`` accounted for by the output it must produce: a reminder per
    "abandon" unit (2 events), a purchase cancellation per "buy" unit (2), a DLQ record per
    "bad" unit (1). ``lost`` = events without their output; ``unexpected`` = outputs of unit
    customers that their kind does not explain (e.g. a reminder to a buyer); ``late`` =
    "late" outcomes (an event behind the watermark: its reminder would be wrong);
    ``missing_units``: the first 10 customers without their output."""
    kinds = {f"{BURST_PREFIX}{j}": unit_kind(j) for j in units}
    got = _unit_outputs(kinds, requests, outcomes, dlq)
    events = sum(UNIT_EVENTS[k] for k in kinds.values())
    accounted = sum(UNIT_EVENTS[k] for cid, k in kinds.items() if cid in got[k])
    unexpected = sum(1 for k, cids in got.items() for cid in cids if kinds[cid] != k)
    missing = [cid for cid, k in kinds.items() if cid not in got[k]]  # unit order
    return {
        "units": len(kinds),
        "events": events,
        "accounted": accounted,
        "lost": events - accounted,
        "unexpected": unexpected,
        "late": sum(1 for o in outcomes if o.get("kind") == "late"),
        "missing_units": missing[:10],
    }


def check_topic(
    phases: dict[str, range],
    topic: Sequence[tuple[int, int, str | None]],
    missing: Sequence[str],
    deliveries: dict[str, tuple[int, int]] | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Which input records of the units are in the events topic as read back at the end.

    ``topic``: (partition, offset, event id or None) of every record read back;
    ``missing``: the customers whose output never came; ``deliveries``: event id ->
    (partition, offset) the producer's delivery report gave (the steady phases). The loss
    of a missing unit is upstream of the job (``missing_in_topic``: the producer or the
    broker) when one of its records is not in the topic, in the job (or its sinks) when all
    are. Also: records stored more than once (``duplicates_in_topic``: retries of a
    producer without idempotence; the job drops them by event id) and offsets skipped in a
    partition (``offset_gaps``: offsets reserved for a batch that was never stored)."""
    stored: dict[str, int] = {}
    at: dict[tuple[int, int], str | None] = {}
    offsets: dict[int, list[int]] = {}
    for partition, offset, event_id in topic:
        at[(partition, offset)] = event_id
        offsets.setdefault(partition, []).append(offset)
        if event_id is not None:
            stored[event_id] = stored.get(event_id, 0) + 1
    absent: list[str] = []
    per_phase: dict[str, int] = {}
    duplicates = 0
    for name, units in phases.items():
        per_phase[name] = 0
        for j in units:
            for event_id in unit_event_ids(j):
                count = stored.get(event_id, 0)
                duplicates += max(0, count - 1)
                if count == 0:
                    absent.append(event_id)
                    per_phase[name] += 1
    gaps = {}
    for partition, seen in sorted(offsets.items()):
        ordered = sorted(set(seen))
        skipped = ordered[-1] + 1 - ordered[0] - len(ordered)
        if ordered[0] or skipped:
            gaps[partition] = {"first": ordered[0], "last": ordered[-1], "skipped": skipped}
    absent_set = set(absent)
    missing_inputs = {
        cid: [eid for eid in unit_event_ids(int(cid[len(BURST_PREFIX) :])) if eid in absent_set]
        for cid in missing
    }
    upstream = [cid for cid, ids in missing_inputs.items() if ids]
    in_job = [cid for cid, ids in missing_inputs.items() if not ids]
    detail = {}
    for event_id in absent[:limit]:
        entry: dict[str, Any] = {}
        if deliveries and event_id in deliveries:
            partition, offset = deliveries[event_id]
            entry = {
                "acked_at": [partition, offset],
                "topic_holds_there": at.get((partition, offset), "nothing"),
            }
        detail[event_id] = entry
    return {
        "records_read": len(topic),
        "missing_in_topic": len(absent),
        "missing_in_topic_per_phase": per_phase,
        "duplicates_in_topic": duplicates,
        "offset_gaps": gaps,
        "absent_events": detail,
        "lost_units_inputs_missing": upstream[:limit],
        "lost_units_inputs_in_topic": in_job[:limit],
        "lost_events_inputs_missing": sum(
            UNIT_EVENTS[unit_kind(int(c[len(BURST_PREFIX) :]))] for c in upstream
        ),
        "lost_events_inputs_in_topic": sum(
            UNIT_EVENTS[unit_kind(int(c[len(BURST_PREFIX) :]))] for c in in_job
        ),
    }


# --------------------------------------------------------------------------- child runs


def _topics(suffix: str = "") -> dict[str, str]:
    """The job's topics (config key -> name), each name ending in ``.suffix`` when given."""
    tail = f".{suffix}" if suffix else ""
    return {
        "events": f"events{tail}",
        "dlq": f"events.dlq{tail}",
        "email_requests": f"email.requests{tail}",
        "outcomes": f"inboxflow.outcomes{tail}",
    }


def _create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    """The :func:`_topics` on the broker: one partition for the DLQ and the outcomes,
    ``PARTITIONS`` for the events and the email requests."""
    from job.dev import kafka_io

    kafka_io.create_topics(
        bootstrap,
        {
            topics["events"]: PARTITIONS,
            topics["dlq"]: 1,
            topics["email_requests"]: PARTITIONS,
            topics["outcomes"]: 1,
        },
    )


def _job_config(spec: dict, work: Path, overrides: dict | None = None):
    from job.config import load_config

    store = bool(spec["store"])
    kafka: dict[str, Any] = {
        "bootstrap_servers": spec["bootstrap"],
        "group_id": f"bench-{uuid.uuid4().hex[:12]}",
        "starting_offsets": "earliest",
    }
    if spec.get("topics"):
        kafka["topics"] = spec["topics"]
    base = {
        "kafka": kafka,
        "clickhouse": {
            "enabled": store,
            "dsn": f"chdb://{work / 'clickhouse'}",
            "freshness_log": str(work / "freshness.log") if store else "",
        },
    }
    return load_config(overrides={**base, **(overrides or {})}, env={})


def _settings(parallelism: int, work: Path, checkpoints: bool) -> dict[str, str]:
    from job.main import flink_settings

    settings = flink_settings(
        overrides={
            "parallelism.default": str(parallelism),
            "execution.checkpointing.dir": (work / "checkpoints").as_uri(),
        }
    )
    if not checkpoints:
        settings.pop("execution.checkpointing.interval", None)
    return settings


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _table_counts(dsn: str) -> dict[str, int]:
    from udfs.clickhouse.client import get_client
    from udfs.clickhouse.schema import TABLES

    client = get_client(dsn)
    try:
        return {
            table: int(client.query(f"SELECT count() FROM {table}")[1][0][0]) for table in TABLES
        }
    finally:
        client.close()


def child_throughput(spec: dict) -> dict:
    """One bounded run over the pre-produced topic; the wall time of ``run`` is measured."""
    from job.main import run

    work = Path(spec["work_dir"])
    cfg = _job_config(spec, work)
    settings = _settings(spec["parallelism"], work, checkpoints=False)
    stops = {int(p): int(o) for p, o in spec["stops"].items()}
    started = time.monotonic()
    result = run(cfg, settings, stopping_offsets=stops, job_name="inboxflow-bench")
    out: dict[str, Any] = {
        "seconds": time.monotonic() - started,
        "net_runtime_ms": result.get_net_runtime(),
    }
    if spec["store"]:
        counts = _table_counts(cfg.clickhouse.dsn)
        # count() of customer_profiles shrinks when ReplacingMergeTree parts merge; the
        # writer's freshness log has one line per profile row it committed.
        profile_rows = _count_lines(work / "freshness.log")
        out["table_counts"] = counts
        out["rows_written"] = profile_rows + sum(
            n for table, n in counts.items() if table != "customer_profiles"
        )
    return out


def _operator_classes(env) -> list[str]:
    """The Java operator class of every node of ``env``'s stream graph, in node order."""
    from job.flink_bridge import stream_graph

    graph = stream_graph(env)
    classes = []
    for node in graph.getStreamNodes().toArray():
        factory = node.getOperatorFactory()
        loader = node.getClass().getClassLoader()
        classes.append(factory.getStreamOperatorClass(loader).getName() if factory else "")
    return classes


def _count_records(bootstrap: str, topic: str, expected: int, max_wait_s: float) -> int:
    """Records in ``topic`` read from the beginning of every partition, counted (Tansu's
    "latest" offsets are wrong) through librdkafka (confluent-kafka, dev extras: kafka-python
    takes most of a minute for 200,000 records on this machine). Reads on for 2 s after the
    ``expected``-th record, so that more than expected shows, and stops after 10 s without a
    new record or after ``max_wait_s``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # assigned partitions: the group is never joined, nothing is committed
            "group.id": f"bench-count-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "client.id": "inboxflow-bench-count",
        }
    )
    try:
        deadline = time.monotonic() + max_wait_s
        while not (partitions := consumer.list_topics(topic, timeout=10).topics[topic].partitions):
            if time.monotonic() >= deadline:
                raise RuntimeError(f"topic {topic!r} has no partitions in the metadata")
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        count, last_new = 0, time.monotonic()
        while True:
            now = time.monotonic()
            idle = 2.0 if count >= expected else 10.0
            if now >= deadline or now - last_new >= idle:
                return count
            records = consumer.consume(num_messages=10_000, timeout=0.2)
            errors = [r.error() for r in records if r.error() is not None]
            if errors:
                raise RuntimeError(f"reading {topic!r} back: {errors[0]}")
            if records:
                count, last_new = count + len(records), time.monotonic()
    finally:
        consumer.close()


def child_passthrough(spec: dict) -> dict:
    """The Java-only floor: the job's own Kafka source (``kafka_source``: deserializer, tuned
    client properties, bounded by the same stopping offsets as the throughput runs) straight
    into the job's own Kafka sink (``kafka_sink``), no operator in between, no Python. The
    wall time of building and running the job is measured, as ``run`` is in
    :func:`child_throughput`; then the output topic is read back and must hold exactly the
    ``expected`` records, else the run fails (no rate from a job that dropped records)."""
    from pyflink.common import WatermarkStrategy

    from job.dev import kafka_io
    from job.main import create_env, kafka_sink, kafka_source
    from udfs.flink.customer_function import KEYED_EVENT

    work = Path(spec["work_dir"])
    bootstrap, topic, expected = spec["bootstrap"], spec["output_topic"], int(spec["expected"])
    kafka_io.create_topics(bootstrap, {topic: PARTITIONS})
    cfg = _job_config(spec, work)
    settings = _settings(spec["parallelism"], work, checkpoints=False)
    stops = {int(p): int(o) for p, o in spec["stops"].items()}
    started = time.monotonic()
    env = create_env(settings)
    # the sink writes field 0 of the envelope as the key and field 1 (the event's text with
    # its key and times, as Flink prints a Row) as the value: a few dozen bytes per record
    # more than the event itself
    env.from_source(
        kafka_source(cfg, stops),
        WatermarkStrategy.no_watermarks(),
        "kafka-events",
        type_info=KEYED_EVENT,
    ).sink_to(kafka_sink(cfg, topic)).name("passthrough")
    operators = _operator_classes(env)
    python = [name for name in operators if ".python." in name.lower()]
    if python:
        raise RuntimeError(f"the passthrough must have no Python operator, found {python}")
    result = env.execute("inboxflow-bench-passthrough")
    seconds = time.monotonic() - started
    count_started = time.monotonic()
    written = _count_records(bootstrap, topic, expected, max_wait_s=120 + expected / 1000)
    if written != expected:
        raise RuntimeError(
            f"the passthrough wrote {written:,} records to {topic!r}, expected {expected:,} "
            f"(the records below the stopping offsets): its rate would mean nothing"
        )
    return {
        "seconds": seconds,
        "net_runtime_ms": result.get_net_runtime(),
        "records_written": written,
        "count_seconds": time.monotonic() - count_started,
        "operators": [name.rsplit(".", 1)[-1] for name in operators],
    }


class RequestReader(threading.Thread):
    """Reads a topic from the beginning of every partition and keeps (received_at_ms, value)
    per record until ``stop()``; ``timestamps`` holds each record's Kafka timestamp (the
    job's sinks stamp the wall clock when they produce it), in the same order. ``jumps``:
    (partition, last offset read, next offset read) wherever a partition's offsets were not
    consecutive, i.e. offsets this reader never got (a record it skipped, or an offset the
    broker never filled; a full read of the topic afterwards tells which)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(name="bench-reader", daemon=True)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.records: list[tuple[int, bytes]] = []
        self.timestamps: list[int] = []
        self.jumps: list[tuple[int, int, int]] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
                client_id="inboxflow-bench-reader",
                max_poll_records=10_000,
                max_partition_fetch_bytes=10 * 1024 * 1024,
            )
            assigned = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            last: dict[int, int] = {}
            try:
                while not self._stop_event.is_set():
                    batches = consumer.poll(timeout_ms=100)
                    received = wall_ms()
                    for tp, records in batches.items():
                        for r in records:
                            if r.offset != last.get(tp.partition, -1) + 1:
                                self.jumps.append(
                                    (tp.partition, last.get(tp.partition, -1), r.offset)
                                )
                            last[tp.partition] = r.offset
                        self.timestamps.extend(r.timestamp for r in records)
                        self.records.extend((received, r.value) for r in records)
            finally:
                consumer.close(autocommit=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _envelope(key: str, event_type: str, n: int, now: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"bench-{event_type}-{key}-{n}",
            "event_type": event_type,
            "customer_id": key,
            "timestamp": now,
            "properties": {"path": "/bench-clock"},
        }
    ).encode()


def _send_to_every_partition(
    producer, topic: str, keys: list[str], event_type: str, n: int
) -> None:
    now = wall_ms()
    for key in keys:
        producer.send(topic, key=key.encode(), value=_envelope(key, event_type, n, now))
    producer.flush()


def _wait_running(client, timeout_s: float) -> None:
    from pyflink.common.job_status import JobStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_job_status().result()
        if status == JobStatus.RUNNING:
            return
        if status in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.FINISHED):
            raise RuntimeError(f"job ended before it ran: {status}")
        time.sleep(0.5)
    raise TimeoutError(f"job not RUNNING after {timeout_s} s")


class JobWatch(threading.Thread):
    """Polls the job's status; ``check()`` raises once the job is no longer RUNNING or has
    not answered for ``stall_s`` (a JVM stuck at a safepoint answers nothing, not even
    status calls), so a live run stops as soon as the job is gone, not at its timeout."""

    def __init__(self, client, interval_s: float = 1.0, stall_s: float = 10.0):
        super().__init__(name="bench-job-watch", daemon=True)
        self.client, self.interval_s, self.stall_s = client, interval_s, stall_s
        self.problem: str | None = None
        self.last_answer = time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        from pyflink.common.job_status import JobStatus

        while not self._stop_event.wait(self.interval_s):
            try:
                status = self.client.get_job_status().result()
            except Exception as exc:  # noqa: BLE001 - the JVM is gone
                self.problem = f"job status unavailable: {exc.__class__.__name__}"
                return
            self.last_answer = time.monotonic()
            if status != JobStatus.RUNNING:
                self.problem = f"job is {status}"
                return

    def check(self) -> None:
        silent = time.monotonic() - self.last_answer
        if self.problem is None and silent > self.stall_s:
            self.problem = f"no answer from the JVM for {silent:.0f} s"
        if self.problem:
            raise RuntimeError(f"the job stopped during the measurement ({self.problem})")

    def stop(self) -> None:
        self._stop_event.set()


def _watched(records: Iterator, watch: JobWatch) -> Iterator:
    for record in records:
        watch.check()
        yield record


def _run_clock(producer, topic: str, keys: list[str], seconds: float, watch) -> int:
    """A page view on every partition every CLOCK_INTERVAL_S for ``seconds``; returns how
    many records it sent."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        watch.check()
        n += 1
        _send_to_every_partition(producer, topic, keys, "page_view", n)
        time.sleep(CLOCK_INTERVAL_S)
    return n * len(keys)


def _warm_up(bootstrap: str, producer, topics: dict[str, str], keys: list[str]) -> None:
    """An unknown event type on every partition must come out of the DLQ before the timed
    part starts, so no reminder falls due while the job is still starting (that would count
    start-up time as lateness)."""
    from job.dev import kafka_io

    _send_to_every_partition(producer, topics["events"], keys, "bench_warmup", 0)
    seen = kafka_io.consume(
        bootstrap, topics["dlq"], until_count=len(keys), idle_timeout_s=180, max_wait_s=180
    )
    if len(seen) < len(keys):
        raise TimeoutError(f"warm-up: {len(seen)} of {len(keys)} DLQ records in 180 s")


@dataclass(frozen=True)
class _Record:
    key: str
    value: bytes


def _lull_records(keys: list[str], now: int) -> list[_Record]:
    """An identified customer with a cart on every partition, stamped ``now``."""
    records = []
    # Kafka key = the partition's key (it places the record), customer id = the cart's owner.
    for n, key in enumerate(keys):
        cid = f"bench-lull-{n}"
        for event_type, extra in (
            ("identify", {"traits": {"email": f"{cid}@example.com"}}),
            (
                "cart_add",
                {
                    "properties": {
                        "product_id": "p1",
                        "price": 9.5,
                        "quantity": 1,
                        "cart_id": f"cart-{cid}",
                        "currency": "EUR",
                    }
                },
            ),
        ):
            event = {
                "event_id": f"{cid}-{event_type}",
                "event_type": event_type,
                "customer_id": cid,
                "timestamp": now,
                **extra,
            }
            records.append(_Record(key, json.dumps(event).encode()))
    return records


def child_live(spec: dict) -> dict:
    """Unbounded job, warm-up, paced live events, then a watermark clock; returns lateness
    of every reminder and (store on) the writer's freshness samples."""
    from kafka import KafkaProducer

    from job.dev import gen, kafka_io
    from job.main import run

    work = Path(spec["work_dir"])
    bootstrap = spec["bootstrap"]
    # Fresh topics per run: the throughput topic holds historical events, and Tansu's
    # "latest" offsets cannot be used to skip them (docs/DESIGN.md#tansu).
    topics = _topics(spec["suffix"])
    _create_topics(bootstrap, topics)
    lull = spec.get("lull", False)
    cfg = _job_config(
        {**spec, "topics": topics},
        work,
        {
            "watermarks": {"out_of_orderness": OUT_OF_ORDERNESS},
            # the cart campaign alone, step 1 only, no frequency cap or quiet hours
            "campaigns": {
                "abandoned_cart": {
                    "steps": [
                        {
                            "after": LULL_DUE_AFTER if lull else ABANDON_AFTER,
                            "template": "abandoned_cart_1",
                            "show": "cart",
                        }
                    ]
                },
                **{
                    c: {"enabled": False}
                    for c in ("browse_abandonment", "welcome", "post_purchase")
                },
            },
            "guards": {"frequency_cap": 0, "quiet_hours": {"start": "", "end": ""}},
        },
    )
    settings = _settings(LIVE_PARALLELISM, work, checkpoints=True)
    keys = partition_keys(PARTITIONS)
    reader = RequestReader(bootstrap, topics["email_requests"], PARTITIONS)
    reader.start()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, client_id="inboxflow-bench-clock"
    )
    client = None
    cancelled = False
    watch: JobWatch | None = None
    out: dict[str, Any] = {}
    try:
        started = time.monotonic()
        client = run(cfg, settings, job_name="inboxflow-bench-live", wait=False)
        _wait_running(client, timeout_s=180)
        _warm_up(bootstrap, producer, topics, keys)
        out["startup_seconds"] = time.monotonic() - started
        watch = JobWatch(client)
        watch.start()
        if lull:
            # one abandoned cart per partition, due LULL_DUE_AFTER into the silence after it
            live = iter(_lull_records(keys, wall_ms()))
        else:
            live = _watched(
                gen.generate_live(SEED, CUSTOMERS, spec["rate"] * spec["seconds"]), watch
            )
        produce_started = time.monotonic()
        produced = kafka_io.produce(
            bootstrap,
            topics["events"],
            ((r.key, r.value, None) for r in live),
            rate=spec["rate"],
            linger_ms=5,
        )
        out["produced"] = len(produced)
        out["produce_seconds"] = time.monotonic() - produce_started
        if spec.get("clock", True) and not lull:
            # The clock: a page view per partition keeps every split's watermark moving, so
            # reminders due after the last live event fire on time even without the lull rule.
            _run_clock(producer, topics["events"], keys, spec["clock_seconds"], watch)
        else:
            # Silence on every partition: only the lull rule moves the watermark.
            silence_end = time.monotonic() + max(LULL_SILENCE_S, spec["clock_seconds"])
            while time.monotonic() < silence_end:
                watch.check()
                time.sleep(0.5)
        time.sleep(2)  # the last reminders travel through the sink and the reader
        watch.check()
    finally:
        if watch is not None:
            watch.stop()
        reader.stop()
        producer.close(timeout=5)
        # a stuck JVM would block the cancel too; the parent kills the process group
        cancelled = (
            client is not None
            and not (watch is not None and watch.problem)
            and _cancel(client, timeout_s=30)
        )
    if not cancelled:
        raise RuntimeError("the job did not cancel within 30 s (stuck JVM?)")
    if reader.error:
        raise RuntimeError(f"reader failed: {reader.error!r}")
    if not reader.records:
        raise RuntimeError("no email request arrived: the job did not run the whole time")
    lateness = []
    for received, value in reader.records:
        request = json.loads(value)
        lateness.append(received - int(request["metadata"]["due_at_ms"]))
    out["lateness_ms"] = summarize(lateness)
    if spec["store"]:
        path = work / "freshness.log"
        samples = [int(line) for line in path.read_text().split()] if path.is_file() else []
        out["freshness_ms"] = summarize(samples)
    return out


def _unit_stream(
    units: range, watch: JobWatch, stamps: dict[int, int] | None = None
) -> Iterator[tuple[str, bytes, None]]:
    """The records of ``units``, each unit stamped with the wall clock when it is pulled
    (kept in ``stamps``: unit -> ms)."""
    for j in units:
        watch.check()
        now = wall_ms()
        if stamps is not None:
            stamps[j] = now
        for key, value in unit_records(j, now):
            yield key, value, None


class ProducerLog(logging.Handler):
    """What kafka-python says while the bench produces: its sender's warnings (retries,
    expired batches) and the DUPLICATE_SEQUENCE_NUMBER answers it takes as success (logged
    at DEBUG only: Tansu 0.6 answers it for a retried batch it never stored), plus the
    connection warnings (request timeouts). Counts and the first samples, wall-clock
    stamped; nothing reaches the run's log."""

    SENDER = "kafka.producer.sender"
    OTHERS = ("kafka.conn", "kafka.client_async")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []
        self._saved: list[tuple[logging.Logger, int, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        duplicate = "DUPLICATE_SEQUENCE_NUMBER" in str(record.msg)
        if record.levelno < logging.WARNING and not duplicate:
            return
        key = (
            "duplicate_sequence_number"
            if duplicate
            else f"{record.name} {record.levelname.lower()}"
        )
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.samples) < 30:
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a sample, nothing more
                text = str(record.msg)
            self.samples.append(f"{int(record.created * 1000)} {record.name}: {text[:300]}")

    def install(self) -> ProducerLog:
        for name, level in (
            (self.SENDER, logging.DEBUG),
            *((n, logging.WARNING) for n in self.OTHERS),
        ):
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, logger.propagate))
            logger.setLevel(level)
            logger.propagate = False
            logger.addHandler(self)
        return self

    def uninstall(self) -> None:
        for logger, level, propagate in self._saved:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate
        self._saved.clear()

    def result(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "samples": list(self.samples)}


def kafka_client_warnings(lines: Iterator[str], limit: int = 20) -> dict[str, Any]:
    """WARN and ERROR lines of the Kafka clients in a Flink log (the job's sink producers:
    retries, expired batches, sequence errors), counted, with the first ``limit``."""
    samples: list[str] = []
    count = 0
    for line in lines:
        if "org.apache.kafka" in line and (" WARN " in line or " ERROR " in line):
            count += 1
            if len(samples) < limit:
                samples.append(line.strip()[:400])
    return {"count": count, "samples": samples}


def _flink_log_lines() -> Iterator[str]:
    """The lines of this run's Flink logs (``FLINK_LOG_DIR``, set by ``run_child``)."""
    log_dir = os.environ.get("FLINK_LOG_DIR")
    if not log_dir:
        return
    for path in sorted(Path(log_dir).glob("*.log")):
        with open(path, errors="replace") as f:
            yield from f


def _event_id(value: bytes) -> str | None:
    try:
        event = json.loads(value)
    except ValueError:
        return None
    return event.get("event_id") if isinstance(event, dict) else None


def _blast(bootstrap: str, topic: str, records: Sequence[tuple[str, bytes, None]]) -> int:
    """Sends ``records`` as fast as possible through librdkafka (confluent-kafka, dev
    extras): kafka-python, sharing the cores with the job, sends about what the job reads, so
    it could not make a burst (docs/PERFORMANCE.md#costs-behind-the-design). Waits
    for every delivery report; raises on the first failed one. Returns the count sent."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 262_144,
            "acks": "all",
            "client.id": "inboxflow-bench-burst",
        }
    )
    for key, value, _ in records:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(
            f"burst: {remaining} records undelivered, {len(errors)} failed (first: {errors[:1]})"
        )
    return len(records)


def child_burst(spec: dict) -> dict:
    """Unbounded job (store off), warm-up, then units at ``rate`` for ``before_s``, a burst
    of ``burst_events`` sent as fast as possible, units at ``rate`` for ``after_s``, the
    watermark clock; then waits until every unit's output has arrived (or the timeout) and
    accounts for every event."""
    from kafka import KafkaProducer

    from job.dev import kafka_io
    from job.main import run, with_rest_endpoint
    from job.monitor import JobMonitor

    # The steady phases and the clock go through kafka-python, idempotent by default (acks
    # all); spec["idempotence"] False sends them without (at-least-once: a retried batch may
    # be stored twice, the job drops the copy by event id). The burst's librdkafka producer
    # is not idempotent either way (its default).
    idempotent = spec.get("idempotence", True)
    steady_config: dict[str, Any] = (
        {} if idempotent else {"enable_idempotence": False, "acks": "all"}
    )

    work = Path(spec["work_dir"])
    bootstrap, rate = spec["bootstrap"], spec["rate"]
    topics = _topics(spec["suffix"])
    _create_topics(bootstrap, topics)
    cfg = _job_config(
        {**spec, "topics": topics},
        work,
        {
            "watermarks": {"out_of_orderness": OUT_OF_ORDERNESS},
            # the cart campaign alone, step 1 only, no frequency cap or quiet hours
            "campaigns": {
                "abandoned_cart": {
                    "steps": [
                        {"after": ABANDON_AFTER, "template": "abandoned_cart_1", "show": "cart"}
                    ]
                },
                **{
                    c: {"enabled": False}
                    for c in ("browse_abandonment", "welcome", "post_purchase")
                },
            },
            "guards": {"frequency_cap": 0, "quiet_hours": {"start": "", "end": ""}},
        },
    )
    settings, rest_url = with_rest_endpoint(_settings(LIVE_PARALLELISM, work, checkpoints=True))
    keys = partition_keys(PARTITIONS)
    readers = {
        "requests": RequestReader(bootstrap, topics["email_requests"], PARTITIONS),
        "outcomes": RequestReader(bootstrap, topics["outcomes"], 1),
        "dlq": RequestReader(bootstrap, topics["dlq"], 1),
    }
    for reader in readers.values():
        reader.start()
    producer_log = ProducerLog().install()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, client_id="inboxflow-bench-clock", **steady_config
    )
    n_before = unit_count(rate * spec["before_s"])
    n_burst = unit_count(spec["burst_events"])
    n_after = unit_count(rate * spec["after_s"])
    phases = {
        "before": range(n_before),
        "burst": range(n_before, n_before + n_burst),
        "after": range(n_before + n_burst, n_before + n_burst + n_after),
    }
    units = range(n_before + n_burst + n_after)
    client = None
    watch: JobWatch | None = None
    cancelled = False
    out: dict[str, Any] = {"phases": {}, "idempotence": idempotent}
    stamps: dict[int, int] = {}  # unit -> ms it was sent (the steady phases)
    deliveries: dict[str, tuple[int, int]] = {}  # event id -> acked (partition, offset)
    clock_sent = 0

    def parsed(name: str) -> list[dict]:
        return [json.loads(value) for _, value in list(readers[name].records)]

    try:
        started = time.monotonic()
        client = run(cfg, settings, job_name="inboxflow-bench-burst", wait=False)
        _wait_running(client, timeout_s=180)
        job_id = str(client.get_job_id())
        _warm_up(bootstrap, producer, topics, keys)
        out["startup_seconds"] = time.monotonic() - started
        watch = JobWatch(client)
        watch.start()
        for name, phase in phases.items():
            if name == "burst":
                # built beforehand, stamped now: a fraction of a second before they are sent
                burst_records = list(_unit_stream(phase, watch))
                t0, t0_ms = time.monotonic(), wall_ms()
                sent = _blast(bootstrap, topics["events"], burst_records)
            else:
                t0, t0_ms = time.monotonic(), wall_ms()
                acked = kafka_io.produce(
                    bootstrap,
                    topics["events"],
                    _unit_stream(phase, watch, stamps),
                    rate=rate,
                    linger_ms=5,
                    **steady_config,
                )
                # produce() acks every record in input order: one per event id
                event_ids = (eid for j in phase for eid in unit_event_ids(j))
                deliveries.update(zip(event_ids, acked, strict=True))
                sent = len(acked)
            seconds = time.monotonic() - t0
            out["phases"][name] = {
                "units": len(phase),
                "events": sent,
                "seconds": seconds,
                "events_per_s": sent / seconds,
                "start_ms": t0_ms,
                "end_ms": wall_ms(),
            }
        # the clock: page views on every partition move the watermark past the last units'
        # due times (abandon_after + out-of-orderness)
        clock_sent += _run_clock(producer, topics["events"], keys, spec["clock_seconds"], watch)
        # every unit's output, or nothing new for a while (then what is missing is lost)
        deadline = time.monotonic() + BURST_DRAIN_TIMEOUT_S
        accounted, progress_at = -1, time.monotonic()
        while True:
            watch.check()
            counts = account_units(units, parsed("requests"), parsed("outcomes"), parsed("dlq"))
            if counts["accounted"] > accounted:
                accounted, progress_at = counts["accounted"], time.monotonic()
            if (
                counts["lost"] == 0
                or time.monotonic() > deadline
                or time.monotonic() - progress_at > 20
            ):
                break
            time.sleep(2)
        time.sleep(1)  # anything unexpected still on its way
        # Restarts from the exception history (one entry per failure): the run needs no metric,
        # and reading metrics once crashed the JVM (docs/DESIGN.md#python-gauges).
        out["restarts"] = len(JobMonitor(rest_url, job_id).failures())
        watch.check()
    finally:
        if watch is not None:
            watch.stop()
        for reader in readers.values():
            reader.stop()
        producer.close(timeout=5)
        producer_log.uninstall()
        cancelled = (
            client is not None
            and not (watch is not None and watch.problem)
            and _cancel(client, timeout_s=30)
        )
    if not cancelled:
        raise RuntimeError("the job did not cancel within 30 s (stuck JVM?)")
    for reader in readers.values():
        if reader.error:
            raise RuntimeError(f"reader failed: {reader.error!r}")
    out["producer_log"] = producer_log.result()
    out["sink_producer_log"] = kafka_client_warnings(_flink_log_lines())
    requests = [(received, json.loads(value)) for received, value in readers["requests"].records]
    outcomes, dlq = parsed("outcomes"), parsed("dlq")
    live = {"requests": [r for _, r in requests], "outcomes": outcomes, "dlq": dlq}
    # The live readers got every offset of the output topics up to where they stopped unless
    # they jumped over some; when they did, or an output is missing, the output topics are
    # read again with a fresh consumer: what the job emitted and a live reader skipped is
    # not lost (``lost_by_live_readers`` keeps what the live readers saw).
    jumps = {name: reader.jumps[:20] for name, reader in readers.items() if reader.jumps}
    final = live
    read_seconds: dict[str, float] = {}
    check_started = time.monotonic()
    if jumps or missing_units(units, **live):
        final = {
            name: [
                json.loads(r.value)
                for r in kafka_io.consume(
                    bootstrap, topics[topic], idle_timeout_s=3, max_wait_s=120
                )
            ]
            for name, topic in (
                ("requests", "email_requests"),
                ("outcomes", "outcomes"),
                ("dlq", "dlq"),
            )
        }
        read_seconds["outputs"] = time.monotonic() - check_started
    out["accounting"] = account_units(units, **final)
    out["accounting"]["per_phase"] = {
        name: account_units(phase, **final)["lost"] for name, phase in phases.items()
    }
    missing = missing_units(units, **final)
    # Where were the missing events lost? Read the whole events topic back (counting records:
    # Tansu's "latest" offsets are wrong), now that the job no longer takes the cores.
    events_started = time.monotonic()
    back = kafka_io.consume(bootstrap, topics["events"], idle_timeout_s=3, max_wait_s=300)
    read_seconds["events"] = time.monotonic() - events_started
    check = check_topic(
        phases, [(r.partition, r.offset, _event_id(r.value)) for r in back], missing, deliveries
    )
    check["records_expected"] = (
        len(keys) + sum(p["events"] for p in out["phases"].values()) + clock_sent
    )
    burst_start = out["phases"]["burst"]["start_ms"]
    for event_id, entry in check["absent_events"].items():
        j = int(event_id[len(BURST_PREFIX) :].split("-")[0])
        if j in stamps:
            entry["sent_s_after_burst_start"] = (stamps[j] - burst_start) / 1000
    check["live_reader_jumps"] = jumps
    if final is not live:
        out["accounting"]["lost_by_live_readers"] = account_units(units, **live)["lost"]
        check["output_records_live_vs_reread"] = {
            name: [len(live[name]), len(final[name])] for name in live
        }
    check["seconds"] = time.monotonic() - check_started
    check["read_seconds"] = read_seconds  # each includes 3 s without new records at the end
    out["topic_check"] = check
    out["accounting"]["missing_in_topic"] = check["missing_in_topic"]
    # what the job did emit for missing units whose inputs are all in the topic (the job or
    # its sinks lost them: a bug), in full, and briefly for the first others
    in_job = set(check["lost_units_inputs_in_topic"][:20])
    out["accounting"]["missing_detail"] = {
        cid: {
            "inputs_in_topic": cid in in_job,
            "outcomes": [
                o if cid in in_job else o.get("kind")
                for o in final["outcomes"]
                if o.get("customer_id") == cid
            ],
            "requests": [
                r if cid in in_job else r.get("request_id")
                for r in final["requests"]
                if r.get("customer_id") == cid
            ],
            "dlq": [
                d if cid in in_job else d.get("reason")
                for d in final["dlq"]
                if d.get("customer_id") == cid
            ],
        }
        for cid in sorted(in_job | set(missing[:5]), key=lambda c: int(c[len(BURST_PREFIX) :]))
    }
    burst = out["phases"]["burst"]
    bound_ms = _duration_ms(OUT_OF_ORDERNESS) + NORMAL_LATENESS_SLACK_MS
    # lateness = due time -> the reminder "emitted" (its Kafka timestamp: the job's sink
    # stamps the wall clock when it produces it) and -> "read" by the bench's consumer
    # (as in the lateness row; that consumer, on the same two cores, falls behind when
    # a thousand reminders fall due at once, which "emitted" leaves out)
    samples = {
        "emitted": [
            (ts, ts - int(r["metadata"]["due_at_ms"]))
            for ts, (_, r) in zip(readers["requests"].timestamps, requests, strict=True)
        ],
        "read": [
            (received, received - int(r["metadata"]["due_at_ms"])) for received, r in requests
        ],
    }
    out["lateness_ms"] = {"normal_bound_ms": bound_ms}
    out["lateness_recovery_s"] = {}
    out["lateness_timeline"] = {}  # per second from the burst's start: [s, count, p50, p95]
    for how, pairs in samples.items():
        out["lateness_ms"][how] = {
            "before_burst": summarize([lat for t, lat in pairs if t < burst["start_ms"]]),
            "from_burst_on": summarize([lat for t, lat in pairs if t >= burst["start_ms"]]),
        }
        out["lateness_recovery_s"][how] = recovered_after(pairs, burst["end_ms"], bound_ms)
        buckets: dict[int, list[float]] = {}
        for t, lateness in pairs:
            buckets.setdefault((t - burst["start_ms"]) // 1000, []).append(lateness)
        out["lateness_timeline"][how] = [
            [second, len(values), percentile(values, 50), percentile(values, 95)]
            for second, values in sorted(buckets.items())
        ]
    # the backlog is drained once the job emitted the last burst unit's own output (its
    # cancellation or DLQ record; reminders come abandon_after later)
    burst_ids = {f"{BURST_PREFIX}{j}" for j in phases["burst"] if unit_kind(j) != "abandon"}
    drained = [
        ts
        for name in ("outcomes", "dlq")
        for ts, (_, value) in zip(readers[name].timestamps, readers[name].records, strict=True)
        if json.loads(value).get("customer_id") in burst_ids
    ]
    if drained:
        out["drain_seconds"] = (max(drained) - burst["start_ms"]) / 1000
        # what the job processed meanwhile: the burst plus the steady input that arrived
        # while it drained
        processed = burst["events"] + rate * max(0.0, out["drain_seconds"] - burst["seconds"])
        out["capacity_events_per_s"] = processed / out["drain_seconds"]
        out["burst_over_capacity"] = burst["events_per_s"] / out["capacity_events_per_s"]
    # the backlog: from a "buy" unit's send (its event time) to its cancellation emitted
    unit_ids = {f"{BURST_PREFIX}{j}" for j in units}
    delays = [
        (ts, ts - int(o["event_time"]))
        for ts, (_, value) in zip(
            readers["outcomes"].timestamps, readers["outcomes"].records, strict=True
        )
        if (o := json.loads(value)).get("kind") == "cancelled" and o.get("customer_id") in unit_ids
    ]
    out["backlog_ms"] = {
        "before_burst": summarize([d for t, d in delays if t < burst["start_ms"]]),
        "from_burst_on": summarize([d for t, d in delays if t >= burst["start_ms"]]),
    }
    return out


def _send_rate_request(i: int) -> str:
    """A synthetic email request: what the limiter reads (``request_id``,
    ``trigger_event_time``) and about a kilobyte of body."""
    return json.dumps(
        {
            "request_id": f"bench-send-rate-{i:06d}",
            "customer_id": f"c-{i % 97}",
            "subject": "Your cart is waiting",
            "html": "<p>" + "x" * 1000 + "</p>",
            "trigger_event_time": "2026-01-05T09:00:00.000Z",
        }
    )


def child_send_rate(spec: dict) -> dict:
    """``burst`` requests from a bounded collection, spread over ``parallelism`` subtasks
    (round robin: request i goes to subtask (i + a random start) % parallelism), through
    ``job.pipeline.limit_send_rate`` at ``rate``/s. Python maps chained right before and
    after the limiter stamp each request with the wall clock as it arrives (a field
    ``arrived_ms`` added to its JSON) and as it leaves (the limiter does not time itself).
    Once every request has arrived, each subtask has spent its bucket (it deferred some), so
    from then on any second holds at most the rate, +1 per subtask for a token refilled at a
    window's edge. The input ends at once, so most of the
    burst is released by the limiter's end-of-input drain, at the same rate as its timers
    (``tests/integration/test_send_rate.py`` checks both)."""
    from pyflink.common import Row, Types

    from job.main import create_env
    from job.pipeline import limit_send_rate
    from udfs.flink.customer_function import KEYED_JSON

    work = Path(spec["work_dir"])
    rate, parallelism, burst = spec["rate"], spec["parallelism"], spec["burst"]
    started = time.monotonic()
    env = create_env(_settings(parallelism, work, checkpoints=False))
    rows = [Row(f"c-{i % 97}", _send_rate_request(i)) for i in range(burst)]
    spread = (
        env.from_collection(rows, type_info=KEYED_JSON)
        # the request's JSON ends with its closing brace: one more field before it
        .map(
            lambda r: Row(r[0], f'{r[1][:-1]}, "arrived_ms": {wall_ms()}}}'),
            output_type=KEYED_JSON,
        )
        .set_parallelism(parallelism)
    )
    limited, deferred = limit_send_rate(spread, rate)
    # (PyFlink 2.0.2's thread-mode runtime context cannot tell a map its subtask index: it
    # calls the RuntimeContext method Flink 2.0 removed)
    stamped_type = Types.ROW([Types.BOOLEAN(), Types.STRING(), Types.LONG()])
    stamped = limited.map(lambda r: Row(True, r[1], wall_ms()), output_type=stamped_type)
    waited = deferred.map(lambda r: Row(False, r[1], 0), output_type=stamped_type)
    released: list[tuple[str, int]] = []
    arrived: list[int] = []
    deferred_ids: list[str] = []
    with stamped.union(waited).execute_and_collect("inboxflow-bench-send-rate") as results:
        for is_request, text, at in results:
            if is_request:
                request = json.loads(text)
                released.append((request["request_id"], at))
                arrived.append(request["arrived_ms"])
            else:
                deferred_ids.append(json.loads(text)["request_id"])
    seconds = time.monotonic() - started
    ids = [rid for rid, _ in released]
    expected = [json.loads(_send_rate_request(i))["request_id"] for i in range(burst)]
    # each subtask releases its share in the order it came: request i went to the subtask
    # of i % parallelism, and ids sort as their i
    position = {rid: i for i, rid in enumerate(expected)}
    out_of_order = 0
    for share in range(parallelism):
        mine = [position[r] for r in ids if r in position and position[r] % parallelism == share]
        out_of_order += sum(1 for a, b in zip(mine, mine[1:], strict=False) if b < a)
    stamps = sorted(at for _, at in released)
    bucket = send_rate_bucket(rate, parallelism)
    last_arrival = max(arrived, default=0)
    spent = [at for at in stamps if at >= last_arrival]  # every bucket spent by then
    drain_s = (stamps[-1] - stamps[0]) / 1000 if stamps else None
    return {
        "send_rate": rate,
        "parallelism": parallelism,
        "burst": burst,
        "released": len(released),
        "lost": len(set(expected) - set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "out_of_order": out_of_order,
        "deferred": len(deferred_ids),
        "deferred_unique": len(set(deferred_ids)),
        "bucket": bucket,
        "max_per_s": most_in_window(stamps),
        "max_per_s_after_bucket": most_in_window(spent),
        # how long the burst took to arrive: tokens refill meanwhile
        "arrival_seconds": (last_arrival - min(arrived)) / 1000 if arrived else None,
        "drain_seconds": drain_s,
        "expected_drain_seconds": max(0.0, burst - bucket) / rate,
        # of the requests after the first bucketful, per second of the drain
        "achieved_per_s": (len(stamps) - bucket) / drain_s if drain_s else None,
        "seconds": seconds,
    }


def _duration_ms(text: str) -> int:
    from job.config import parse_duration

    return parse_duration(text, "bench")


def _cancel(client, timeout_s: float) -> bool:
    """Cancels the job; False when the JVM did not confirm within ``timeout_s``."""
    done = threading.Event()

    def cancel() -> None:
        try:
            client.cancel().result()
            done.set()
        except Exception as exc:  # noqa: BLE001 - reported by the caller as not cancelled
            log.warning("cancel failed: %s", exc)

    threading.Thread(target=cancel, name="bench-cancel", daemon=True).start()
    return done.wait(timeout_s)


def _child_collector(spec: dict) -> dict:
    from bench import collector

    return collector.child_shape(spec)


def _child_collector_floor(spec: dict) -> dict:
    from bench import collector

    return collector.child_floor(spec)


def child_main(spec_path: Path, out_path: Path) -> int:
    quiet_logging()
    spec = json.loads(spec_path.read_text())
    Path(spec["work_dir"]).mkdir(parents=True, exist_ok=True)
    try:
        result = {
            "throughput": child_throughput,
            "passthrough": child_passthrough,
            "live": child_live,
            "burst": child_burst,
            "send_rate": child_send_rate,
            "collector": _child_collector,
            "collector_floor": _child_collector_floor,
        }[spec["kind"]](spec)
    except BaseException:  # noqa: BLE001 - reported, then the process ends
        # Exit at once: a normal interpreter exit may wait on a stuck JVM's gateway.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    out_path.write_text(json.dumps(result))
    # Same at success: the JVM may still be tearing the job down (or be stuck doing so);
    # the parent kills what is left of the process group.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --------------------------------------------------------------------------- parent


def _kill_group(pgid: int) -> None:
    """Stops whatever is left in a run's process group (the PyFlink gateway JVM)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_child(spec: dict, name: str, work_root: Path, timeout_s: float) -> dict:
    """Runs one measurement in a child process; returns its result or {"error": ...}."""
    work = work_root / name
    work.mkdir(parents=True)
    spec = {**spec, "work_dir": str(work)}
    spec_path, out_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    log_path = LOG_DIR / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--child",
        str(spec_path),
        "--child-out",
        str(out_path),
    ]
    with open(log_path, "wb") as log_file:
        # The JVM's own log goes next to the run's log (PyFlink's default is one file
        # inside the venv that every local job on the machine overwrites).
        env = {**os.environ, "FLINK_LOG_DIR": str(LOG_DIR / f"{name}.flink")}
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc.pid)
            proc.wait()
    if code == 0 and out_path.is_file():
        return json.loads(out_path.read_text())
    reason = f"timed out after {timeout_s:.0f} s" if code is None else f"exit code {code}"
    tail = log_path.read_text(errors="replace")[-1500:]
    print(f"    FAILED ({reason}); log {log_path}:\n{tail}", flush=True)
    if spec["store"]:
        print(
            "    (store-on runs that hang or die are the chdb signal-handler deadlock "
            "described in bench/README.md)",
            flush=True,
        )
    return {"error": reason, "log": str(log_path)}


def _runs(
    plan: Plan,
    bootstrap: str,
    stops: dict[int, int],
    tiny_stops: dict[int, int],
    expected: tuple[int, int] | None = None,
) -> Iterator[tuple[str, str, dict, float]]:
    """(group, run name, spec, timeout) in execution order. Tiny and full runs alternate, and
    so do store-off and store-on runs of the same parallelism, so that the runs compared
    with each other see the same machine load (it drifts on a shared machine). Each round
    starts with the passthrough, then the job's runs: passthrough, job, passthrough, job.
    ``expected``: the records below ``stops`` and ``tiny_stops``, which the passthrough must
    write (default: ``plan.events`` and ``TINY_EVENTS``)."""
    # A healthy run processes well over 500 events/s; a hung one (docs/DESIGN.md#chdb-signals) is
    # killed instead of holding the bench for long.
    full_timeout = 180 + plan.events / 500
    full_count, tiny_count = expected or (plan.events, TINY_EVENTS)
    groups = [
        (store, group)
        for store, group in ((False, "throughput"), (True, "store"))
        if group in plan.measurements
    ]
    for i in range(plan.runs):
        if "passthrough" in plan.measurements:
            for size, size_stops, count, timeout in (
                ("-tiny", tiny_stops, tiny_count, 180),
                # plus reading the output back with kafka-python
                ("", stops, full_count, full_timeout + plan.events / 1000),
            ):
                name = f"passthrough{size}-{i + 1}"
                yield (
                    f"passthrough{size}",
                    name,
                    {
                        "kind": "passthrough",
                        "bootstrap": bootstrap,
                        "parallelism": PASSTHROUGH_PARALLELISM,
                        "store": False,
                        "stops": size_stops,
                        "expected": count,
                        "output_topic": f"bench.{name}",
                    },
                    timeout,
                )
        for p in (1, 2):
            for store, group in groups:
                base = {
                    "kind": "throughput",
                    "bootstrap": bootstrap,
                    "parallelism": p,
                    "store": store,
                }
                yield (
                    f"{group}-p{p}-tiny",
                    f"{group}-p{p}-tiny-{i + 1}",
                    {**base, "stops": tiny_stops},
                    180,
                )
                yield (
                    f"{group}-p{p}",
                    f"{group}-p{p}-{i + 1}",
                    {**base, "stops": stops},
                    full_timeout,
                )
    live_timeout = 300 + plan.live_seconds * 2 + plan.clock_seconds
    live_groups = [
        (False, "lateness", {}),
        (False, "lateness-noclock", {"clock": False}),
        (False, "lull", {"lull": True}),
        (True, "freshness", {}),
    ]
    for store, group, extra in live_groups:
        if group.split("-")[0].replace("lull", "lateness") not in plan.measurements:
            continue
        for i in range(plan.runs):
            yield (
                group,
                f"{group}-{i + 1}",
                {
                    "kind": "live",
                    "bootstrap": bootstrap,
                    "store": store,
                    "rate": plan.rate,
                    "seconds": plan.live_seconds,
                    "clock_seconds": plan.clock_seconds,
                    "suffix": f"{group.replace('-', '')}{i + 1}",
                    **extra,
                },
                live_timeout + LULL_SILENCE_S,
            )
    if "burst" in plan.measurements:
        before_s, after_s = BURST_STEADY_S_QUICK if plan.quick else BURST_STEADY_S
        # start-up, the steady phases, the burst at a few hundred events/s at worst, the
        # clock and the wait for the last outputs
        timeout = (
            300
            + before_s
            + after_s
            + plan.burst_events / 300
            + plan.clock_seconds
            + BURST_DRAIN_TIMEOUT_S
        )
        for i in range(plan.runs):
            yield (
                "burst",
                f"burst-{i + 1}",
                {
                    "kind": "burst",
                    "bootstrap": bootstrap,
                    "store": False,
                    "rate": plan.rate,
                    "before_s": before_s,
                    "after_s": after_s,
                    "burst_events": plan.burst_events,
                    "clock_seconds": plan.clock_seconds,
                    "idempotence": plan.idempotence,
                    "suffix": f"burst{i + 1}",
                },
                timeout,
            )
    if "send_rate" in plan.measurements:
        for i in range(plan.runs):
            yield (
                "send_rate",
                f"send_rate-{i + 1}",
                {
                    "kind": "send_rate",
                    "store": False,
                    "rate": SEND_RATE,
                    "parallelism": SEND_RATE_PARALLELISM,
                    "burst": SEND_RATE_BURST,
                },
                # start-up, the drain (about 5 s) and teardown
                120 + SEND_RATE_BURST / SEND_RATE,
            )


def _cluster_runs(plan: Plan, bootstrap: str, work_root: Path) -> Iterator[tuple[str, str, dict]]:
    """The packaged job on a standalone cluster of its own per run (``job.dev.cluster``), over
    the same pre-produced events as the throughput rows, shapes alternating so that both see
    the same machine load. Each run: (group, run name, result)."""
    from job.dev.cluster import measure_throughput

    topics = _topics()
    for i in range(plan.runs):
        for tms, slots in CLUSTER_SHAPES:
            group = f"cluster-{tms}x{slots}"
            name = f"{group}-{i + 1}"
            print(f"[cluster] {name} ...", end=" ", flush=True)
            t0 = time.monotonic()
            try:
                result = measure_throughput(
                    bootstrap,
                    topics,
                    plan.events,
                    work_root / name,
                    taskmanagers=tms,
                    slots=slots,
                    timeout_s=120 + plan.events / 300,
                )
            except Exception as exc:  # noqa: BLE001 - one failed run is reported, not fatal
                result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"{_describe(result)} ({time.monotonic() - t0:.0f} s)", flush=True)
            yield group, name, result


def collector_settings(plan: Plan) -> tuple[float, int]:
    """(measured seconds per run, connections) of the collector row."""
    from bench import collector

    seconds = plan.collector_seconds or (
        collector.SECONDS_QUICK if plan.quick else collector.SECONDS
    )
    return seconds, plan.collector_connections or collector.CONNECTIONS


def _collector_runs(
    plan: Plan, bootstrap: str, work_root: Path, run: Any = None
) -> Iterator[tuple[str, str, dict]]:
    """The collector row (:mod:`bench.collector`): per round a run of single events, one of
    batches, then the produce floor over as many events as the round's larger run accepted;
    each a child process (``run``: :func:`run_child`). Each run: (group, run name, result)."""
    from bench import collector

    run = run or run_child
    seconds, connections = collector_settings(plan)
    total = plan.runs * (len(collector.SHAPES) + 1)
    n = 0
    for i in range(plan.runs):
        round_results = []
        for shape in collector.SHAPES:
            name = f"collector-{shape}-{i + 1}"
            spec = collector.shape_spec(
                bootstrap,
                shape,
                name,
                seconds,
                connections,
                collector_log=LOG_DIR / f"{name}.collector.log",
            )
            n += 1
            print(f"[collector {n}/{total}] {name} ...", end=" ", flush=True)
            t0 = time.monotonic()
            result = run(spec, name, work_root, collector.shape_timeout(spec))
            print(f"{collector.describe(result)} ({time.monotonic() - t0:.0f} s)", flush=True)
            round_results.append(result)
            yield f"collector-{shape}", name, result
        name = f"collector-floor-{i + 1}"
        spec = collector.floor_spec(bootstrap, name, collector.floor_events(round_results))
        n += 1
        print(f"[collector {n}/{total}] {name} ...", end=" ", flush=True)
        t0 = time.monotonic()
        result = run(spec, name, work_root, collector.floor_timeout(spec))
        print(f"{collector.describe(result)} ({time.monotonic() - t0:.0f} s)", flush=True)
        yield "collector-floor", name, result


def _describe(result: dict) -> str:
    if "error" in result:
        return "failed"
    if "send_rate" in result:
        return (
            f"{result['released']:,}/{result['burst']:,} released, "
            f"{result['deferred']:,} deferred; at most {result['max_per_s_after_bucket']}/s "
            f"once all arrived (limit {result['send_rate']}/s), drained in "
            f"{result['drain_seconds'] or 0:.1f} s"
        )
    if "accounting" in result:
        acc, burst = result["accounting"], result["phases"]["burst"]
        recovery = result["lateness_recovery_s"]["emitted"]
        in_topic = acc.get("missing_in_topic")
        return (
            f"{acc['events']:,} events, {acc['lost']} lost"
            + ("" if in_topic is None else f" ({in_topic} never in the topic)")
            + f"; burst "
            f"{burst['events_per_s']:,.0f} ev/s, drained in "
            f"{result.get('drain_seconds', float('nan')):.1f} s; lateness normal "
            + ("never" if recovery is None else f"{recovery:.1f} s")
            + " after it"
        )
    if "events_per_s" in result:
        return f"{result['events_per_s']:,.0f} ev/s, {result['restarts']} restarts"
    if "seconds" in result:
        extra = f", {result['rows_written']:,} rows" if "rows_written" in result else ""
        if "records_written" in result:
            extra += f", {result['records_written']:,} records written (checked)"
        return f"{result['seconds']:.1f} s{extra}"
    lateness = result["lateness_ms"]
    parts = [f"{lateness['count']} reminders, lateness p95 {_ms(lateness['p95'])}"]
    if "freshness_ms" in result:
        parts.append(f"freshness p95 {_ms(result['freshness_ms']['p95'])}")
    parts.append(f"{result['produced'] / result['produce_seconds']:,.0f} ev/s produced")
    return "; ".join(parts)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1000:.2f} s"


def _rate(value: float | None, unit: str = "ev/s") -> str:
    return "n/a" if value is None else f"{value:,.0f} {unit}"


def records_below(deliveries: Sequence[tuple[int, int]], stops: dict[int, int]) -> int:
    """How many of the delivered (partition, offset) records a bounded read stopping at
    ``stops`` (partition -> exclusive end offset) reads."""
    return sum(1 for partition, offset in deliveries if offset < stops.get(partition, 0))


def paired_rate_ratios(
    num: list[dict], num_tiny: list[dict], den: list[dict], den_tiny: list[dict], events: int
) -> list[float]:
    """Adjusted events/s of run i of ``num`` over that of run i of ``den`` (repetition i of
    each, made in the same round), each run adjusted by its own tiny run: on a machine whose
    load drifts these pairs are fairer than the ratio of the medians. Pairs with a failed run
    are left out."""
    ratios = []
    # strict=False: a group left out of the plan (or cut short) has fewer runs, or none
    for runs in zip(num, num_tiny, den, den_tiny, strict=False):
        if any("error" in r for r in runs):
            continue
        rate_num = adjusted_rate(events - TINY_EVENTS, runs[0]["seconds"], runs[1]["seconds"])
        rate_den = adjusted_rate(events - TINY_EVENTS, runs[2]["seconds"], runs[3]["seconds"])
        if rate_num and rate_den:
            ratios.append(rate_num / rate_den)
    return ratios


def paired_ratios(
    off: list[dict], off_tiny: list[dict], on: list[dict], on_tiny: list[dict], events: int
) -> list[float]:
    """Store on / store off events/s of the runs made one after the other (repetition i of
    each), each adjusted by its own tiny run (:func:`paired_rate_ratios`)."""
    return paired_rate_ratios(on, on_tiny, off, off_tiny, events)


def rate_ratio(num: float | None, den: float | None) -> float | None:
    """num / den; None when either is missing or den is 0."""
    if num is None or not den:
        return None
    return num / den


def ratio_summary(
    pairs: Sequence[float], of_medians: float | None, target: float | None = None
) -> dict[str, Any]:
    """A ratio as the table shows it: ``ratio`` is the median of the paired ratios when there
    are any, else the ratio of the medians; ``verdict`` judges ``ratio`` against ``target``
    ("ok", "BELOW TARGET", "n/a" without a ratio, None without a target)."""
    ratio = median(pairs) if pairs else of_medians
    verdict = None
    if target is not None:
        verdict = "n/a" if ratio is None else "ok" if ratio >= target else "BELOW TARGET"
    return {
        "ratio": ratio,
        "of_medians": of_medians,
        "pairs": list(pairs),
        "target": target,
        "verdict": verdict,
    }


def format_times(value: float | None) -> str:
    """``0.13×``; ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.2f}×"


def format_ratio(r: dict[str, Any], what: str) -> str:
    """A :func:`ratio_summary` as ``0.13× passthrough (target >= 0.50×: BELOW TARGET; runs in
    pairs: 0.12×, 0.13×, 0.14×)``."""
    notes = []
    if r["target"] is not None:
        notes.append(f"target >= {format_times(r['target'])}: {r['verdict']}")
    if r["pairs"]:
        notes.append("runs in pairs: " + ", ".join(format_times(x) for x in r["pairs"]))
    elif r["ratio"] is not None:
        notes.append("ratio of the medians")
    head = f"× {what} n/a" if r["ratio"] is None else f"{format_times(r['ratio'])} {what}"
    return head + (f" ({'; '.join(notes)})" if notes else "")


def _adjusted_entry(plan: Plan, full: list[dict], tiny: list[dict], failed: int) -> dict[str, Any]:
    """Median wall times of the ``full`` and ``tiny`` runs (failed ones left out) and the
    events/s they give; ``failed``: how many runs of the two failed."""
    seconds = median([r["seconds"] for r in full])
    fixed = median([r["seconds"] for r in tiny])
    return {
        "events": plan.events,
        "runs": len(full),
        "failed": failed,
        "seconds": seconds,
        "startup_seconds": fixed,
        "raw_events_per_s": plan.events / seconds if seconds else None,
        "events_per_s": adjusted_rate(plan.events - TINY_EVENTS, seconds, fixed),
        # the same from Flink's net runtime of the job (no JVM start, no submission): a
        # cross-check for rows whose work is short against the start-up's noise
        "net_events_per_s": adjusted_rate(
            plan.events - TINY_EVENTS,
            _net_seconds(full),
            _net_seconds(tiny),
        ),
    }


def _net_seconds(runs: list[dict]) -> float | None:
    """Median of the runs' Flink net runtimes in seconds; None when a run has none."""
    if not runs or any(r.get("net_runtime_ms") is None for r in runs):
        return None
    return median([r["net_runtime_ms"] / 1000 for r in runs])


def summarize_runs(plan: Plan, results: dict[str, list[dict]]) -> dict[str, dict]:
    """Medians per measurement group from the individual run results. A group whose every
    run failed still gets an entry (``runs`` 0, no rate), so the table says so."""
    ok = {g: [r for r in rs if "error" not in r] for g, rs in results.items()}
    summary: dict[str, dict] = {}
    keys = ["passthrough"] + [f"{g}-p{p}" for g in ("throughput", "store") for p in (1, 2)]
    for key in keys:
        if key not in results:
            continue
        full, tiny = ok.get(key, []), ok.get(f"{key}-tiny", [])
        failed = len(results[key]) + len(results.get(f"{key}-tiny", [])) - len(full) - len(tiny)
        entry = _adjusted_entry(plan, full, tiny, failed)
        if key == "passthrough":
            entry["parallelism"] = PASSTHROUGH_PARALLELISM
            entry["records_written"] = median([r["records_written"] for r in full])
        if key.startswith("store") and full:
            rows = median([r["rows_written"] for r in full])
            tiny_rows = median([r["rows_written"] for r in tiny]) or 0
            seconds, fixed = entry["seconds"], entry["startup_seconds"]
            entry["rows_written"] = rows
            entry["raw_rows_per_s"] = rows / seconds if rows and seconds else None
            entry["rows_per_s"] = adjusted_rate((rows or 0) - tiny_rows, seconds, fixed)
        summary[key] = entry
    for p in (1, 2):
        ratios = paired_ratios(
            results.get(f"throughput-p{p}", []),
            results.get(f"throughput-p{p}-tiny", []),
            results.get(f"store-p{p}", []),
            results.get(f"store-p{p}-tiny", []),
            plan.events,
        )
        if ratios and f"store-p{p}" in summary:
            summary[f"store-p{p}"]["paired_ratios"] = ratios
    # every job row against the passthrough (runs of one round paired), p2 against p1
    passthrough = summary.get("passthrough")
    for key in keys[1:]:
        entry = summary.get(key)
        if entry is None:
            continue
        if passthrough is not None:
            pairs = paired_rate_ratios(
                results.get(key, []),
                results.get(f"{key}-tiny", []),
                results.get("passthrough", []),
                results.get("passthrough-tiny", []),
                plan.events,
            )
            entry["vs_passthrough"] = ratio_summary(
                pairs,
                rate_ratio(entry["events_per_s"], passthrough["events_per_s"]),
                PASSTHROUGH_TARGETS.get(key),
            )
        p1 = summary.get(key.replace("-p2", "-p1"))
        if key.endswith("-p2") and p1 is not None:
            pairs = paired_rate_ratios(
                results.get(key, []),
                results.get(f"{key}-tiny", []),
                results.get(key.replace("-p2", "-p1"), []),
                results.get(key.replace("-p2", "-p1-tiny"), []),
                plan.events,
            )
            entry["vs_p1"] = ratio_summary(
                pairs, rate_ratio(entry["events_per_s"], p1["events_per_s"]), P2_OVER_P1_TARGET
            )
    for group, key in (
        ("lateness", "lateness_ms"),
        ("lateness-noclock", "lateness_ms"),
        ("lull", "lateness_ms"),
        ("freshness", "freshness_ms"),
    ):
        runs = ok.get(group, [])
        if not runs:
            continue
        entry = {
            stat: median([r[key][stat] for r in runs])
            for stat in ("count", "p50", "p95", "p99", "max")
        }
        entry["runs"] = len(runs)
        entry["produced_per_s"] = median([r["produced"] / r["produce_seconds"] for r in runs])
        if group == "freshness":
            entry["lateness_p95"] = median([r["lateness_ms"]["p95"] for r in runs])
        summary[group] = entry
    for tms, slots in CLUSTER_SHAPES:
        runs = ok.get(f"cluster-{tms}x{slots}", [])
        if runs:
            summary[f"cluster-{tms}x{slots}"] = {
                "runs": len(runs),
                "events": plan.events,
                "parallelism": runs[0]["parallelism"],
                "events_per_s": median([r["events_per_s"] for r in runs]),
                "restarts": max(r["restarts"] for r in runs),
            }
            if "passthrough" in summary:
                # ratio of the medians only: these runs come after all the others, and their
                # rate is a slope, not the full-minus-tiny rate
                summary[f"cluster-{tms}x{slots}"]["vs_passthrough"] = ratio_summary(
                    [],
                    rate_ratio(
                        summary[f"cluster-{tms}x{slots}"]["events_per_s"],
                        summary["passthrough"]["events_per_s"],
                    ),
                )
    runs = ok.get("burst", [])
    if runs:
        summary["burst"] = {
            "runs": len(runs),
            "events": median([r["accounting"]["events"] for r in runs]),
            "lost": max(r["accounting"]["lost"] for r in runs),
            # events of the units that are not in the events topic read back at the end:
            # lost by the producer or the broker, upstream of the job
            "missing_in_topic": max(r["accounting"].get("missing_in_topic") or 0 for r in runs),
            "idempotence": runs[0].get("idempotence", True),
            "unexpected": max(r["accounting"]["unexpected"] for r in runs),
            "late": max(r["accounting"]["late"] for r in runs),
            "restarts": max((r.get("restarts") or 0) for r in runs),
            "burst_events": median([r["phases"]["burst"]["events"] for r in runs]),
            "burst_events_per_s": median([r["phases"]["burst"]["events_per_s"] for r in runs]),
            "drain_seconds": median([r.get("drain_seconds") for r in runs]),
            "capacity_events_per_s": median([r.get("capacity_events_per_s") for r in runs]),
            "burst_over_capacity": median([r.get("burst_over_capacity") for r in runs]),
            "backlog_p50_before_ms": median([r["backlog_ms"]["before_burst"]["p50"] for r in runs]),
            "backlog_max_ms": median([r["backlog_ms"]["from_burst_on"]["max"] for r in runs]),
            "normal_bound_ms": runs[0]["lateness_ms"]["normal_bound_ms"],
        }
        for how in ("emitted", "read"):
            summary["burst"][how] = {
                "p95_before": median([r["lateness_ms"][how]["before_burst"]["p95"] for r in runs]),
                "max": median([r["lateness_ms"][how]["from_burst_on"]["max"] for r in runs]),
                # a run that never recovered makes the median "never"
                "recovery_s": None
                if any(r["lateness_recovery_s"][how] is None for r in runs)
                else median([r["lateness_recovery_s"][how] for r in runs]),
            }
    runs = ok.get("send_rate", [])
    if runs:
        summary["send_rate"] = {
            "runs": len(runs),
            **{
                key: median([r[key] for r in runs])
                for key in (
                    "send_rate",
                    "parallelism",
                    "burst",
                    "released",
                    "deferred",
                    "bucket",
                    "max_per_s",
                    "max_per_s_after_bucket",
                    "arrival_seconds",
                    "drain_seconds",
                    "expected_drain_seconds",
                    "achieved_per_s",
                )
            },
            # the worst run
            **{key: max(r[key] for r in runs) for key in ("lost", "duplicates", "out_of_order")},
        }
        summary["send_rate"]["verdict"] = send_rate_verdict(summary["send_rate"])
    if any(group.startswith("collector-") for group in results):
        from bench import collector

        summary.update(collector.summarize(results))
    return summary


def send_rate_verdict(s: dict[str, Any]) -> str:
    """The send-rate row's verdict. "holds": nothing lost, doubled or reordered; no second
    with more than a token bucket allows (the buckets + one second at the rate, +1 per
    subtask for a token refilled at a window's edge); and the drain after the buckets no
    faster than the rate (2 % for the clock). Once every request has arrived a second holds
    about the rate, not at most the rate: a timer that fires late (a busy task thread, a GC
    pause) releases the tokens that accrued meanwhile at once, as a token bucket does."""
    if s["lost"] or s["duplicates"] or s["out_of_order"]:
        return "LOST, DOUBLED OR REORDERED"
    if s["max_per_s"] > s["bucket"] + s["send_rate"] + s["parallelism"]:
        return "ABOVE THE BUCKET"
    if (s["achieved_per_s"] or 0) > 1.02 * s["send_rate"]:
        return "FASTER THAN THE RATE"
    return "holds"


def _throughput_text(s: dict[str, Any]) -> str:
    """Events, adjusted and raw events/s of a full-minus-tiny entry of
    :func:`summarize_runs`, or that every run failed."""
    failed = f"; {s['failed']} runs failed" if s["failed"] else ""
    if not s["runs"]:
        return f"{s['events']:>9,} events  FAILED (every run; logs in {LOG_DIR})"
    return (
        f"{s['events']:>9,} events  {_rate(s['events_per_s']):>12} (raw "
        f"{_rate(s['raw_events_per_s'])} incl. start-up {s['startup_seconds'] or 0:.1f} s"
        f"{failed})"
    )


def format_table(plan: Plan, summary: dict[str, dict], date: str) -> str:
    cores = os.cpu_count()
    lines = [
        f"inboxflow bench — {cores} cores — {date} — median of {plan.runs}"
        + (" — QUICK (smoke sizes, not comparable)" if plan.quick else "")
    ]
    s = summary.get("passthrough")
    if s:
        lines.append(
            f"passthrough, Java only, p{s['parallelism']}  "
            + _throughput_text(s)
            + (
                f"; {s['records_written']:,.0f} records written, counted; from Flink's net "
                f"runtime {_rate(s['net_events_per_s'])}"
                if s["records_written"] is not None
                else ""
            )
        )
    for group, label in (("throughput", "store off"), ("store", "store on ")):
        for p in (1, 2):
            s = summary.get(f"{group}-p{p}")
            if s is None:
                continue
            line = f"throughput, {label}, p{p}   " + _throughput_text(s)
            if group == "store" and s["runs"]:
                line += f"  ClickHouse {_rate(s['rows_per_s'], 'rows/s')}"
            lines.append(line)
            versus = [
                format_ratio(s[key], what)
                for key, what in (("vs_passthrough", "passthrough"), ("vs_p1", "p1"))
                if key in s
            ]
            if versus:
                lines.append("  " + "; ".join(versus))
    for p in (1, 2):
        off, on = summary.get(f"throughput-p{p}"), summary.get(f"store-p{p}")
        if off and on and off["events_per_s"] and on["events_per_s"]:
            ratio = on["events_per_s"] / off["events_per_s"]
            verdict = "ok" if ratio >= STORE_TARGET_RATIO else "BELOW TARGET"
            pairs = ", ".join(f"{r:.0%}" for r in on.get("paired_ratios", []))
            lines.append(
                f"store on / store off, p{p}   {ratio:.0%} "
                f"(target >= {STORE_TARGET_RATIO:.0%}: {verdict}; "
                f"runs made in pairs: {pairs or 'n/a'})"
            )
    mini = summary.get("throughput-p2", {}).get("events_per_s")
    for tms, slots in CLUSTER_SHAPES:
        s = summary.get(f"cluster-{tms}x{slots}")
        if s is None:
            continue
        versus = f", {s['events_per_s'] / mini:.2f}x the mini-cluster p2" if mini else ""
        lines.append(
            f"throughput, store off, standalone cluster {tms} TM x {slots} slot, "
            f"p{s['parallelism']}  {s['events']:>9,} events  {_rate(s['events_per_s']):>12} "
            f"(slope of records into the customer operator, 10-90 %{versus}; "
            f"restarts {s['restarts']})"
        )
        if "vs_passthrough" in s:
            lines.append("  " + format_ratio(s["vs_passthrough"], "passthrough"))
    s = summary.get("lateness")
    if s:
        lines.append(
            f"reminder lateness, p{LIVE_PARALLELISM}, {plan.rate:,}/s  "
            f"{s['count']:>6,.0f} reminders  "
            f"p50 {_ms(s['p50'])}  p95 {_ms(s['p95'])}  p99 {_ms(s['p99'])}  "
            f"max {_ms(s['max'])}  (out-of-orderness bound {OUT_OF_ORDERNESS})"
        )
    s = summary.get("lateness-noclock")
    if s:
        lines.append(
            f"  the same without clock events  {s['count']:>6,.0f} reminders  "
            f"p50 {_ms(s['p50'])}  p95 {_ms(s['p95'])}  p99 {_ms(s['p99'])}  "
            f"max {_ms(s['max'])}  (after the stream only the lull rule moves the watermark: "
            f"reminders due in the silence wait for the idleness timeout)"
        )
    s = summary.get("lull")
    if s:
        lines.append(
            f"reminder lateness after a lull (due {LULL_DUE_AFTER} into silence, no clock)  "
            f"{s['count']:>3,.0f} reminders  p50 {_ms(s['p50'])}  max {_ms(s['max'])}"
        )
    s = summary.get("freshness")
    if s:
        verdict = (
            "ok" if s["p95"] is not None and s["p95"] < FRESHNESS_TARGET_P95_MS else "ABOVE TARGET"
        )
        lines.append(
            f"profile freshness, p{LIVE_PARALLELISM}, {plan.rate:,}/s  {s['count']:>6,.0f} rows  "
            f"p50 {_ms(s['p50'])}  p95 {_ms(s['p95'])}  p99 {_ms(s['p99'])}  "
            f"max {_ms(s['max'])}  (target p95 < {FRESHNESS_TARGET_P95_MS / 1000:.0f} s: "
            f"{verdict})"
        )
    s = summary.get("burst")
    if s:

        def recovery(how: str) -> str:
            value = s[how]["recovery_s"]
            return "NEVER (within the run)" if value is None else f"{value:.1f} s"

        lines.append(
            f"burst, p{LIVE_PARALLELISM}, {plan.rate:,}/s + {s['burst_events']:,.0f} at once  "
            f"{s['events']:,.0f} events, lost {s['lost']:.0f} (never in the topic "
            f"{s['missing_in_topic']:.0f}), late {s['late']:.0f}, "
            f"restarts {s['restarts']:.0f}; burst {_rate(s['burst_events_per_s'])} = "
            f"{(s['burst_over_capacity'] or 0):.1f}x capacity "
            f"({_rate(s['capacity_events_per_s'])}), drained in "
            f"{(s['drain_seconds'] or 0):.1f} s; send -> output delay p50 before "
            f"{_ms(s['backlog_p50_before_ms'])}, max {_ms(s['backlog_max_ms'])}"
        )
        lines.append(
            f"  reminder lateness after the burst (normal: 2 s window p95 <= "
            f"{_ms(s['normal_bound_ms'])}): emitted p95 before {_ms(s['emitted']['p95_before'])}, "
            f"max {_ms(s['emitted']['max'])}, normal {recovery('emitted')} after the burst; "
            f"read by the bench p95 before {_ms(s['read']['p95_before'])}, max "
            f"{_ms(s['read']['max'])}, normal {recovery('read')} after"
        )
    s = summary.get("send_rate")
    if s:
        lines.append(
            f"send rate, p{s['parallelism']:.0f}, limit {s['send_rate']:,.0f}/s, "
            f"{s['burst']:,.0f} requests at once  {s['released']:,.0f} released (lost "
            f"{s['lost']}, doubled {s['duplicates']}, out of order {s['out_of_order']}), "
            f"{s['deferred']:,.0f} deferred; most in any second {s['max_per_s']:,.0f} "
            f"(buckets {s['bucket']:,.0f} at once), {s['max_per_s_after_bucket']:,.0f} once "
            f"all had arrived (in {s['arrival_seconds'] or 0:.2f} s); drained in "
            f"{s['drain_seconds'] or 0:.2f} s (the rate allows {s['expected_drain_seconds']:.2f} "
            f"s) = {_rate(s['achieved_per_s'], 'req/s')} after the buckets: {s['verdict']}"
        )
    if any(key.startswith("collector-") for key in summary):
        from bench import collector

        lines += collector.format_lines(summary, cores)
    return "\n".join(lines)


@contextlib.contextmanager
def _silenced(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop things


def bench(plan: Plan) -> int:
    from job.dev import gen, kafka_io
    from job.dev.broker import TansuBroker

    signal.signal(signal.SIGTERM, _on_sigterm)
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True)
    date = dt.datetime.now().astimezone().date().isoformat()  # today, local (as date.today())
    started = time.monotonic()
    work_root = Path(tempfile.mkdtemp(prefix="inboxflow-bench-"))
    results: dict[str, list[dict]] = {}
    runs_log: list[dict] = []
    try:
        with _silenced("kafka"):  # refused connections until the broker listens
            broker = TansuBroker(log_path=LOG_DIR / "tansu.log").start()
        with broker:
            _create_topics(broker.bootstrap, _topics())
            stops: dict[int, int] = {}
            tiny_stops: dict[int, int] = {}
            expected: tuple[int, int] | None = None
            if {"passthrough", "throughput", "store", "cluster"} & set(plan.measurements):
                print(
                    f"producing {plan.events:,} events ({CUSTOMERS:,} customers, seed "
                    f"{SEED}) to {broker.bootstrap} ...",
                    flush=True,
                )
                t0 = time.monotonic()
                records = gen.generate(SEED, CUSTOMERS, plan.events, gen.DEFAULT_START_MS)
                deliveries = kafka_io.produce(
                    broker.bootstrap, "events", ((r.key, r.value, None) for r in records)
                )
                print(f"  produced in {time.monotonic() - t0:.1f} s", flush=True)
                ends = kafka_io.end_offsets_from_deliveries(deliveries)
                tiny_ends = kafka_io.end_offsets_from_deliveries(deliveries[:TINY_EVENTS])
                stops = {p: ends.get(p, 0) for p in range(PARTITIONS)}
                tiny_stops = {p: tiny_ends.get(p, 0) for p in range(PARTITIONS)}
                # what every bounded run reads: the passthrough must write exactly that
                expected = (records_below(deliveries, stops), records_below(deliveries, tiny_stops))
            planned = list(_runs(plan, broker.bootstrap, stops, tiny_stops, expected))
            for n, (group, name, spec, timeout) in enumerate(planned, 1):
                print(f"[{n}/{len(planned)}] {name} ...", end=" ", flush=True)
                t0 = time.monotonic()
                result = run_child(spec, name, work_root, timeout)
                print(f"{_describe(result)} ({time.monotonic() - t0:.0f} s)", flush=True)
                results.setdefault(group, []).append(result)
                runs_log.append({"group": group, "name": name, **result})
            if "cluster" in plan.measurements:
                for group, name, result in _cluster_runs(plan, broker.bootstrap, work_root):
                    results.setdefault(group, []).append(result)
                    runs_log.append({"group": group, "name": name, **result})
            if "collector" in plan.measurements:
                for group, name, result in _collector_runs(plan, broker.bootstrap, work_root):
                    results.setdefault(group, []).append(result)
                    runs_log.append({"group": group, "name": name, **result})
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    summary = summarize_runs(plan, results)
    table = format_table(plan, summary, date)
    failed = [r["name"] for r in runs_log if "error" in r]
    out = {
        "date": date,
        "cores": os.cpu_count(),
        "plan": asdict(plan),
        "customers": CUSTOMERS,
        "seed": SEED,
        "tiny_events": TINY_EVENTS,
        "out_of_orderness": OUT_OF_ORDERNESS,
        "abandon_after": ABANDON_AFTER,
        "total_seconds": time.monotonic() - started,
        "summary": summary,
        "runs": runs_log,
        "failed": failed,
    }
    (RESULTS_DIR / "latest.json").write_text(json.dumps(out, indent=2))
    print("\n" + table)
    print(
        f"\n{time.monotonic() - started:.0f} s in total; results in "
        f"{RESULTS_DIR / 'latest.json'}; run logs in {LOG_DIR}"
    )
    if failed:
        print(f"FAILED runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    p.add_argument(
        "--events",
        type=int,
        help="events for the throughput runs "
        "(default 200,000: runs of 30 s and more; 5,000 with --quick)",
    )
    p.add_argument("--rate", type=int, default=1000, help="live events/s (lateness, freshness)")
    p.add_argument(
        "--live-seconds", type=int, help="seconds of live production (default 25; 10 with --quick)"
    )
    p.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated subset of {','.join(MEASUREMENTS)}",
    )
    p.add_argument(
        "--burst-events",
        type=int,
        help=f"events sent at once in the burst run (default {BURST_EVENTS:,}; "
        f"{BURST_EVENTS_QUICK:,} with --quick)",
    )
    p.add_argument(
        "--pure-events",
        type=int,
        help="events for the pure per-event path (default 200,000; 20,000 with --quick)",
    )
    p.add_argument(
        "--collector-seconds",
        type=float,
        help="measured seconds per collector run after a 2 s warm-up (default 10, 3 with --quick)",
    )
    p.add_argument(
        "--collector-connections",
        type=int,
        help="concurrent keep-alive connections of the collector row (default 16)",
    )
    p.add_argument("--quick", action="store_true", help="smoke-test sizes")
    p.add_argument(
        "--no-idempotence",
        action="store_true",
        help="burst run: produce the steady phases and the clock with "
        "enable_idempotence=False, acks=all (see bench/README.md)",
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(MEASUREMENTS)
    if unknown:
        p.error(f"--only: unknown measurement {min(unknown)!r}")
    if args.runs < 1 or args.rate < 1 or (args.events is not None and args.events <= TINY_EVENTS):
        p.error(f"need --runs >= 1, --rate >= 1 and --events > {TINY_EVENTS}")
    if args.burst_events is not None and args.burst_events < 1:
        p.error("need --burst-events >= 1")
    if args.pure_events is not None and args.pure_events < 1:
        p.error("need --pure-events >= 1")
    if args.collector_seconds is not None and args.collector_seconds <= 0:
        p.error("need --collector-seconds > 0")
    if args.collector_connections is not None and args.collector_connections < 1:
        p.error("need --collector-connections >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.child_out)
    quiet_logging()
    plan = Plan(
        # enough events for a steady state well beyond start-up (rates: docs/PERFORMANCE.md)
        events=args.events or (5_000 if args.quick else 200_000),
        runs=args.runs,
        rate=args.rate,
        live_seconds=args.live_seconds or (10 if args.quick else 25),
        # reminders due after the last live event need the watermark to pass
        # last event + abandon_after (5 s) + out-of-orderness (2 s)
        clock_seconds=10,
        measurements=tuple(m for m in MEASUREMENTS if m in args.only.split(",")),
        quick=args.quick,
        idempotence=not args.no_idempotence,
        burst_events=args.burst_events or (BURST_EVENTS_QUICK if args.quick else BURST_EVENTS),
        collector_seconds=args.collector_seconds,
        collector_connections=args.collector_connections,
    )
    if "collector" in plan.measurements:
        seconds, connections = collector_settings(plan)
        plan = replace(plan, collector_seconds=seconds, collector_connections=connections)
    failed = 0
    if "pure" in plan.measurements:
        from bench import pure

        events = args.pure_events or (pure.EVENTS_QUICK if args.quick else pure.EVENTS)
        failed = pure.main_pure(events, plan.runs)
        if plan.measurements == ("pure",):
            return failed
    return bench(plan) or failed


if __name__ == "__main__":
    sys.exit(main())
