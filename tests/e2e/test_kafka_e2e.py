"""The real job against the real Kafka wire protocol (Tansu), unbounded, parallelism 2, with
Kafka record timestamps three days after every event's own time.

Were the job to use Kafka's record time as event time (docs/DESIGN.md#event-time), the
watermark would jump three days ahead on the first record and every reminder, B's and C's
included, would go out at once. The source is unbounded and cancelled once the outputs settle,
because the end of a bounded input fires every pending timer (docs/DESIGN.md#end-of-input)
and would hide an early reminder.

Timeline (out-of-orderness 5 min, step 1 due 1 h after the last cart activity; the watermark
is the highest event time seen minus 5 min minus 1 ms), per-partition order = production order:

* phase 1a (watermark at most T0-1m): A, B, C identify at T0; A and C add to their carts at
  T0, B at T0+4m; malformed records, two of them the last record of each partition (markers);
* phase 1b (at most T0+58m): one shopper per partition adds at T0+1h02 and buys at T0+1h03;
  then C buys its cart at T0+59m (4 min out of order, within the bound);
* phase 2 (at most T0+1h03): the shoppers view a page at T0+1h08.

Expected: A's step 1 (due T0+1h) is sent only in phase 2; B's (due T0+1h04) is never sent:
it is due 1 minute after the final watermark; C's is cancelled by the late purchase.
Each phase is produced only once the previous one is visibly processed, so no event is ever
behind the watermark and the idleness timeout cannot reorder anything (exact outcomes).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest

from job.config import load_config
from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics, produce
from tests.e2e.conftest import (
    OutputReader,
    earliest_overrides,
    job_on_fresh_topics,
    running_job,
)
from tests.factories import (
    CAMPAIGN,
    DAY,
    EMAIL_REQUEST_SCHEMA,
    HOUR,
    MINUTE,
    T0,
    cart_add,
    cart_only,
    identify,
    kafka_record,
    negative_price,
    page_view,
    purchase,
    raw,
    teleport,
)
from udfs.clock import wall_ms
from udfs.core.instant import iso_ms
from udfs.core.journey import request_id

KAFKA_SKEW_MS = 3 * DAY  # every Kafka record time = event time + 3 days

# Customer ids chosen for their partition (murmur2 % 2): each partition holds customers and
# a shopper whose events move that partition's watermark; asserted from delivery reports.
A, B, C = "cust-a", "cust-b", "cust-c"  # partitions 1, 1, 0
SHOPPERS = ("shopper-1", "shopper-0")  # partitions 0, 1
EXPECTED_PARTITION = {A: 1, B: 1, C: 0, "shopper-1": 0, "shopper-0": 1}

WAIT_FOR_JOB_S = 120  # job start-up included; a loaded 2-core machine is slow
QUIET_S = 8  # nothing new for this long = the outputs have settled


def _record(event: dict) -> tuple[str, bytes, int]:
    return kafka_record(event, event["timestamp"] + KAFKA_SKEW_MS)


FAR_FUTURE = wall_ms() + 30 * DAY


def _bad(key: str | None, text: str) -> tuple[str | None, bytes, int]:
    return key, text.encode(), T0 + KAFKA_SKEW_MS


PHASE_1A = [
    _record(identify(A, T0, email="ann@example.com", first_name="Ann")),
    _record(cart_add(A, T0, "p1", 12.5, 2, "cart-a", name="Mug")),
    _record(identify(B, T0, email="bob@example.com", first_name="Bob")),
    _record(cart_add(B, T0 + 4 * MINUTE, cart_id="cart-b")),
    _record(identify(C, T0, email="cy@example.com", first_name="Cy")),
    _record(cart_add(C, T0, cart_id="cart-c")),
    # malformed input; x1 and x2 are the last records of partitions 1 and 0
    _bad(None, "not json at all"),
    # stamped a month ahead of the wall clock, on both partitions: rejected, and they must not
    # move the watermark (else every reminder would fire at once, early)
    _bad(A, raw(page_view(A, FAR_FUTURE, event_id="f1"))),
    _bad(C, raw(page_view(C, FAR_FUTURE, event_id="f2"))),
    _bad(A, teleport(A, "x1")),
    _bad(C, negative_price(C, "x2")),
]
C_PURCHASE = purchase(C, T0 + 59 * MINUTE, cart_id="cart-c", order_id="o-c")
PHASE_1B = [
    rec
    for shopper in SHOPPERS
    for rec in (
        _record(cart_add(shopper, T0 + 62 * MINUTE, cart_id=f"cart-{shopper}")),
        _record(
            purchase(shopper, T0 + 63 * MINUTE, cart_id=f"cart-{shopper}", order_id=f"o-{shopper}")
        ),
    )
] + [_record(C_PURCHASE)]
PHASE_2 = [_record(page_view(shopper, T0 + 68 * MINUTE)) for shopper in SHOPPERS]

EXPECTED_DLQ = {
    (None, "not_json", "$", None),
    (A, "unknown_event_type", "$.event_type", "x1"),
    (C, "schema_violation", "$.properties.price", "x2"),
    (A, "future_timestamp", "$.timestamp", "f1"),
    (C, "future_timestamp", "$.timestamp", "f2"),
}
PHASE_1_OUTCOMES = [
    ("cancelled", "shopper-0", "purchased", 1),
    ("cancelled", "shopper-1", "purchased", 1),
    ("cancelled", C, "purchased", 1),
]
PHASE_2_OUTCOMES = [("abandoned", A, None, None), ("sent", A, None, 1)]


def _outcomes(reader: OutputReader, topic: str) -> list[tuple]:
    return sorted(
        (r.value["kind"], r.key, r.value.get("reason"), r.value.get("step"))
        for r in reader.of(topic)
    )


def _send(bootstrap: str, topic: str, records: list) -> None:
    deliveries = produce(bootstrap, topic, records)
    for (key, _, _), (partition, _) in zip(records, deliveries, strict=True):
        if key in EXPECTED_PARTITION:  # the scenario's premise, not the job's behaviour
            assert partition == EXPECTED_PARTITION[key], (key, partition)


@pytest.mark.slow
def test_reminders_follow_event_time_not_kafka_time(broker: TansuBroker, tmp_path: Path) -> None:
    topics_cfg = load_config(env={}).kafka.topics
    events, dlq, requests, outcomes = (
        topics_cfg.events,
        topics_cfg.dlq,
        topics_cfg.email_requests,
        topics_cfg.outcomes,
    )
    create_topics(broker.bootstrap, {events: 2, dlq: 1, requests: 2, outcomes: 2})
    watermarks = {"out_of_orderness": "5m", "idleness": "1s"}
    cfg = load_config(
        env={},
        overrides=earliest_overrides(
            broker, f"e2e-{uuid.uuid4()}", watermarks=watermarks, **cart_only()
        ),
    )
    reader = OutputReader(broker.bootstrap, [requests, dlq, outcomes])
    started_ms = wall_ms()
    try:
        with running_job(cfg, tmp_path / "checkpoints") as job:
            # phase 1a: all cart activity; the DLQ markers show both partitions were read
            _send(broker.bootstrap, events, PHASE_1A)
            reader.wait_for(
                lambda r: len(r.of(dlq)) >= len(EXPECTED_DLQ),
                "the phase 1a DLQ records",
                WAIT_FOR_JOB_S,
                job,
            )

            # phase 1b: the watermark reaches T0+58m; then C's purchase arrives out of order
            _send(broker.bootstrap, events, PHASE_1B)
            reader.wait_for(
                lambda r: len(r.of(outcomes)) >= len(PHASE_1_OUTCOMES),
                "the phase 1b cancellations",
                WAIT_FOR_JOB_S,
                job,
            )
            reader.drain(QUIET_S, job)
            # A's reminder is due at T0+1h, the watermark is at most T0+58m: not yet
            assert reader.of(requests) == []
            assert _outcomes(reader, outcomes) == sorted(PHASE_1_OUTCOMES)

            # phase 2: the watermark reaches T0+1h03m: A's step 1 is due, B's is not
            _send(broker.bootstrap, events, PHASE_2)
            reader.wait_for(lambda r: len(r.of(requests)) >= 1, "A's reminder", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)  # B's or C's reminder would arrive meanwhile
            assert job.restarts() == 0
    finally:
        reader.close()

    (req,) = reader.of(requests)
    assert req.key == A
    # output records carry the time they were produced, not the (months old) event time
    finished_ms = wall_ms()
    for record in reader.records:
        assert started_ms <= record.timestamp_ms <= finished_ms, record.topic
    value = req.value
    assert (
        value["request_id"],
        value["campaign"],
        value["step"],
        value["customer_id"],
        value["to"],
        value["subject"],
    ) == (
        request_id(CAMPAIGN, A, "cart-a", T0, 1),
        CAMPAIGN,
        1,
        A,
        "ann@example.com",
        "Ann, you left something in your cart",
    )
    assert value["metadata"]["due_at_ms"] == T0 + HOUR
    assert value["trigger_event_time"] == iso_ms(T0 + HOUR) == "2026-01-05T09:00:00.000Z"
    assert value["metadata"]["cart_id"] == "cart-a"
    assert [(i["product_id"], i["quantity"], i["price"]) for i in value["metadata"]["items"]] == [
        ("p1", 2, 12.5)
    ]
    schema = json.loads(EMAIL_REQUEST_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(value)

    assert _outcomes(reader, outcomes) == sorted(PHASE_1_OUTCOMES + PHASE_2_OUTCOMES)
    assert all(r.key == r.value["customer_id"] for r in reader.of(outcomes))

    got_dlq = [
        (r.key, r.value["reason"], r.value["path"], r.value["event_id"]) for r in reader.of(dlq)
    ]
    assert sorted(got_dlq, key=str) == sorted(EXPECTED_DLQ, key=str)
    assert {r.value["payload"] for r in reader.of(dlq)} == {
        text.decode() for _, text, _ in PHASE_1A[6:]
    }

    # the premise: every input record carried a Kafka time three days off its event time
    sent = PHASE_1A + PHASE_1B + PHASE_2
    stored = consume(broker.bootstrap, events, until_count=len(sent), max_wait_s=30)
    assert sorted((r.value, r.timestamp_ms) for r in stored) == sorted(
        (text, ts) for _, text, ts in sent
    )


@pytest.mark.slow
def test_one_subtask_reading_two_partitions_keeps_a_watermark_per_partition(
    broker: TansuBroker, tmp_path: Path
) -> None:
    """Parallelism 1: one source subtask reads both partitions. Partition 0 is read first
    and runs ten hours ahead in event time; partition 1's events, read later, are not late,
    because the source keeps one watermark per partition and emits their minimum (idleness
    off, so the empty partition 1 holds the watermark back until it has data). A single
    watermark over the merged stream would count every partition-1 event as late."""
    cfg, topics = job_on_fresh_topics(
        broker,
        f"wm-{uuid.uuid4().hex[:8]}",
        2,
        {"watermarks": {"out_of_orderness": "5m", "idleness": "0s"}, **cart_only()},
    )
    events, dlq, requests, outcomes = (topics[t] for t in ("events", "dlq", "requests", "outcomes"))
    ahead = [  # partition 0
        _record(identify(C, T0, email="cy@example.com", first_name="Cy")),
        _record(cart_add(C, T0, cart_id="cart-c")),
        _record(page_view("shopper-1", T0 + 10 * HOUR)),
        _bad(C, negative_price(C, "x2")),
    ]
    behind = [  # partition 1
        _record(identify(A, T0, email="ann@example.com", first_name="Ann")),
        _record(cart_add(A, T0 + MINUTE, cart_id="cart-a")),
        _record(purchase(A, T0 + 30 * MINUTE, cart_id="cart-a", order_id="o-a")),
        _record(page_view("shopper-0", T0 + 10 * HOUR)),
    ]
    reader = OutputReader(broker.bootstrap, [requests, dlq, outcomes])
    try:
        with running_job(cfg, tmp_path / "checkpoints", parallelism=1) as job:
            _send(broker.bootstrap, events, ahead)
            reader.wait_for(
                lambda r: len(r.of(dlq)) == 1, "partition 0's DLQ marker", WAIT_FOR_JOB_S, job
            )
            reader.drain(QUIET_S, job)
            # partition 1 has no data yet: the watermark has not moved, C's step is not due
            assert reader.of(requests) == []
            assert _outcomes(reader, outcomes) == []

            _send(broker.bootstrap, events, behind)
            reader.wait_for(lambda r: len(r.of(requests)) >= 1, "C's reminder", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)
            assert job.restarts() == 0
    finally:
        reader.close()

    assert [
        (r.key, r.value["step"], r.value["metadata"]["cart_id"]) for r in reader.of(requests)
    ] == [(C, 1, "cart-c")]
    # no "late" outcome: A's purchase, 9.5 hours behind partition 0, cancels A's cart
    assert _outcomes(reader, outcomes) == sorted(
        [("abandoned", C, None, None), ("sent", C, None, 1), ("cancelled", A, "purchased", 1)]
    )
    assert [(r.key, r.value["event_id"]) for r in reader.of(dlq)] == [(C, "x2")]
