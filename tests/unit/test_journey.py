"""The pure abandoned-cart journey: timing, re-arming, cancelling, and state left behind."""

from __future__ import annotations

import pytest

from tests import factories as f
from tests.factories import (
    CAMPAIGN,
    DAY,
    HOUR,
    MAX_WATERMARK,
    MIN_WATERMARK,
    MINUTE,
    T0,
    cart_add,
    cart_remove,
    customer_logic,
    identify,
    page_view,
    purchase,
    unsubscribe,
)
from udfs.core import journey as j

ABANDON_AFTER = HOUR
STEP_2_AFTER = DAY
C = "c-1"


def run(events, state=None, lg=None) -> tuple[j.CustomerState, list[j.Decision]]:
    lg = lg or customer_logic()
    state = state or j.CustomerState()
    return state, [lg.on_event(state, e, MIN_WATERMARK) for e in events]


def sent_steps(decisions) -> list[tuple[int, int]]:
    return [(t["step"], t["due_at"]) for d in decisions for t in d.triggers]


def test_cart_add_arms_a_single_timer_at_abandon_after():
    state, ds = run([identify(C, T0), cart_add(C, T0 + MINUTE)])
    assert ds[-1].timer == T0 + MINUTE + ABANDON_AFTER
    assert ds[0].timer is None
    assert (
        state.run_of("abandoned_cart").step == 1
        and state.run_of("abandoned_cart").anchor == T0 + MINUTE
    )


def test_reminder_due_exactly_at_abandon_after_and_not_one_ms_earlier():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    early = lg.on_timer(state, T0 + ABANDON_AFTER - 1)
    assert early.triggers == [] and early.timer == T0 + ABANDON_AFTER
    due = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert [(t["step"], t["to"], t["due_at"]) for t in due.triggers] == [
        (1, "alice@example.com", T0 + ABANDON_AFTER)
    ]
    assert due.timer == T0 + STEP_2_AFTER


def test_next_event_one_ms_before_due_does_not_fire_but_at_due_fires_first():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    before = lg.on_event(state, page_view(C, T0 + ABANDON_AFTER - 1), MIN_WATERMARK)
    assert before.triggers == []
    at_due = lg.on_event(state, cart_add(C, T0 + ABANDON_AFTER, product_id="p2"), MIN_WATERMARK)
    # step 1 fired for the cart as it was, then the cart change re-armed from step 1
    assert [(t["step"], [i["product_id"] for i in t["items"]]) for t in at_due.triggers] == [
        (1, ["p1"])
    ]
    assert at_due.timer == T0 + 2 * ABANDON_AFTER
    assert state.run_of("abandoned_cart").step == 1


def test_cart_change_rearms_from_step_1_and_moves_the_timer():
    state, ds = run([identify(C, T0), cart_add(C, T0), cart_add(C, T0 + 30 * MINUTE, "p2")])
    assert ds[-1].timer == T0 + 30 * MINUTE + ABANDON_AFTER
    assert sent_steps(ds) == []
    assert state.cart.value == 20.0


def test_two_step_schedule_measured_from_last_cart_activity_then_state_cleared():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    d1 = lg.on_timer(state, T0 + ABANDON_AFTER)
    d2 = lg.on_timer(state, T0 + STEP_2_AFTER)
    assert sent_steps([d1, d2]) == [(1, T0 + ABANDON_AFTER), (2, T0 + STEP_2_AFTER)]
    assert d2.timer is None
    assert state.run_of("abandoned_cart") is None
    assert state.profile.journey_status == "completed"
    assert state.profile.emails_sent == 2
    # the cart itself stays open: the customer may still come back
    assert state.cart is not None


def test_end_of_input_fires_every_remaining_step_in_order():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    d = lg.on_timer(state, MAX_WATERMARK)
    assert sent_steps([d]) == [(1, T0 + ABANDON_AFTER), (2, T0 + STEP_2_AFTER)]
    assert state.run_of("abandoned_cart") is None and d.timer is None


def test_purchase_of_the_cart_cancels_and_clears_cart_and_journey():
    state, ds = run([identify(C, T0), cart_add(C, T0), purchase(C, T0 + 10 * MINUTE)])
    assert ds[-1].timer is None
    assert state.run_of("abandoned_cart") is None and state.cart is None
    assert [o["reason"] for o in ds[-1].outcomes if o["kind"] == "cancelled"] == ["purchased"]


def test_purchase_of_a_different_cart_does_not_cancel():
    state, ds = run(
        [
            identify(C, T0),
            cart_add(C, T0, cart_id="cart-1"),
            purchase(C, T0 + 10 * MINUTE, cart_id="cart-OTHER"),
        ]
    )
    assert ds[-1].timer == T0 + ABANDON_AFTER
    assert state.run_of("abandoned_cart") is not None and state.cart.cart_id == "cart-1"


def test_any_purchase_cancels_when_the_cart_has_no_id():
    state, ds = run(
        [identify(C, T0), cart_add(C, T0, cart_id=None), purchase(C, T0 + MINUTE, cart_id="cart-9")]
    )
    assert ds[-1].timer is None and state.cart is None and state.run_of("abandoned_cart") is None


def test_purchase_older_than_the_cart_activity_does_not_cancel():
    state, ds = run([identify(C, T0), cart_add(C, T0 + HOUR // 2), purchase(C, T0 + MINUTE)])
    assert (
        ds[-1].timer == T0 + HOUR // 2 + ABANDON_AFTER
        and state.run_of("abandoned_cart") is not None
    )


def test_unsubscribe_cancels_and_a_later_cart_reminder_is_recorded_as_suppressed():
    lg = customer_logic()
    state, ds = run(
        [
            identify(C, T0),
            cart_add(C, T0),
            unsubscribe(C, T0 + MINUTE),
            cart_add(C, T0 + 2 * MINUTE, "p2"),
        ],
        lg=lg,
    )
    assert ds[2].timer is None and state.profile.unsubscribed
    assert [o["reason"] for o in ds[2].outcomes if o["kind"] == "cancelled"] == ["unsubscribed"]
    # the later cart enters the journey; its step is suppressed when due, with the reason
    due = T0 + 2 * MINUTE + ABANDON_AFTER
    assert ds[3].timer == due
    d = lg.on_timer(state, due)
    assert d.triggers == [] and d.timer is None and state.run_of(CAMPAIGN) is None
    assert [(o["kind"], o.get("reason"), o["event_time"]) for o in d.outcomes] == [
        ("abandoned", None, due),
        ("skipped", "unsubscribed", due),
    ]
    assert [(r["status"], r["reason"], r["step"], r["due_at"]) for _, r in d.rows] == [
        ("suppressed", "unsubscribed", 1, due)
    ]
    assert state.profile.journey_status == "suppressed"


def test_emptying_the_cart_cancels_and_clears_it():
    state, ds = run([identify(C, T0), cart_add(C, T0), cart_remove(C, T0 + MINUTE)])
    assert ds[-1].timer is None and state.cart is None and state.run_of("abandoned_cart") is None


def test_reminder_without_email_is_skipped_with_a_reason_and_journey_continues():
    lg = customer_logic()
    state, _ = run([cart_add(C, T0)], lg=lg)
    d = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert d.triggers == []
    assert [(o["kind"], o["reason"]) for o in d.outcomes if o["kind"] == "skipped"] == [
        ("skipped", "no_email")
    ]
    assert [r["status"] for t, r in d.rows if t == "email_requests"] == ["suppressed"]
    assert d.timer == T0 + STEP_2_AFTER


def test_request_id_is_deterministic_and_new_for_a_new_abandonment():
    lg = customer_logic()
    s1, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    s2, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    r1 = lg.on_timer(s1, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    r2 = lg.on_timer(s2, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    assert r1 == r2 == j.request_id(CAMPAIGN, C, "cart-1", T0, 1)
    lg.on_event(s1, cart_add(C, T0 + 3 * HOUR, "p2"), MIN_WATERMARK)
    r3 = lg.on_timer(s1, T0 + 4 * HOUR).triggers[0]["request_id"]
    assert r3 == j.request_id(CAMPAIGN, C, "cart-1", T0 + 3 * HOUR, 1) != r1


def test_duplicate_event_id_is_not_applied_twice():
    e = cart_add(C, T0, event_id="dup")
    state, ds = run([identify(C, T0), e, dict(e)])
    assert state.cart.items[0].quantity == 1
    assert [o["kind"] for o in ds[-1].outcomes] == ["duplicate"]
    assert ds[-1].timer == T0 + ABANDON_AFTER


def test_late_event_still_updates_the_profile_and_is_counted():
    lg = customer_logic()
    state, _ = run([identify(C, T0)], lg=lg)
    d = lg.on_event(state, page_view(C, T0 - HOUR), watermark=T0)
    assert [o["kind"] for o in d.outcomes] == ["late"]
    assert state.profile.late_events == 1 and state.profile.first_seen == T0 - HOUR
    assert state.profile.event_counts == {"identify": 1, "page_view": 1}


def test_recovery_is_credited_to_the_last_reminder_within_the_window():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    rid = lg.on_timer(state, T0 + ABANDON_AFTER).triggers[0]["request_id"]
    d = lg.on_event(state, purchase(C, T0 + 2 * HOUR, revenue=10.0), MIN_WATERMARK)
    rows = [r for t, r in d.rows if t == "cart_recoveries"]
    assert rows == [
        {
            "customer_id": C,
            "cart_id": "cart-1",
            "order_id": "o1",
            "reminder_step": 1,
            "reminder_request_id": rid,
            "reminded_at": T0 + ABANDON_AFTER,
            "purchased_at": T0 + 2 * HOUR,
            "revenue": 10.0,
            "currency": "EUR",
            "seconds_to_purchase": 3600.0,
        }
    ]
    assert (
        state.cart is None
        and state.run_of("abandoned_cart") is None
        and state.profile.last_reminder is None
    )


def test_profile_snapshot_versions_strictly_increase():
    state, ds = run([identify(C, T0), page_view(C, T0 + 1), cart_add(C, T0 + 2)])
    assert [d.snapshot for d in ds] == [T0, T0 + 1, T0 + 2]
    assert state.profile.version == 3
    row = customer_logic().profile_row(state, ds[-1].snapshot)
    assert (row["version"], row["updated_at"], row["journey_status"]) == (
        3,
        T0 + 2,
        "waiting_step_1",
    )


def test_state_round_trips_through_its_json_form():
    lg = customer_logic()
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    lg.on_timer(state, T0 + ABANDON_AFTER)
    assert j.load_profile(j.dump_profile(state.profile)) == state.profile
    assert j.load_cart(j.dump_cart(state.cart)) == state.cart
    assert j.decode_state(j.encode_state(state)) == state


def test_purchase_arriving_before_its_cart_event_still_prevents_the_reminder():
    # out of order within the bound: the purchase (T0+10m) is processed before the cart_add
    state, ds = run([identify(C, T0), purchase(C, T0 + 10 * MINUTE), cart_add(C, T0)])
    assert ds[-1].timer is None
    assert state.cart is None and state.run_of("abandoned_cart") is None


def test_an_older_purchase_does_not_block_a_newer_cart():
    _state, ds = run([identify(C, T0), purchase(C, T0), cart_add(C, T0 + MINUTE)])
    assert ds[-1].timer == T0 + MINUTE + ABANDON_AFTER


def test_store_rows_do_not_depend_on_whether_a_step_fired_by_timer_or_before_an_event():
    """A restore or a different watermark cadence may fire a due step inline instead of from
    its timer: the profile snapshots (and their versions) must be the same either way."""
    events = [identify(C, T0), cart_add(C, T0), page_view(C, T0 + 2 * DAY)]

    def rows(fire_timers: bool) -> tuple[list[tuple], list[tuple]]:
        """(request rows, profile versions as (version, updated_at, emails sent, status))."""
        lg, state, out, versions = customer_logic(), j.CustomerState(), [], []

        def keep(d: j.Decision) -> None:
            out.extend((t, r["request_id"], r["step"], r["due_at"]) for t, r in d.rows)
            if d.snapshot is not None:
                row = lg.profile_row(state, d.snapshot)
                versions.append(
                    (row["version"], row["updated_at"], row["emails_sent"], row["journey_status"])
                )

        for e in events:
            if fire_timers and state.run_of("abandoned_cart") is not None:
                while (
                    state.run_of("abandoned_cart") is not None
                    and state.run_of("abandoned_cart").due_at <= e["timestamp"]
                ):
                    keep(lg.on_timer(state, state.run_of("abandoned_cart").due_at))
            keep(lg.on_event(state, e, MIN_WATERMARK))
        return out, versions

    (by_timer, timer_versions), (inline, inline_versions) = rows(True), rows(False)
    assert inline == by_timer and len(inline) == 2  # the two steps' request rows
    # the steps fired by timers made versions of their own; fired inline they are in the
    # event's decision, whose one row is the newest: the last version is the same
    assert timer_versions == [
        (1, T0, 0, "idle"),
        (2, T0, 0, "waiting_step_1"),
        (3, T0 + ABANDON_AFTER, 1, "waiting_step_2"),
        (4, T0 + STEP_2_AFTER, 2, "completed"),
        (5, T0 + 2 * DAY, 2, "completed"),
    ]
    assert inline_versions == [timer_versions[0], timer_versions[1], timer_versions[-1]]


# --- timing changes: state armed under one schedule, restored under another ---------------


def settings_logic(*schedule: tuple[int, str]) -> j.CustomerLogic:
    return j.CustomerLogic(f.cart_settings(*schedule))


OLD = ((ABANDON_AFTER, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))


def restored(state: j.CustomerState) -> j.CustomerState:
    """The state as a restore hands it over: through its encoded form."""
    return j.decode_state(j.encode_state(state))


def armed_under_old_schedule(*extra_events) -> j.CustomerState:
    """C identified, cart at T0, under OLD; step 1 pending at T0 + 1h."""
    state, _ = run([identify(C, T0), cart_add(C, T0), *extra_events], lg=settings_logic(*OLD))
    return restored(state)


def requests(decisions) -> list[tuple[int, int, str, str]]:
    return [
        (t["step"], t["due_at"], t["template"], t["request_id"])
        for d in decisions
        for t in d.triggers
    ]


def rid(step: int) -> str:
    return j.request_id(CAMPAIGN, C, "cart-1", T0, step)


def test_unchanged_schedule_the_reschedule_check_changes_nothing():
    lg = settings_logic(*OLD)
    state = armed_under_old_schedule()
    before = j.encode_state(state)
    d = lg.on_timer(state, j.RESCHEDULE_CHECK)
    assert (d.triggers, d.outcomes, d.rows, d.timer) == ([], [], [], T0 + ABANDON_AFTER)
    assert j.encode_state(state) == before


def test_lengthened_step_the_old_timer_fires_nothing_and_moves_to_the_new_due_time():
    lg = settings_logic((2 * HOUR, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    at_old_due = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert (at_old_due.triggers, at_old_due.outcomes, at_old_due.rows) == ([], [], [])
    assert at_old_due.timer == T0 + 2 * HOUR
    one_ms_early = lg.on_timer(state, T0 + 2 * HOUR - 1)
    assert one_ms_early.triggers == [] and one_ms_early.timer == T0 + 2 * HOUR
    due = lg.on_timer(state, T0 + 2 * HOUR)
    assert requests([due]) == [(1, T0 + 2 * HOUR, "abandoned_cart_1", rid(1))]
    assert due.timer == T0 + STEP_2_AFTER


def test_lengthened_step_an_event_between_the_old_and_new_due_time_fires_nothing():
    lg = settings_logic((2 * HOUR, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    d = lg.on_event(state, page_view(C, T0 + 90 * MINUTE), MIN_WATERMARK)
    assert d.triggers == [] and d.timer == T0 + 2 * HOUR


def test_lengthened_step_the_reschedule_check_moves_the_timer_at_once():
    lg = settings_logic((2 * HOUR, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    d = lg.on_timer(state, j.RESCHEDULE_CHECK)
    assert (d.triggers, d.outcomes, d.timer) == ([], [], T0 + 2 * HOUR)
    assert state.run_of("abandoned_cart").due_at == T0 + 2 * HOUR


def test_shortened_step_the_reschedule_check_moves_the_timer_to_the_new_earlier_time():
    lg = settings_logic((30 * MINUTE, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    check = lg.on_timer(state, j.RESCHEDULE_CHECK)
    assert (check.triggers, check.outcomes, check.timer) == ([], [], T0 + 30 * MINUTE)
    due = lg.on_timer(state, T0 + 30 * MINUTE)
    assert requests([due]) == [(1, T0 + 30 * MINUTE, "abandoned_cart_1", rid(1))]
    # the old timer (T0 + 1h), should it still fire, sends nothing again
    stale = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert (stale.triggers, stale.outcomes, stale.timer) == ([], [], T0 + STEP_2_AFTER)


def test_shortened_step_already_overdue_fires_with_the_first_watermark_after_the_check():
    """Due at T0 + 30m per the new schedule while the watermark is already at T0 + 50m: the
    check registers T0 + 30m, a timer in the past, which Flink fires with the next
    watermark; the request carries the new due time, once."""
    lg = settings_logic((30 * MINUTE, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule(page_view(C, T0 + 50 * MINUTE))
    assert lg.on_timer(state, j.RESCHEDULE_CHECK).timer == T0 + 30 * MINUTE
    fired = lg.on_timer(state, T0 + 30 * MINUTE)
    assert requests([fired]) == [(1, T0 + 30 * MINUTE, "abandoned_cart_1", rid(1))]


def test_shortened_step_without_the_check_fires_at_the_next_event_or_the_old_timer():
    """Without the restore-time check (process mode), the earlier due time is noticed by the
    customer's next event at or after it, else by the old timer; sent once either way."""
    lg = settings_logic((30 * MINUTE, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    by_event = armed_under_old_schedule()
    d = lg.on_event(by_event, page_view(C, T0 + 40 * MINUTE), MIN_WATERMARK)
    assert requests([d]) == [(1, T0 + 30 * MINUTE, "abandoned_cart_1", rid(1))]
    assert d.timer == T0 + STEP_2_AFTER

    early_event = armed_under_old_schedule()
    d = lg.on_event(early_event, page_view(C, T0 + 20 * MINUTE), MIN_WATERMARK)
    assert d.triggers == [] and d.timer == T0 + 30 * MINUTE

    by_old_timer = armed_under_old_schedule()
    d = lg.on_timer(by_old_timer, T0 + ABANDON_AFTER)
    assert requests([d]) == [(1, T0 + 30 * MINUTE, "abandoned_cart_1", rid(1))]
    assert lg.on_timer(by_old_timer, T0 + ABANDON_AFTER).triggers == []


def test_a_later_step_changed_while_step_1_is_pending_applies_after_step_1():
    lg = settings_logic((ABANDON_AFTER, "abandoned_cart_1"), (6 * HOUR, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    assert lg.on_timer(state, j.RESCHEDULE_CHECK).timer == T0 + ABANDON_AFTER
    d1 = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert d1.timer == T0 + 6 * HOUR
    d2 = lg.on_timer(state, T0 + 6 * HOUR)
    assert requests([d1, d2]) == [
        (1, T0 + ABANDON_AFTER, "abandoned_cart_1", rid(1)),
        (2, T0 + 6 * HOUR, "abandoned_cart_2", rid(2)),
    ]


def step_1_sent_under_old_schedule() -> j.CustomerState:
    lg = settings_logic(*OLD)
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=lg)
    assert requests([lg.on_timer(state, T0 + ABANDON_AFTER)])[0][0] == 1
    assert (
        state.run_of("abandoned_cart").step == 2
        and state.run_of("abandoned_cart").due_at == T0 + STEP_2_AFTER
    )
    return restored(state)


def test_pending_step_2_shortened_below_the_sent_step_1_fires_at_once_and_once():
    lg = settings_logic((ABANDON_AFTER, "abandoned_cart_1"), (45 * MINUTE, "abandoned_cart_2"))
    # invalid as a config (steps must be increasing) but reachable by shortening: the pure
    # logic copes all the same
    state = step_1_sent_under_old_schedule()
    assert lg.on_timer(state, j.RESCHEDULE_CHECK).timer == T0 + 45 * MINUTE
    d = lg.on_timer(state, T0 + 45 * MINUTE)
    assert requests([d]) == [(2, T0 + 45 * MINUTE, "abandoned_cart_2", rid(2))]
    assert d.timer is None and state.run_of("abandoned_cart") is None


def test_pending_step_removed_ends_the_journey_at_its_old_due_time_without_sending():
    lg = settings_logic((ABANDON_AFTER, "abandoned_cart_1"))
    state = step_1_sent_under_old_schedule()
    check = lg.on_timer(state, j.RESCHEDULE_CHECK)
    assert (check.triggers, check.outcomes, check.timer) == ([], [], T0 + STEP_2_AFTER)
    before = lg.on_event(state, page_view(C, T0 + STEP_2_AFTER - 1), MIN_WATERMARK)
    assert before.outcomes == [] and before.timer == T0 + STEP_2_AFTER
    d = lg.on_timer(state, T0 + STEP_2_AFTER)
    assert d.triggers == [] and d.timer is None and state.run_of("abandoned_cart") is None
    assert d.outcomes == [
        {
            "kind": "completed",
            "customer_id": C,
            "event_time": T0 + STEP_2_AFTER,
            "cart_id": "cart-1",
            "campaign": CAMPAIGN,
            "reason": "steps_removed",
            "step": 2,
        }
    ]
    assert state.profile.journey_status == "completed" and state.profile.emails_sent == 1
    assert d.rows == [] and d.snapshot == T0 + STEP_2_AFTER
    assert lg.profile_row(state, d.snapshot)["journey_status"] == "completed"
    # the cart stays: a later cart change arms a new journey under the new schedule
    again = lg.on_event(state, cart_add(C, T0 + 2 * DAY, "p2"), MIN_WATERMARK)
    assert again.timer == T0 + 2 * DAY + ABANDON_AFTER


def test_pending_step_removed_and_an_event_after_its_due_time_ends_it_first():
    lg = settings_logic((ABANDON_AFTER, "abandoned_cart_1"))
    state = step_1_sent_under_old_schedule()
    d = lg.on_event(state, page_view(C, T0 + 2 * DAY), MIN_WATERMARK)
    assert d.triggers == [] and d.timer is None
    assert [(o["kind"], o.get("reason")) for o in d.outcomes] == [("completed", "steps_removed")]


def test_step_added_applies_to_a_journey_still_pending():
    lg = settings_logic(*OLD, (3 * DAY, "abandoned_cart_2"))
    state = step_1_sent_under_old_schedule()
    d2 = lg.on_timer(state, T0 + STEP_2_AFTER)
    assert d2.timer == T0 + 3 * DAY
    d3 = lg.on_timer(state, T0 + 3 * DAY)
    assert requests([d2, d3]) == [
        (2, T0 + STEP_2_AFTER, "abandoned_cart_2", rid(2)),
        (3, T0 + 3 * DAY, "abandoned_cart_2", rid(3)),
    ]
    assert state.run_of("abandoned_cart") is None and state.profile.journey_status == "completed"


def test_step_added_does_not_reopen_a_completed_journey():
    old = settings_logic((ABANDON_AFTER, "abandoned_cart_1"))
    state, _ = run([identify(C, T0), cart_add(C, T0)], lg=old)
    assert requests([old.on_timer(state, T0 + ABANDON_AFTER)])[0][0] == 1
    assert state.run_of("abandoned_cart") is None
    state = restored(state)
    new = settings_logic(*OLD)
    check = new.on_timer(state, j.RESCHEDULE_CHECK)
    later = new.on_event(state, page_view(C, T0 + 2 * DAY), MIN_WATERMARK)
    assert check.timer is None and later.timer is None and later.triggers == []


def test_changed_template_of_the_pending_step_is_used():
    lg = settings_logic((ABANDON_AFTER, "abandoned_cart_2"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    d = lg.on_timer(state, T0 + ABANDON_AFTER)
    assert requests([d]) == [(1, T0 + ABANDON_AFTER, "abandoned_cart_2", rid(1))]


def test_duplicate_event_after_a_timing_change_still_moves_the_timer():
    lg = settings_logic((2 * HOUR, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule(page_view(C, T0 + MINUTE, event_id="pv"))
    d = lg.on_event(state, page_view(C, T0 + MINUTE, event_id="pv"), MIN_WATERMARK)
    assert [o["kind"] for o in d.outcomes] == ["duplicate"]
    assert d.timer == T0 + 2 * HOUR


def test_a_cart_change_after_a_timing_change_rearms_under_the_new_schedule():
    lg = settings_logic((2 * HOUR, "abandoned_cart_1"), (STEP_2_AFTER, "abandoned_cart_2"))
    state = armed_under_old_schedule()
    d = lg.on_event(state, cart_add(C, T0 + 10 * MINUTE, "p2"), MIN_WATERMARK)
    assert d.timer == T0 + 10 * MINUTE + 2 * HOUR


def with_context(event: dict, **context) -> dict:
    event["context"] = context
    return event


def test_the_events_context_locale_applies_until_a_trait_names_one():
    lg = customer_logic()
    state, _ = run([with_context(page_view(C, T0), locale="de-AT")], lg=lg)
    assert state.profile.locale == "de-AT"  # kept as sent: the renderer normalizes it
    run([with_context(page_view(C, T0 + 1), locale="fr")], state, lg)
    assert state.profile.locale == "de-AT"  # the profile has one: context does not change it
    run([f.ev("identify", C, T0 + 2, traits={"locale": "en-GB"})], state, lg)
    assert state.profile.locale == "en-GB"  # a trait does
    run([with_context(page_view(C, T0 + 3), locale="de")], state, lg)
    assert state.profile.locale == "en-GB"


def test_a_trait_locale_wins_over_the_same_events_context_and_non_strings_are_ignored():
    lg = customer_logic()
    event = with_context(f.ev("identify", C, T0, traits={"locale": "pt-BR"}), locale="es")
    state, _ = run([event], lg=lg)
    assert state.profile.locale == "pt-BR"
    state, _ = run(
        [
            with_context(page_view("c-2", T0), locale=7),
            with_context(page_view("c-2", T0 + 1), locale=""),
            with_context(page_view("c-2", T0 + 2), locale=["de"]),
        ],
        lg=lg,
    )
    assert state.profile.locale is None


# --- checkout_start with items: a snapshot of the cart ------------------------------------


def line(product_id: str, quantity: int, price: float, name: str | None = None) -> dict:
    out: dict = {"product_id": product_id, "quantity": quantity, "price": price}
    if name is not None:
        out["name"] = name
    return out


def checkout(
    cid: str, ts: int, items: object, cart_id: str | None = "cart-1", currency: str = "EUR"
) -> dict:
    """A checkout_start that lists the whole checkout (a Shopify ``checkouts/update``)."""
    props: dict = {"currency": currency, "items": items}
    if cart_id is not None:
        props["cart_id"] = cart_id
    return f.ev("checkout_start", cid, ts, properties=props)


def lines_of(items) -> list[tuple]:
    """(product id, name, quantity, price) of cart items or of a trigger's items."""
    return [
        (i["product_id"], i["name"], i["quantity"], i["price"])
        if isinstance(i, dict)
        else (i.product_id, i.name, i.quantity, i.price)
        for i in items
    ]


def test_a_checkout_with_items_and_no_cart_opens_it_and_step_1_shows_exactly_its_lines():
    lg = customer_logic()
    at = T0 + MINUTE
    items = [line("p1", 2, 12.5, "Mug"), line("p2", 1, 4, "Tea")]
    state, ds = run([identify(C, T0), checkout(C, at, items)], lg=lg)
    assert ds[-1].timer == at + ABANDON_AFTER
    assert (state.cart.cart_id, state.cart.currency, state.cart.last_activity) == (
        "cart-1",
        "EUR",
        at,
    )
    assert lg.on_timer(state, at + ABANDON_AFTER - 1).triggers == []
    d = lg.on_timer(state, at + ABANDON_AFTER)
    [t] = d.triggers
    assert (t["step"], t["cart_id"], t["due_at"], t["cart_value"], t["currency"]) == (
        1,
        "cart-1",
        at + ABANDON_AFTER,
        29.0,
        "EUR",
    )
    assert lines_of(t["items"]) == [("p1", "Mug", 2, 12.5), ("p2", "Tea", 1, 4.0)]
    assert t["request_id"] == j.request_id(CAMPAIGN, C, "cart-1", at, 1)
    assert [(o["kind"], o["value"]) for o in d.outcomes if o["kind"] == "abandoned"] == [
        ("abandoned", 29.0)
    ]


def test_a_checkout_snapshot_replaces_the_quantities_that_cart_adds_summed_up():
    lg = customer_logic()
    at = T0 + 10 * MINUTE
    snapshot = checkout(C, at, [line("p1", 3, 10.0, "Mug"), line("p2", 1, 5.0, "Spoon")])
    state, ds = run([identify(C, T0), cart_add(C, T0, "p1", quantity=1), snapshot], lg=lg)
    assert lines_of(state.cart.items) == [("p1", "Mug", 3, 10.0), ("p2", "Spoon", 1, 5.0)]
    assert (state.cart.value, state.cart.item_count) == (35.0, 4)
    assert ds[-1].timer == at + ABANDON_AFTER  # newer activity: re-armed from it
    [t] = lg.on_timer(state, at + ABANDON_AFTER).triggers
    assert lines_of(t["items"]) == [("p1", "Mug", 3, 10.0), ("p2", "Spoon", 1, 5.0)]
    assert t["cart_value"] == 35.0


def test_a_snapshot_line_takes_the_events_price_and_keeps_what_it_lacks_from_the_cart():
    state, _ = run(
        [
            cart_add(C, T0, "p1", price=10.0, name="Mug"),
            checkout(C, T0 + MINUTE, [line("p1", 2, 8.0), line("p9", 1, 3.0)]),
        ]
    )
    assert lines_of(state.cart.items) == [("p1", "Mug", 2, 8.0), ("p9", None, 1, 3.0)]
    assert [i.category for i in state.cart.items] == ["kitchen", None]


def test_a_checkout_snapshot_of_another_cart_opens_a_new_cart_and_its_reminder():
    lg = customer_logic()
    at = T0 + 5 * MINUTE
    lamp = checkout(C, at, [line("p7", 1, 40.0, "Lamp")], cart_id="cart-2", currency="USD")
    state, ds = run([identify(C, T0), cart_add(C, T0, "p1", cart_id="cart-1"), lamp], lg=lg)
    assert (state.cart.cart_id, state.cart.currency) == ("cart-2", "USD")
    assert lines_of(state.cart.items) == [("p7", "Lamp", 1, 40.0)]
    assert ds[-1].timer == at + ABANDON_AFTER
    assert lg.on_timer(state, T0 + ABANDON_AFTER).triggers == []  # cart-1's is gone
    [t] = lg.on_timer(state, at + ABANDON_AFTER).triggers
    assert (t["cart_id"], t["cart_value"], t["currency"]) == ("cart-2", 40.0, "USD")
    assert lines_of(t["items"]) == [("p7", "Lamp", 1, 40.0)]
    assert t["request_id"] == j.request_id(CAMPAIGN, C, "cart-2", at, 1)


def test_a_late_checkout_snapshot_does_not_undo_newer_cart_contents():
    lg = customer_logic()
    newer = T0 + 20 * MINUTE
    state, ds = run(
        [
            identify(C, T0),
            cart_add(C, T0, "p1", name="Mug"),
            cart_add(C, newer, "p2", name="Tea"),
            checkout(C, T0 + 10 * MINUTE, [line("p1", 5, 99.0, "Old mug")]),  # late
        ],
        lg=lg,
    )
    assert lines_of(state.cart.items) == [("p1", "Mug", 1, 10.0), ("p2", "Tea", 1, 10.0)]
    assert state.cart.last_activity == newer
    assert ds[-1].timer == newer + ABANDON_AFTER and ds[-1].outcomes == []
    assert state.run_of(CAMPAIGN).anchor == newer
    [t] = lg.on_timer(state, newer + ABANDON_AFTER).triggers
    assert lines_of(t["items"]) == [("p1", "Mug", 1, 10.0), ("p2", "Tea", 1, 10.0)]


def test_a_snapshot_at_the_instant_of_the_last_activity_replaces_the_lines_without_rearming():
    state, ds = run([identify(C, T0), cart_add(C, T0, "p1"), checkout(C, T0, [line("p2", 2, 3.0)])])
    assert lines_of(state.cart.items) == [("p2", None, 2, 3.0)]
    assert ds[-1].timer == T0 + ABANDON_AFTER and state.run_of(CAMPAIGN).anchor == T0


def test_a_snapshot_keeps_at_most_max_order_lines():
    many = [line(f"p{n}", 1, 1.0) for n in range(j.MAX_ORDER_LINES + 10)]
    state, _ = run([checkout(C, T0, many)])
    assert [i.product_id for i in state.cart.items] == [f"p{n}" for n in range(j.MAX_ORDER_LINES)]


def test_purchase_of_the_snapshots_cart_ends_its_journey():
    lg = customer_logic()
    state, ds = run(
        [
            identify(C, T0),
            checkout(C, T0, [line("p1", 1, 10.0)]),
            purchase(C, T0 + 10 * MINUTE, cart_id="cart-1"),
        ],
        lg=lg,
    )
    assert ds[-1].timer is None and state.cart is None and state.run_of(CAMPAIGN) is None
    assert [o["reason"] for o in ds[-1].outcomes if o["kind"] == "cancelled"] == ["purchased"]
    assert state.profile.journey_status == "purchased"
    assert lg.on_timer(state, MAX_WATERMARK).triggers == []


def test_purchase_arriving_before_its_checkout_snapshot_prevents_the_reminder():
    state, ds = run(
        [
            identify(C, T0),
            purchase(C, T0 + 10 * MINUTE, cart_id="cart-1"),
            checkout(C, T0, [line("p1", 1, 10.0)]),  # out of order: before the purchase
        ]
    )
    assert ds[-1].timer is None and state.cart is None and state.run_of(CAMPAIGN) is None


@pytest.mark.parametrize(
    "items",
    [None, [], [{"quantity": 2}, "p1", {"product_id": 5}]],
    ids=["no_items", "empty", "junk_lines"],
)
def test_a_checkout_without_lines_and_no_cart_changes_nothing(items):
    props = {"cart_id": "cart-1"} if items is None else {"cart_id": "cart-1", "items": items}
    state, ds = run([identify(C, T0), f.ev("checkout_start", C, T0 + MINUTE, properties=props)])
    assert state.cart is None and state.runs == []
    assert (ds[-1].timer, ds[-1].outcomes, state.profile.journey_status) == (None, [], "idle")


def test_a_checkout_with_an_empty_item_list_only_touches_the_open_cart():
    state, ds = run([identify(C, T0), cart_add(C, T0, "p1"), checkout(C, T0 + MINUTE, [])])
    assert lines_of(state.cart.items) == [("p1", "Mug", 1, 10.0)]
    assert ds[-1].timer == T0 + MINUTE + ABANDON_AFTER
