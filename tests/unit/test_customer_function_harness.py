"""The real Flink wrapper (``udfs.flink.customer_function.CustomerFunction``) driven through
``tests/harness.py``: what keyed state and which event-time timers it leaves behind.

What the wrapper documents (its class docstring) is what is asserted: one ``customer``
value (bytes, :func:`udfs.core.journey.encode_state`) whose ``profile`` is kept for every
customer once seen (there is no state TTL); ``cart`` while a cart is open (a journey that
ends by sending its last reminder, or by an unsubscribe, leaves the cart open: the customer
may still come back to it); ``journey`` only while a reminder is pending; and at most one
event-time timer per customer, exactly at the pending journey's due time. This is the plain
path (batches of one); tests/unit/test_batch.py covers batches of many.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgspec
import pytest

from tests.factories import (
    CAMPAIGN,
    DAY,
    HOUR,
    MINUTE,
    T0,
    cart_add,
    cart_remove,
    checkout_start,
    core_settings,
    identify,
    page_view,
    purchase,
    raw,
    teleport,
    unsubscribe,
)
from tests.harness import KeyedHarness
from udfs.clock import MAX_WATERMARK
from udfs.core.contract import Kind
from udfs.core.journey import CustomerState, decode_state, request_id
from udfs.flink.customer_function import CUSTOMER_STATE, CustomerFunction

PROFILE_STATE, CART_STATE, JOURNEY_STATE = "profile", "cart", "runs"

ANN = "ann"
EMAIL = "ann@example.com"


@pytest.fixture
def harness() -> Iterator[KeyedHarness]:
    """The wrapper of the shipped journey (steps 1 h and 1 day after the last cart
    activity), without a profile store."""
    with KeyedHarness(CustomerFunction(core_settings(store_shards=0))) as h:
        yield h


def send(h: KeyedHarness, event: dict) -> list[tuple]:
    return h.process(event["customer_id"], raw(event), event["timestamp"])


def abandon(h: KeyedHarness, cid: str = ANN, at: int = T0) -> None:
    """``cid`` identifies and fills cart ``cart-CID`` at ``at``: step 1 pending at +1h."""
    send(h, identify(cid, at, email=f"{cid}@example.com", first_name="Ann"))
    assert send(h, cart_add(cid, at, "p1", 12.5, 2, f"cart-{cid}")) == []
    assert h.timers(cid) == [at + HOUR]


def decoded(outputs: list[tuple]) -> list[tuple]:
    """(kind, key, what): an email request as (step, due at), an outcome as (kind, reason,
    step), a DLQ record as its reason."""
    got = []
    for element in outputs:
        kind, key, value = Kind(element[0]), element[2], json.loads(element[-1])
        if kind is Kind.REQUEST:
            got.append((kind.name, key, (value["step"], value["metadata"]["due_at_ms"])))
        elif kind is Kind.OUTCOME:
            got.append((kind.name, key, (value["kind"], value.get("reason"), value.get("step"))))
        else:
            got.append((kind.name, key, value["reason"]))
    return got


def requests_in(outputs: list[tuple]) -> list[dict]:
    return [json.loads(o[-1]) for o in outputs if o[0] == Kind.REQUEST]


def stored(h: KeyedHarness, cid: str = ANN) -> CustomerState:
    """The customer's state as Flink keeps it, decoded."""
    assert set(h.state(cid)) <= {CUSTOMER_STATE}
    return decode_state(h.state(cid).get(CUSTOMER_STATE))


def parts(h: KeyedHarness, cid: str = ANN) -> set[str]:
    """Which parts of the customer's state are kept."""
    state = stored(h, cid)
    return {name for name in (PROFILE_STATE, CART_STATE, JOURNEY_STATE) if getattr(state, name)}


def profile(h: KeyedHarness, cid: str = ANN) -> dict:
    p = stored(h, cid).profile
    assert p is not None
    return msgspec.structs.asdict(p)


def journey_due_at(h: KeyedHarness, cid: str = ANN) -> int | None:
    pending = stored(h, cid).run_of("abandoned_cart")
    return None if pending is None else pending.due_at


def test_state_is_one_bytes_value_declared_once(harness: KeyedHarness) -> None:
    assert harness.descriptors == {} and harness.keys() == set()  # declared on first use
    abandon(harness)
    assert list(harness.descriptors) == [CUSTOMER_STATE]
    assert type(harness.state(ANN)[CUSTOMER_STATE]) is bytes


def test_an_abandoned_cart_gets_every_step_then_no_journey_state_and_no_timer_remain(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    assert parts(harness) == {PROFILE_STATE, CART_STATE, JOURNEY_STATE}

    assert harness.advance_watermark(T0 + HOUR - 1) == []  # one ms early: nothing fires
    assert decoded(harness.advance_watermark(T0 + HOUR)) == [
        ("REQUEST", ANN, (1, T0 + HOUR)),
        ("OUTCOME", ANN, ("abandoned", None, None)),
        ("OUTCOME", ANN, ("sent", None, 1)),
    ]
    assert harness.timers(ANN) == [T0 + DAY] == [journey_due_at(harness)]

    assert decoded(harness.advance_watermark(T0 + DAY)) == [
        ("REQUEST", ANN, (2, T0 + DAY)),
        ("OUTCOME", ANN, ("sent", None, 2)),
        ("OUTCOME", ANN, ("completed", None, None)),
    ]
    # the journey is over: no journey state and no timer; the profile stays, and so does
    # the cart, which is still open
    assert harness.timers(ANN) == []
    assert parts(harness) == {PROFILE_STATE, CART_STATE}
    assert (profile(harness)["journey_status"], profile(harness)["emails_sent"]) == ("completed", 2)
    assert stored(harness).cart.cart_id == f"cart-{ANN}"
    assert harness.advance_watermark(MAX_WATERMARK) == []  # nothing left to fire
    assert harness.timer_peak == {ANN: 1}


def test_a_bounded_input_that_ends_fires_every_remaining_step_and_leaves_no_timer(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    fired = decoded(harness.advance_watermark(MAX_WATERMARK))
    assert [w for kind, _, w in fired if kind == "REQUEST"] == [(1, T0 + HOUR), (2, T0 + DAY)]
    assert (harness.timers(ANN), parts(harness)) == ([], {PROFILE_STATE, CART_STATE})


def test_a_purchase_cancels_the_journey_deletes_its_timer_and_clears_cart_and_journey(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    bought = send(harness, purchase(ANN, T0 + 10 * MINUTE, f"cart-{ANN}", 25.0))
    assert decoded(bought) == [("OUTCOME", ANN, ("cancelled", "purchased", 1))]
    assert harness.timers(ANN) == []
    assert parts(harness) == {PROFILE_STATE}
    assert profile(harness)["journey_status"] == "purchased"
    assert harness.advance_watermark(MAX_WATERMARK) == []  # the deleted timer never fires


def test_unsubscribing_cancels_the_journey_and_a_new_carts_step_is_suppressed(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    left = send(harness, unsubscribe(ANN, T0 + 5 * MINUTE))
    assert decoded(left) == [("OUTCOME", ANN, ("cancelled", "unsubscribed", 1))]
    assert harness.timers(ANN) == []
    assert parts(harness) == {PROFILE_STATE, CART_STATE}
    assert profile(harness)["unsubscribed"] is True

    # a new cart enters the journey again; its step is suppressed when due, with the reason
    assert send(harness, cart_add(ANN, T0 + HOUR, "p2", 3.0, 1, f"cart-{ANN}")) == []
    assert harness.timers(ANN) == [T0 + 2 * HOUR]
    assert decoded(harness.advance_watermark(MAX_WATERMARK)) == [
        ("OUTCOME", ANN, ("abandoned", None, None)),
        ("OUTCOME", ANN, ("skipped", "unsubscribed", 1)),
    ]
    assert harness.timers(ANN) == [] and JOURNEY_STATE not in parts(harness)


def test_emptying_the_cart_cancels_the_journey_and_clears_cart_and_journey(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    emptied = send(harness, cart_remove(ANN, T0 + MINUTE, "p1"))
    assert decoded(emptied) == [("OUTCOME", ANN, ("cancelled", "cart_emptied", 1))]
    assert (harness.timers(ANN), parts(harness)) == ([], {PROFILE_STATE})


def test_a_duplicate_event_changes_no_state_and_no_timer(harness: KeyedHarness) -> None:
    abandon(harness)
    first = cart_add(ANN, T0 + MINUTE, "p2", 5.0, 1, f"cart-{ANN}", event_id="dup-1")
    assert send(harness, first) == []
    before = (harness.state(ANN), harness.timers(ANN))
    assert before[1] == [T0 + MINUTE + HOUR]

    again = send(harness, dict(first))
    assert decoded(again) == [("OUTCOME", ANN, ("duplicate", "event id already processed", None))]
    assert (harness.state(ANN), harness.timers(ANN)) == before


def test_a_late_event_updates_the_profile_but_not_the_journey_or_its_timer(
    harness: KeyedHarness,
) -> None:
    abandon(harness)
    assert harness.advance_watermark(T0 + 30 * MINUTE) == []
    before = stored(harness)

    late = send(harness, page_view(ANN, T0 + MINUTE))  # behind the watermark
    reason = f"event time {T0 + MINUTE} behind watermark {T0 + 30 * MINUTE}"
    assert decoded(late) == [("OUTCOME", ANN, ("late", reason, None))]
    after = stored(harness)
    assert (after.cart, after.run_of("abandoned_cart")) == (
        before.cart,
        before.run_of("abandoned_cart"),
    )
    assert after.cart is not None and after.run_of("abandoned_cart") is not None
    counts = profile(harness)["event_counts"]
    assert counts == {"identify": 1, "cart_add": 1, "page_view": 1}
    assert harness.timers(ANN) == [T0 + HOUR]


def test_a_customer_has_at_most_one_timer_always_at_the_journey_due_time(
    harness: KeyedHarness,
) -> None:
    """Cart activity moves the timer (the old one is deleted), a fired step arms the next,
    and after every call the pending timers are exactly the journey's due time."""
    story = [
        identify(ANN, T0, email=EMAIL),
        cart_add(ANN, T0, "p1"),
        cart_add(ANN, T0 + 10 * MINUTE, "p2"),  # re-arms from step 1
        checkout_start(ANN, T0 + 20 * MINUTE),  # activity: re-arms again
        cart_remove(ANN, T0 + 30 * MINUTE, "p1"),  # one item left: re-arms
        page_view(ANN, T0 + 3 * HOUR),  # step 1 is due: it fires first
        cart_add(ANN, T0 + 4 * HOUR, "p3"),  # a new step 1
    ]
    for event in story:
        send(harness, event)
        due = journey_due_at(harness)
        assert harness.timers(ANN) == ([] if due is None else [due]), event["event_type"]
    assert harness.timers(ANN) == [T0 + 5 * HOUR]
    for watermark in (T0 + 5 * HOUR, T0 + 4 * HOUR + DAY):
        harness.advance_watermark(watermark)
        due = journey_due_at(harness)
        assert harness.timers(ANN) == ([] if due is None else [due])
    assert harness.timers(ANN) == [] and JOURNEY_STATE not in parts(harness)
    assert harness.timer_peak == {ANN: 1}
    steps = [(r["step"], r["request_id"]) for r in requests_in(harness.emitted)]
    assert steps == [
        (1, request_id(CAMPAIGN, ANN, "cart-1", T0 + 30 * MINUTE, 1)),
        (1, request_id(CAMPAIGN, ANN, "cart-1", T0 + 4 * HOUR, 1)),
        (2, request_id(CAMPAIGN, ANN, "cart-1", T0 + 4 * HOUR, 2)),
    ]


def test_customers_keep_their_own_state_and_timers(harness: KeyedHarness) -> None:
    abandon(harness, "ann", T0)
    abandon(harness, "bob", T0 + MINUTE)
    send(harness, purchase("ann", T0 + 2 * MINUTE, "cart-ann"))
    assert (harness.timers("ann"), harness.timers("bob")) == ([], [T0 + MINUTE + HOUR])
    assert parts(harness, "bob") == {PROFILE_STATE, CART_STATE, JOURNEY_STATE}
    fired = decoded(harness.advance_watermark(T0 + 2 * HOUR))
    assert [(key, what) for kind, key, what in fired if kind == "REQUEST"] == [
        ("bob", (1, T0 + MINUTE + HOUR))
    ]


def test_an_invalid_record_goes_to_the_dlq_and_leaves_no_state_and_no_timer(
    harness: KeyedHarness,
) -> None:
    assert decoded(harness.process("x", "not json", -1)) == [("DLQ", None, "not_json")]
    assert decoded(harness.process("x", teleport("x", "t"), T0)) == [
        ("DLQ", "x", "unknown_event_type")
    ]
    assert harness.keys() == set()


def test_the_counts_reach_the_metric_group_when_the_function_closes() -> None:
    with KeyedHarness(CustomerFunction(core_settings(store_shards=0))) as h:
        abandon(h)
        send(h, page_view(ANN, T0 + MINUTE, event_id="pv"))
        send(h, page_view(ANN, T0 + MINUTE, event_id="pv"))  # a duplicate
        h.advance_watermark(MAX_WATERMARK)
        assert h.metrics.value("journey_sent") == 0  # pushed every 1000 events, or at close
    assert [h.metrics.value(name) for name in ("events_valid", "journey_sent")] == [4, 2]
    assert [h.metrics.value("inboxflow", name) for name in ("duplicates", "late")] == [1, 0]
    assert h.metrics.value("inboxflow", "campaign=abandoned_cart", "step=2", "requests") == 1
