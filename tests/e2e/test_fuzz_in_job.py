"""Hostile records inside the real job: a few hundred fuzzed Kafka values (fixed seed) mixed
into a scripted story on the real broker, with the shipped restart strategy.

Everything happens in one 4-minute window of event time, W = [F, F + 4m), F two days ago:
the story (customers ``fz-*``: A abandons a cart at F, step 1 due F+1h; B buys the cart it
filled; C abandons a cart at F+3m, due F+1h03m) and the fuzzed events, interleaved. The
window is shorter than the out-of-orderness bound (5 min), so no event of it is ever behind
the watermark, and the outcome cannot depend on when watermarks happen to arrive. Then one
page view per partition at F+1h10m moves every watermark to F+1h05m - 1 ms: every step 1
is due, no step 2 (a day later).

Expected: step 1 to A and to C, nothing to B, and for the fuzzed customers exactly what the
pure path (CustomerCore) gives for the text and key the JVM's own envelope code hands the
customer function. Every record is accounted for: applied (the customer function's
``events_valid`` counter) or on the DLQ with the reason the pure path gives; nothing raises
(``processing_errors`` 0) and the job never restarts. Fuzzed records whose JVM event time
lies after the window, and valid ones outside it, are left out (at most a fifth): after it
they would move the watermark, before it they would be late, and for a late event the
outcome does depend on whether its customer's timer fired first (the property tests cover
those).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import produce
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.factories import (
    CAMPAIGN,
    MIN_WATERMARK,
    MINUTE,
    cart_add,
    cart_only,
    customer_core,
    identify,
    keys_by_partition,
    page_view,
    purchase,
    raw,
)
from tests.fuzzing import fuzzed_records
from tests.integration.envelope import JvmEnvelope
from udfs.clock import wall_ms
from udfs.core.batch import EVENT, TIMER, Batch, Entry
from udfs.core.contract import Kind
from udfs.core.customer import CustomerCore, Step
from udfs.core.journey import request_id

SEED = 9
FUZZED = 500
PARTITIONS = 2
WAIT_FOR_JOB_S = 180
QUIET_S = 8
WINDOW = 4 * MINUTE


class Harness:
    """The customer operator over the pure batch function, in memory, one record per batch:
    the expectation for what the job must emit for the same records (in production order
    per customer)."""

    def __init__(self, core: CustomerCore, envelope: JvmEnvelope) -> None:
        self.core = core
        self.batch = Batch(core)
        self.envelope = envelope
        self.state: dict[str, bytes] = {}
        self.timer: dict[str, int] = {}
        self.requests: dict[str, dict] = {}
        self.dlq_reasons: Counter[str] = Counter()
        self.dlq_by_payload: dict[str, str] = {}
        self.applied = 0

    def _apply(self, key: str, entry: Entry, now: int) -> None:
        result = self.batch.run([entry], {key: self.state.get(key)}, MIN_WATERMARK, now)
        for _, blob in result.states:
            if blob is None:
                self.state.pop(key, None)
            else:
                self.state[key] = blob
        for _, _, register in result.timers:
            self.timer.pop(key, None)
            if register is not None:
                self.timer[key] = register
        for kind, _, _, payload in result.outputs:
            if kind == Kind.STORE:
                continue
            value = json.loads(payload)
            if kind == Kind.REQUEST:
                self.requests[value["request_id"]] = value
            elif kind == Kind.DLQ:
                self.dlq_reasons[value["reason"]] += 1
                self.dlq_by_payload[value["payload"]] = value["reason"]

    def event(self, value: bytes | None, now: int) -> None:
        key, text = self.envelope.view(value)
        valid = self.core.counts["events_valid"]
        self._apply(key, (EVENT, key, 0, text, -1), now)
        self.applied += self.core.counts["events_valid"] - valid

    def fire(self, watermark: int, now: int) -> None:
        while due := sorted((t, k) for k, t in self.timer.items() if t <= watermark):
            ts, key = due[0]
            del self.timer[key]
            self._apply(key, (TIMER, key, ts, None, 0), now)


@pytest.mark.slow
def test_fuzzed_records_inside_the_story_change_nothing_and_stop_nothing(
    broker: TansuBroker, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    cfg, topics = job_on_fresh_topics(
        broker,
        f"fz-{run}",
        PARTITIONS,
        {"watermarks": {"out_of_orderness": "5m", "idleness": "1s"}, **cart_only()},
    )
    now = wall_ms()
    f = (now // MINUTE - 2 * 24 * 60) * MINUTE  # the window's start: two days ago
    story = [
        identify("fz-A", f, email="ann@example.com", first_name="Ann"),
        cart_add("fz-A", f, "p1", 12.5, 2, "cart-a", name="Mug"),
        identify("fz-B", f, email="bob@example.com", first_name="Bob"),
        cart_add("fz-B", f + MINUTE, cart_id="cart-b"),
        purchase("fz-B", f + 2 * MINUTE, cart_id="cart-b", order_id="o-b"),
        identify("fz-C", f, email="cy@example.com", first_name="Cy"),
        cart_add("fz-C", f + 3 * MINUTE, "p2", 4.0, 1, "cart-c", name="Spoon"),
    ]
    # one customer per partition: their page views move each partition's watermark
    clocks = [keys[0] for keys in keys_by_partition(PARTITIONS, 1, "fz-clock-")]
    finale = [page_view(key, f + 70 * MINUTE) for key in clocks]
    final_watermark = f + 65 * MINUTE - 1
    fuzz = fuzzed_records(SEED, FUZZED, start=f, span=WINDOW)
    # interleaved: the story's events spread among the fuzzed records, the clocks last
    values: list[bytes | None] = []
    every = len(fuzz) // len(story)
    for i, value in enumerate(fuzz):
        if i % every == 0 and i // every < len(story):
            values.append(raw(story[i // every]).encode())
        values.append(value)

    reader = OutputReader(broker.bootstrap, [topics["requests"], topics["dlq"]])
    try:
        with running_job(cfg, tmp_path / "checkpoints") as job:
            # The expectation: the JVM's own envelope code (through the gateway) and
            # CustomerCore. Every record is keyed by the customer id the job reads, as a
            # producer keys by customer: one customer's records stay in order.
            envelope = JvmEnvelope(cfg.limits.max_future_ms)
            envelopes = [envelope.envelope(v) for v in values]
            core = customer_core(store_shards=0)  # the job's journey: cfg changes no part of it
            keep = [_in_window(core.validate(k, text, now), t, f) for k, t, text in envelopes]
            assert keep.count(False) <= FUZZED // 5, f"{keep.count(False)} left out"
            records = [
                (k or None, v)
                for v, (k, _, _), kept in zip(values, envelopes, keep, strict=True)
                if kept
            ]
            records += [(e["customer_id"], raw(e).encode()) for e in finale]
            assert sum(1 for k, _ in records if k and k.startswith("fz-")) == len(story) + 2
            harness = Harness(customer_core(store_shards=0), envelope)
            for _, value in records:
                harness.event(value, now)
            harness.fire(final_watermark, now)

            deliveries = produce(
                broker.bootstrap, topics["events"], [(k, v, None) for k, v in records]
            )
            assert [p for p, _ in deliveries[-PARTITIONS:]] == list(range(PARTITIONS))
            reader.wait_for(
                lambda r: {v.key for v in r.of(topics["requests"])} >= {"fz-A", "fz-C"},
                "the story's reminders",
                WAIT_FOR_JOB_S,
                job,
            )
            reader.drain(QUIET_S, job)
            applied = _gauge(job, "events_valid")
            errors = _gauge(job, "processing_errors")
            restarts = job.restarts()
    finally:
        reader.close()

    requests = [r.value for r in reader.of(topics["requests"])]
    story_requests = sorted(
        (r["customer_id"], r["step"], r["request_id"], r["to"], r["subject"])
        for r in requests
        if r["customer_id"].startswith("fz-")
    )
    assert story_requests == sorted(
        [
            (
                "fz-A",
                1,
                request_id(CAMPAIGN, "fz-A", "cart-a", f, 1),
                "ann@example.com",
                "Ann, you left something in your cart",
            ),
            (
                "fz-C",
                1,
                request_id(CAMPAIGN, "fz-C", "cart-c", f + 3 * MINUTE, 1),
                "cy@example.com",
                "Cy, you left something in your cart",
            ),
        ]
    )
    assert len({r["request_id"] for r in requests}) == len(requests)  # no duplicates
    assert {(r["request_id"], r["customer_id"], r["step"], r["to"]) for r in requests} == {
        (r["request_id"], r["customer_id"], r["step"], r["to"]) for r in harness.requests.values()
    }

    dlq = [r.value for r in reader.of(topics["dlq"])]
    got = Counter(d["reason"] for d in dlq)
    differing = [
        (d["reason"], harness.dlq_by_payload.get(d["payload"]), d["payload"][:300])
        for d in dlq
        if harness.dlq_by_payload.get(d["payload"]) != d["reason"]
    ]
    assert got == harness.dlq_reasons, differing
    assert not any(d["customer_id"] and d["customer_id"].startswith("fz-") for d in dlq)
    # every record is accounted for: applied, or on the DLQ
    assert applied == harness.applied
    assert applied + len(dlq) == len(records)
    assert errors == 0
    assert restarts == 0


def _in_window(validated: dict | Step, jvm_time: int, start: int) -> bool:
    """The JVM's event time (which moves the watermark) is not after the window, and the
    record is rejected (it touches no state) or stamped inside the window on both sides."""
    end = start + WINDOW
    if jvm_time >= end:
        return False
    if type(validated) is Step:
        return True
    return start <= jvm_time and start <= validated["timestamp"] < end


def _gauge(job, name: str) -> int:
    """The customer function's counter summed over subtasks, once the REST server has it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        value = job.monitor.operator_metric(name)
        if value is not None:
            return value
        time.sleep(1)
    raise AssertionError(f"gauge {name} never reported")
