"""The pure abandoned-cart journey: timing, re-arming, cancelling, and state left behind."""

from __future__ import annotations

from tests.conftest import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    cart_add,
    cart_remove,
    identify,
    page_view,
    purchase,
    unsubscribe,
)
from udfs.journey import (
    CustomerLogic,
    CustomerState,
    Decision,
    JourneySettings,
    dump_cart,
    dump_journey,
    dump_profile,
    load_cart,
    load_journey,
    load_profile,
    request_id,
)

ABANDON_AFTER = HOUR
STEP_2_AFTER = DAY
NO_WATERMARK = -(2**63)
C = "c-1"


def logic() -> CustomerLogic:
    return CustomerLogic(JourneySettings(
        campaign="abandoned_cart",
        schedule=((ABANDON_AFTER, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2")),
    ))


def run(events, state=None, lg=None) -> tuple[CustomerState, list[Decision]]:
    lg = lg or logic()
    state = state or CustomerState()
    return state, [lg.on_event(state, e, NO_WATERMARK) for e in events]


def sent_steps(decisions) -> list[tuple[int, int]]:
    return [(t["step"], t["due_at"]) for d in decisions for t in d.triggers]


def test_cart_add_arms_a_single_timer_at_abandon_after():
    state, ds = run([identify(C, T0), cart_add(C, T0 + MINUTE)])
    assert ds[-1].timer == T0 + MINUTE + ABANDON_AFTER
    assert ds[0].timer is None
    assert state.journey.step == 1 and state.journey.armed_at == T0 + MINUTE


def test_reminder_due_exactly_at_abandon_after_and_not_one_ms_earlier():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    early = lg.on_timer(state, T0 + ABANDON_AFTER - 1)
    assert early.triggers == [] and early.timer == T0 + ABANDON_AFTER
    due = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert [(t["step"], t["to"], t["due_at"]) for t in due.triggers] == [
        (1, "alice@example.com", T0 + ABANDON_AFTER)]
    assert due.timer == T0 + STEP_2_AFTER


def test_next_event_one_ms_before_due_does_not_fire_but_at_due_fires_first():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    before = lg.on_event(state, page_view(C, T0 + ABANDON_AFTER - 1), NO_WATERMARK)
    assert before.triggers == []
    at_due = lg.on_event(state, cart_add(C, T0 + ABANDON_AFTER, product_id="p2"), NO_WATERMARK)
    # step 1 fired for the cart as it was, then the cart change re-armed from step 1
    assert [(t["step"], [i["product_id"] for i in t["items"]]) for t in at_due.triggers] == [
        (1, ["p1"])]
    assert at_due.timer == T0 + 2 * ABANDON_AFTER
    assert state.journey.step == 1


def test_cart_change_rearms_from_step_1_and_moves_the_timer():
    state, ds = run([identify(C, T0), cart_add(C, T0), cart_add(C, T0 + 30 * MINUTE, "p2")])
    assert ds[-1].timer == T0 + 30 * MINUTE + ABANDON_AFTER
    assert sent_steps(ds) == []
    assert state.cart.value == 20.0


def test_two_step_schedule_measured_from_last_cart_activity_then_state_cleared():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    d1 = lg.on_timer(state, T0 + ABANDON_AFTER)
    d2 = lg.on_timer(state, T0 + STEP_2_AFTER)
    assert sent_steps([d1, d2]) == [(1, T0 + ABANDON_AFTER), (2, T0 + STEP_2_AFTER)]
    assert d2.timer is None
    assert state.journey is None
    assert state.profile.journey_status == "completed"
    assert state.profile.emails_sent == 2
    # the cart itself stays open: the customer may still come back
    assert state.cart is not None


def test_end_of_input_fires_every_remaining_step_in_order():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    d = lg.on_timer(state, 2**63 - 1)
    assert sent_steps([d]) == [(1, T0 + ABANDON_AFTER), (2, T0 + STEP_2_AFTER)]
    assert state.journey is None and d.timer is None


def test_purchase_of_the_cart_cancels_and_clears_cart_and_journey():
    state, ds = run([identify(C, T0), cart_add(C, T0), purchase(C, T0 + 10 * MINUTE)])
    assert ds[-1].timer is None
    assert state.journey is None and state.cart is None
    assert [o["reason"] for o in ds[-1].outcomes if o["kind"] == "cancelled"] == ["purchased"]


def test_purchase_of_a_different_cart_does_not_cancel():
    state, ds = run([identify(C, T0), cart_add(C, T0, cart_id="cart-1"),
                     purchase(C, T0 + 10 * MINUTE, cart_id="cart-OTHER")])
    assert ds[-1].timer == T0 + ABANDON_AFTER
    assert state.journey is not None and state.cart.cart_id == "cart-1"


def test_any_purchase_cancels_when_the_cart_has_no_id():
    state, ds = run([identify(C, T0), cart_add(C, T0, cart_id=None),
                     purchase(C, T0 + MINUTE, cart_id="cart-9")])
    assert ds[-1].timer is None and state.cart is None and state.journey is None


def test_purchase_older_than_the_cart_activity_does_not_cancel():
    state, ds = run([identify(C, T0), cart_add(C, T0 + HOUR // 2),
                     purchase(C, T0 + MINUTE)])
    assert ds[-1].timer == T0 + HOUR // 2 + ABANDON_AFTER and state.journey is not None


def test_unsubscribe_cancels_and_suppresses_later_carts():
    state, ds = run([identify(C, T0), cart_add(C, T0), unsubscribe(C, T0 + MINUTE),
                     cart_add(C, T0 + 2 * MINUTE, "p2")])
    assert ds[2].timer is None and ds[3].timer is None
    assert state.journey is None and state.profile.unsubscribed
    assert [o["reason"] for o in ds[2].outcomes if o["kind"] == "cancelled"] == ["unsubscribed"]


def test_emptying_the_cart_cancels_and_clears_it():
    state, ds = run([identify(C, T0), cart_add(C, T0), cart_remove(C, T0 + MINUTE)])
    assert ds[-1].timer is None and state.cart is None and state.journey is None


def test_reminder_without_email_is_skipped_with_a_reason_and_journey_continues():
    lg = logic()
    state, _ = run([cart_add(C, T0)], lg=lg)
    d = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert d.triggers == []
    assert [(o["kind"], o["reason"]) for o in d.outcomes if o["kind"] == "skipped"] == [
        ("skipped", "no_email")]
    assert [r["status"] for t, r in d.rows if t == "email_requests"] == ["suppressed"]
    assert d.timer == T0 + STEP_2_AFTER


def test_request_id_is_deterministic_and_new_for_a_new_abandonment():
    lg = logic()
    s1, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    s2, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    r1 = lg.on_timer(s1, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    r2 = lg.on_timer(s2, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    assert r1 == r2 == request_id("abandoned_cart", C, "cart-1", T0, 1)
    lg.on_event(s1, cart_add(C, T0 + 3 * HOUR, "p2"), NO_WATERMARK)
    r3 = lg.on_timer(s1, T0 + 4 * HOUR).triggers[0]["request_id"]
    assert r3 == request_id("abandoned_cart", C, "cart-1", T0 + 3 * HOUR, 1) != r1


def test_duplicate_event_id_is_not_applied_twice():
    e = cart_add(C, T0, event_id="dup")
    state, ds = run([identify(C, T0), e, dict(e)])
    assert state.cart.items[0].quantity == 1
    assert [o["kind"] for o in ds[-1].outcomes] == ["duplicate"]
    assert ds[-1].timer == T0 + ABANDON_AFTER


def test_late_event_still_updates_the_profile_and_is_counted():
    lg = logic()
    state, _ = run([identify(C, T0)], lg=lg)
    d = lg.on_event(state, page_view(C, T0 - HOUR), watermark=T0)
    assert [o["kind"] for o in d.outcomes] == ["late"]
    assert state.profile.late_events == 1 and state.profile.first_seen == T0 - HOUR
    assert state.profile.event_counts == {"identify": 1, "page_view": 1}


def test_recovery_is_credited_to_the_last_reminder_within_the_window():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    rid = lg.on_timer(state, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    d = lg.on_event(state, purchase(C, T0 + 2 * HOUR, revenue=10.0), NO_WATERMARK)
    rows = [r for t, r in d.rows if t == "cart_recoveries"]
    assert rows == [{
        "customer_id": C, "cart_id": "cart-1", "order_id": "o1", "reminder_step": 1,
        "reminder_request_id": rid, "reminded_at": T0 + ABANDON_AFTER,
        "purchased_at": T0 + 2 * HOUR, "revenue": 10.0, "currency": "EUR",
        "seconds_to_purchase": 3600.0}]
    assert state.cart is None and state.journey is None and state.profile.last_reminder is None


def test_profile_snapshot_versions_strictly_increase():
    _, ds = run([identify(C, T0), page_view(C, T0 + 1), cart_add(C, T0 + 2)])
    versions = [r["version"] for d in ds for t, r in d.rows if t == "customer_profiles"]
    assert versions == [1, 2, 3]


def test_state_round_trips_through_its_json_form():
    lg = logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    lg.on_timer(state, T0 + ABANDON_AFTER)
    assert load_profile(dump_profile(state.profile)) == state.profile
    assert load_cart(dump_cart(state.cart)) == state.cart
    assert load_journey(dump_journey(state.journey)) == state.journey


def test_purchase_arriving_before_its_cart_event_still_prevents_the_reminder():
    # out of order within the bound: the purchase (T0+10m) is processed before the cart_add
    state, ds = run([identify(C, T0), purchase(C, T0 + 10 * MINUTE), cart_add(C, T0)])
    assert ds[-1].timer is None
    assert state.cart is None and state.journey is None


def test_an_older_purchase_does_not_block_a_newer_cart():
    _state, ds = run([identify(C, T0), purchase(C, T0), cart_add(C, T0 + MINUTE)])
    assert ds[-1].timer == T0 + MINUTE + ABANDON_AFTER


def test_store_rows_do_not_depend_on_whether_a_step_fired_by_timer_or_before_an_event():
    """A restore or a different watermark cadence may fire a due step inline instead of from
    its timer: the profile snapshots (and their versions) must be the same either way."""
    events = [identify(C, T0), cart_add(C, T0), page_view(C, T0 + 2 * DAY)]

    def rows(fire_timers: bool) -> list[tuple]:
        lg, state, out = logic(), CustomerState(), []
        for e in events:
            if fire_timers and state.journey is not None:
                while state.journey is not None and state.journey.due_at <= e["timestamp"]:
                    out += lg.on_timer(state, state.journey.due_at).rows
            out += lg.on_event(state, e, NO_WATERMARK).rows
        return [(t, r.get("version"), r.get("updated_at"), r.get("emails_sent"),
                 r.get("journey_status"), r.get("request_id")) for t, r in out]

    by_timer, inline = rows(True), rows(False)
    assert inline == by_timer
    profiles = [r for r in inline if r[0] == "customer_profiles"]
    assert [(v, at, sent, status) for _, v, at, sent, status, _ in profiles] == [
        (1, T0, 0, "idle"), (2, T0, 0, "waiting_step_1"),
        (3, T0 + ABANDON_AFTER, 1, "waiting_step_2"), (4, T0 + STEP_2_AFTER, 2, "completed"),
        (5, T0 + 2 * DAY, 2, "completed")]
