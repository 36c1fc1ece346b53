"""Hostile records inside the real job: a few hundred fuzzed Kafka values (fixed seed) mixed
into a scripted story on the real broker, with the shipped restart strategy.

The story (customers ``fz-*``, anchored two hours after the wall clock so it is live data):
A abandons a cart (step 1 due S+1h), B buys the cart it filled, C abandons a cart 5 minutes
after A (due S+1h05m); then one page view per partition at S+1h11m moves every partition's
watermark to S+1h06m - 1 ms (out-of-orderness 5 min). Expected: step 1 to A and to C,
nothing to B, no step 2 (due a day later).

The fuzzed records are produced in between. Each one must be accounted for: either applied
(the customer function's ``events_valid`` gauge) or on the DLQ with the reason the
validator gives for the text the job sees; none may raise (``processing_errors`` 0) and the
job must not restart once. Fuzzed records whose event time could move the watermark into the
story's hours are left out of the mix (counted), since the story's outcomes depend on it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from kafka.partitioner.default import murmur2

from job.broker import TansuBroker
from job.config import load_config
from job.kafka_io import create_topics, produce
from tests.conftest import DAY, HOUR, MINUTE, cart_add, identify, page_view, purchase, raw
from tests.e2e.conftest import OutputReader, running_job
from tests.fuzzing import fuzzed_records
from udfs.customer import KIND_REQUEST, CustomerCore, Step
from udfs.journey import request_id
from udfs.validation import Invalid

ROOT = Path(__file__).resolve().parents[2]
SEED = 9
FUZZED = 400
PARTITIONS = 2
CAMPAIGN = "abandoned_cart"
WAIT_FOR_JOB_S = 180
QUIET_S = 8
# Java's String.strip() drops Character.isWhitespace characters; Python's str.strip() also
# drops these four, which Java keeps.
_JAVA_KEEPS = "\x85\xa0\u2007\u202f"
_JAVA_WHITESPACE = "".join(c for c in map(chr, range(0x3000 + 1)) if c.isspace()
                           and c not in _JAVA_KEEPS)
_EPOCH_MS = re.compile(rb"[0-9]{12,19}")
_DATE = re.compile(rb"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]")


def partition_of(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def clock_keys() -> list[str]:
    """One customer id per partition, for the page views that move each watermark."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < PARTITIONS:
        keys.setdefault(partition_of(f"fz-clock-{n}"), f"fz-clock-{n}")
        n += 1
    return [keys[p] for p in range(PARTITIONS)]


def could_move_watermark(value: bytes | None, lo_ms: int, hi_ms: int) -> bool:
    """True when any number or date in ``value`` could be an event time in [lo, hi]: the JVM
    reads event time from a partly parsed document too, so this looks at every candidate."""
    if not value:
        return False
    for match in _EPOCH_MS.finditer(value):
        if lo_ms <= int(match.group()) <= hi_ms:
            return True
    for match in _DATE.finditer(value):
        try:
            day = datetime(*map(int, match.groups()))
        except ValueError:
            continue
        ms = int(day.timestamp() * 1000)
        if lo_ms - 2 * DAY <= ms <= hi_ms + 2 * DAY:
            return True
    return False


def jvm_key(text: str) -> str:
    """The key io.inboxflow.flink.EnvelopeExtractor reads (for texts Python parses too)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return ""
    value = doc.get("customer_id") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return value.strip(_JAVA_WHITESPACE)


class Harness:
    """The customer function's commit rules over CustomerCore, in memory: the expectation
    for what the job must emit for the same records (in production order per customer)."""

    def __init__(self, core: CustomerCore) -> None:
        self.core = core
        self.state: dict[str, tuple] = {}
        self.timer: dict[str, int] = {}
        self.requests: dict[str, dict] = {}
        self.dlq_reasons: Counter[str] = Counter()
        self.applied = 0

    def _commit(self, key: str, step: Step) -> None:
        if step.timers is not None:
            self.timer.pop(key, None)
            if step.timers[1] is not None:
                self.timer[key] = step.timers[1]
        if step.state is not None:
            self.state[key] = step.state
        for kind, _, _, _, payload in step.outputs:
            value = json.loads(payload)
            if kind == KIND_REQUEST:
                self.requests[value["request_id"]] = value
            elif kind == 2:
                self.dlq_reasons[value["reason"]] += 1

    def event(self, value: bytes | None, now: int) -> None:
        text = (value or b"").decode("utf-8", "replace")
        key = jvm_key(text)
        event = self.core.validate(key, text, now)
        if type(event) is Step:
            self._commit(key, event)
            return
        self.applied += 1
        raw_state = self.state.get(key, (None, None, None))
        self._commit(key, self.core.on_event(event, text, raw_state, -(2**63), -1, now))

    def fire(self, watermark: int, now: int) -> None:
        while due := sorted((t, k) for k, t in self.timer.items() if t <= watermark):
            ts, key = due[0]
            del self.timer[key]
            self._commit(key, self.core.on_timer(key, ts, self.state[key], now))


@pytest.mark.slow
def test_fuzzed_records_inside_the_story_change_nothing_and_stop_nothing(
        broker: TansuBroker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {t: f"fz-{run}.{t}" for t in ("events", "dlq", "requests", "outcomes")}
    create_topics(broker.bootstrap, {topics["events"]: PARTITIONS, topics["dlq"]: 1,
                                     topics["requests"]: 1, topics["outcomes"]: 1})
    cfg = load_config(env={}, overrides={
        "kafka": {"bootstrap_servers": broker.bootstrap, "starting_offsets": "earliest",
                  "group_id": f"fz-{run}",
                  "topics": {"events": topics["events"], "dlq": topics["dlq"],
                             "email_requests": topics["requests"],
                             "outcomes": topics["outcomes"]}},
        "watermarks": {"out_of_orderness": "5m", "idleness": "1s"},
        "clickhouse": {"enabled": False},
    })
    now = int(time.time() * 1000)
    s = (now // MINUTE + 120) * MINUTE  # the story's start: live, two hours ahead
    clocks = clock_keys()
    story = [
        identify("fz-A", s, email="ann@example.com", first_name="Ann"),
        cart_add("fz-A", s, "p1", 12.5, 2, "cart-a", name="Mug"),
        identify("fz-B", s, email="bob@example.com", first_name="Bob"),
        cart_add("fz-B", s + 10 * MINUTE, cart_id="cart-b"),
        purchase("fz-B", s + 20 * MINUTE, cart_id="cart-b", order_id="o-b"),
        identify("fz-C", s, email="cy@example.com", first_name="Cy"),
        cart_add("fz-C", s + 5 * MINUTE, "p2", 4.0, 1, "cart-c", name="Spoon"),
    ]
    finale = [page_view(key, s + 71 * MINUTE) for key in clocks]
    final_watermark = s + 66 * MINUTE - 1

    drawn = fuzzed_records(SEED, FUZZED)
    fuzz = [v for v in drawn if not could_move_watermark(v, now - DAY, s + 2 * HOUR)]
    assert len(fuzz) >= 300, f"only {len(fuzz)} of {len(drawn)} fuzzed records are usable"
    # interleave: the story's events spread among the fuzzed records, clocks last
    records: list[tuple[str | None, bytes | None]] = []
    step = len(fuzz) // len(story)
    for i, value in enumerate(fuzz):
        if i % step == 0 and i // step < len(story):
            event = story[i // step]
            records.append((event["customer_id"], raw(event).encode()))
        records.append((_fuzz_key(value), value))
    records += [(e["customer_id"], raw(e).encode()) for e in finale]
    assert sum(1 for key, _ in records if key and key.startswith("fz-")) == len(story) + 2

    harness = Harness(CustomerCore(
        _settings(cfg), cfg.template_dir, cfg.links.cart_base_url, 0, cfg.schema_dir,
        cfg.limits.max_event_bytes, cfg.limits.max_future_ms))
    for _, value in records:
        harness.event(value, now)
    harness.fire(final_watermark, now)

    reader = OutputReader(broker.bootstrap, [topics["requests"], topics["dlq"]])
    try:
        with running_job(cfg, tmp_path / "checkpoints") as job:
            deliveries = produce(broker.bootstrap, topics["events"],
                                 [(k, v, None) for k, v in records])
            assert [p for p, _ in deliveries[-PARTITIONS:]] == list(range(PARTITIONS))
            expected_dlq = sum(harness.dlq_reasons.values())
            reader.wait_for(lambda r: len(r.of(topics["dlq"])) >= expected_dlq
                            and len(r.of(topics["requests"])) >= len(harness.requests),
                            "every DLQ record and reminder", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)
            applied = _gauge(job, "events_valid")
            errors = _gauge(job, "processing_errors")
            restarts = job.restarts()
    finally:
        reader.close()

    requests = [r.value for r in reader.of(topics["requests"])]
    story_requests = sorted((r["customer_id"], r["step"], r["request_id"], r["to"], r["subject"])
                            for r in requests if r["customer_id"].startswith("fz-"))
    assert story_requests == sorted([
        ("fz-A", 1, request_id(CAMPAIGN, "fz-A", "cart-a", s, 1), "ann@example.com",
         "Ann, you left something in your cart"),
        ("fz-C", 1, request_id(CAMPAIGN, "fz-C", "cart-c", s + 5 * MINUTE, 1),
         "cy@example.com", "Cy, you left something in your cart"),
    ])
    assert len({r["request_id"] for r in requests}) == len(requests)  # no duplicates
    assert {(r["request_id"], r["customer_id"], r["step"], r["to"]) for r in requests} == {
        (r["request_id"], r["customer_id"], r["step"], r["to"])
        for r in harness.requests.values()}

    dlq = [r.value for r in reader.of(topics["dlq"])]
    assert Counter(d["reason"] for d in dlq) == harness.dlq_reasons
    assert not any(d["customer_id"] and d["customer_id"].startswith("fz-") for d in dlq)
    # every record is accounted for: applied, or on the DLQ
    assert applied == harness.applied
    assert applied + len(dlq) == len(records)
    assert errors == 0
    assert restarts == 0


def _fuzz_key(value: bytes | None) -> str | None:
    """The Kafka key a producer would use: the customer id it meant, if readable."""
    key = jvm_key((value or b"").decode("utf-8", "replace"))
    return key or None


def _settings(cfg):
    from job.pipeline import journey_settings

    return journey_settings(cfg)


def _gauge(job, name: str) -> int:
    """The customer function's gauge summed over subtasks, once the REST server has it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        value = job.monitor.operator_metric(name)
        if value is not None:
            return value
        time.sleep(1)
    raise AssertionError(f"gauge {name} never reported")
