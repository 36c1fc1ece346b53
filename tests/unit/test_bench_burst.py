"""Pure helpers of the bench's burst measurement: when reminder lateness is back to normal,
the scripted units and the accounting of every event by the output it must produce.

(A file of its own, not tests/unit/test_bench.py, which other work was editing at the same
time; the two can be merged.)"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.run import (
    EVENTS_PER_UNIT,
    UNIT_EVENTS,
    Plan,
    ProducerLog,
    _runs,
    account_units,
    check_topic,
    kafka_client_warnings,
    missing_units,
    recovered_after,
    unit_count,
    unit_event_ids,
    unit_kind,
    unit_records,
)
from tests.factories import SCHEMA_DIR, T0
from udfs.core.validation import EventValidator, Invalid

NOW = T0
BOUND = 3000


def steady(start_ms: int, end_ms: int, lateness_ms: float, every_ms: int = 100):
    return [(t, lateness_ms) for t in range(start_ms, end_ms, every_ms)]


def test_lateness_never_above_the_bound_after_the_burst_recovers_at_once():
    samples = steady(0, 10_000, 2100)
    assert recovered_after(samples, since_ms=5000, bound_ms=BOUND) == 0.0


def test_recovery_is_measured_to_the_first_good_window_after_the_last_bad_one():
    # late until 8 s, then normal: the 2 s window ending at t holds (t - 2000, t]
    samples = steady(0, 8000, 9000) + steady(8000, 20_000, 2000)
    # a window holds 20 samples; its p95 (nearest rank: the 19th) is within the bound while
    # at most one is late: the window ending at 9,700 holds 7,800 and 7,900 (bad), the one
    # ending at 9,800 only 7,900 (good)
    got = recovered_after(samples, since_ms=5000, bound_ms=BOUND)
    assert got == pytest.approx(4.8)


def test_a_relapse_counts_only_the_last_bad_window():
    samples = (
        steady(0, 6000, 9000)
        + steady(6000, 12_000, 2000)
        + steady(12_000, 13_000, 9000)
        + steady(13_000, 30_000, 2000)
    )
    got = recovered_after(samples, since_ms=5000, bound_ms=BOUND)
    assert got is not None and got > 12_000 / 1000 - 5  # after the relapse, not the first dip
    assert got == pytest.approx((14_800 - 5000) / 1000)


def test_still_late_at_the_end_of_the_run_is_never():
    samples = steady(0, 5000, 2000) + steady(5000, 10_000, 9000)
    assert recovered_after(samples, since_ms=5000, bound_ms=BOUND) is None
    assert recovered_after(steady(0, 4000, 2000), since_ms=5000, bound_ms=BOUND) is None
    assert recovered_after([], since_ms=0, bound_ms=BOUND) is None


def test_sparse_windows_are_not_judged():
    # one reminder every 1.5 s: never min_count (5) in a 2 s window, nothing to judge
    samples = [(t, 9000) for t in range(0, 30_000, 1500)]
    assert recovered_after(samples, since_ms=0, bound_ms=BOUND) is None


def test_unit_cycle_and_event_counts():
    kinds = Counter(unit_kind(j) for j in range(1000))
    assert kinds == {"bad": 100, "buy": 400, "abandon": 500}
    events = sum(len(unit_records(j, NOW)) for j in range(1000))
    assert events == sum(UNIT_EVENTS[k] * n for k, n in kinds.items()) == 1000 * EVENTS_PER_UNIT
    assert unit_count(19_000) == 10_000 and unit_count(0) == 1


def test_unit_records_are_valid_events_except_the_bad_ones():
    """The accounting's premise: "buy" and "abandon" units pass validation, "bad" units are
    rejected as unknown_event_type; each record is keyed by its customer."""
    validator = EventValidator(SCHEMA_DIR)
    for j in range(20):
        for key, value in unit_records(j, NOW):
            result = validator.validate(value, NOW)
            assert key == json.loads(value)["customer_id"]
            if unit_kind(j) == "bad":
                assert isinstance(result, Invalid) and result.reason == "unknown_event_type"
            else:
                assert not isinstance(result, Invalid), result


def test_every_event_is_accounted_for_by_the_output_its_unit_must_produce():
    units = range(10)  # 0 bad, 1-4 buy, 5-9 abandon
    requests = [{"customer_id": f"bu-{j}"} for j in range(5, 10)]
    outcomes = [
        {"kind": "cancelled", "reason": "purchased", "customer_id": f"bu-{j}"} for j in range(1, 5)
    ] + [{"kind": "sent", "customer_id": "bu-5"}]
    dlq = [
        {"customer_id": "bu-0", "event_id": "bu-0-bad"},
        {"customer_id": None, "event_id": None},
    ]  # e.g. the bench's warm-up markers
    assert account_units(units, requests, outcomes, dlq) == {
        "units": 10,
        "events": 19,
        "accounted": 19,
        "lost": 0,
        "unexpected": 0,
        "late": 0,
        "missing_units": [],
    }

    # a reminder missing, a reminder to a buyer, a cancellation missing, a late event
    requests = [r for r in requests if r["customer_id"] != "bu-7"] + [{"customer_id": "bu-2"}]
    outcomes = [o for o in outcomes if o["customer_id"] != "bu-3"] + [{"kind": "late"}]
    assert account_units(units, requests, outcomes, dlq) == {
        "units": 10,
        "events": 19,
        "accounted": 15,
        "lost": 4,
        "unexpected": 1,
        "late": 1,
        "missing_units": ["bu-3", "bu-7"],
    }
    # outputs of customers outside the units count for nothing
    assert account_units(range(10, 20), requests, outcomes, dlq)["accounted"] == 0


def test_missing_units_lists_every_customer_without_its_output_in_unit_order():
    units = range(30)
    requests = [{"customer_id": f"bu-{j}"} for j in units if unit_kind(j) == "abandon"]
    outcomes = [
        {"kind": "cancelled", "reason": "purchased", "customer_id": f"bu-{j}"}
        for j in units
        if unit_kind(j) == "buy" and j not in (3, 22)
    ]
    dlq = [{"customer_id": f"bu-{j}", "event_id": f"bu-{j}-bad"} for j in (0, 10)]
    assert missing_units(units, requests, outcomes, dlq) == ["bu-3", "bu-20", "bu-22"]
    assert account_units(units, requests, outcomes, dlq)["missing_units"] == [
        "bu-3",
        "bu-20",
        "bu-22",
    ]


def test_unit_event_ids_are_those_of_the_unit_records():
    for j in range(20):
        assert unit_event_ids(j) == [json.loads(v)["event_id"] for _, v in unit_records(j, NOW)]


def topic_of(phases, leave_out=(), twice=(), skip_offsets=0):
    """(partition, offset, event id) as read back: every unit event once, in order, on
    partition 0, except ``leave_out``; ``twice`` stored twice; plus a record of another
    kind; ``skip_offsets`` offsets left unused before the last record."""
    ids = [eid for units in phases.values() for j in units for eid in unit_event_ids(j)]
    ids = [eid for eid in ids if eid not in leave_out] + list(twice) + [None]
    topic = [(0, offset, eid) for offset, eid in enumerate(ids)]
    last = topic.pop()
    return topic + [(0, last[1] + skip_offsets, None)]


def test_check_topic_everything_stored_once():
    phases = {"before": range(10), "burst": range(10, 20), "after": range(20, 30)}
    check = check_topic(phases, topic_of(phases), missing=[])
    assert check["missing_in_topic"] == 0 and check["duplicates_in_topic"] == 0
    assert check["missing_in_topic_per_phase"] == {"before": 0, "burst": 0, "after": 0}
    assert check["offset_gaps"] == {} and check["records_read"] == 57 + 1
    assert check["lost_units_inputs_missing"] == check["lost_units_inputs_in_topic"] == []


def test_check_topic_tells_inputs_never_stored_from_outputs_the_job_did_not_emit():
    phases = {"before": range(10), "burst": range(10, 20), "after": range(20, 30)}
    # bu-23 (buy) and bu-26 (abandon) lost their records upstream, bu-7 (abandon) is in the
    # topic but its reminder never came; bu-12's cart was stored twice; 3 offsets unused
    topic = topic_of(
        phases,
        leave_out={"bu-23-cart", "bu-23-buy", "bu-26-id"},
        twice=["bu-12-cart"],
        skip_offsets=3,
    )
    acked = {"bu-23-cart": (0, 5), "bu-23-buy": (0, 6)}
    check = check_topic(phases, topic, missing=["bu-7", "bu-23", "bu-26"], deliveries=acked)
    assert check["missing_in_topic"] == 3
    assert check["missing_in_topic_per_phase"] == {"before": 0, "burst": 0, "after": 3}
    assert check["duplicates_in_topic"] == 1
    assert check["offset_gaps"] == {0: {"first": 0, "last": 58, "skipped": 3}}  # 56 records
    assert check["lost_units_inputs_missing"] == ["bu-23", "bu-26"]
    assert check["lost_units_inputs_in_topic"] == ["bu-7"]
    assert (check["lost_events_inputs_missing"], check["lost_events_inputs_in_topic"]) == (4, 2)
    # acked at an offset that holds another record: the broker acked what it never stored
    assert check["absent_events"]["bu-23-cart"] == {
        "acked_at": [0, 5],
        "topic_holds_there": "bu-3-cart",
    }
    assert check["absent_events"]["bu-26-id"] == {}


def test_producer_log_counts_retries_and_duplicate_sequence_answers_only():
    import logging

    log = ProducerLog().install()
    sender = logging.getLogger(ProducerLog.SENDER)
    try:
        sender.debug("%s: Parsing produce response: %r", "p", "r")
        sender.debug(
            "%s: Received DUPLICATE_SEQUENCE_NUMBER for %s - records already "
            "committed, treating as success",
            "p",
            "t-0",
        )
        sender.warning("%s: Got error produce response on topic-partition %s, retrying", "p", "t-1")
    finally:
        log.uninstall()
    sender.warning("after uninstall")
    assert log.result()["counts"] == {
        "duplicate_sequence_number": 1,
        "kafka.producer.sender warning": 1,
    }
    assert len(log.result()["samples"]) == 2 and "t-0" in log.result()["samples"][0]
    assert sender.propagate


def test_kafka_client_warnings_of_the_flink_log():
    lines = [
        (
            "2026-12-01 12:08:56,633 INFO  org.apache.kafka.clients.producer.KafkaProducer [] - "
            "Instantiated an idempotent producer."
        ),
        (
            "2026-12-01 12:09:01,001 WARN  org.apache.kafka.clients.producer.internals.Sender [] - "
            "Got error produce response with correlation id 7 on topic-partition o-0, retrying"
        ),
        "2026-12-01 12:09:02,002 WARN  org.apache.flink.metrics.MetricGroup [] - Name collision",
        "2026-12-01 12:09:03,003 ERROR org.apache.kafka.clients.NetworkClient [] - boom",
    ]
    got = kafka_client_warnings(iter(lines), limit=1)
    assert got["count"] == 2 and len(got["samples"]) == 1 and "retrying" in got["samples"][0]


def quick_burst_plan(runs: int, **kw) -> Plan:
    return Plan(
        events=5000,
        runs=runs,
        rate=1000,
        live_seconds=10,
        clock_seconds=10,
        measurements=("burst",),
        quick=True,
        burst_events=10_000,
        **kw,
    )


def test_the_burst_run_is_planned_with_quick_sizes():
    runs = list(_runs(quick_burst_plan(2), "b", {}, {}))
    assert [name for _, name, _, _ in runs] == ["burst-1", "burst-2"]
    spec = runs[0][2]
    assert (
        spec["kind"],
        spec["store"],
        spec["burst_events"],
        spec["before_s"],
        spec["after_s"],
        spec["idempotence"],
    ) == ("burst", False, 10_000, 12, 25, True)
    plain = quick_burst_plan(1, idempotence=False)
    assert next(iter(_runs(plain, "b", {}, {})))[2]["idempotence"] is False
