"""The firewall around one event or timer (udfs/core/customer.py): whatever raises while a record
is applied becomes one DLQ record, the customer's state and timer stay as they were (event)
or the journey is dropped (timer), and nothing raises out of CustomerCore. Driven through
batches of one (udfs/core/batch.py), so what is asserted is what Flink would apply."""

from __future__ import annotations

import json
import logging

import orjson
import pytest

from tests.factories import (
    HOUR,
    MIN_WATERMARK,
    MINUTE,
    T0,
    cart_add,
    customer_core,
    identify,
    page_view,
    raw,
)
from udfs.core import contract
from udfs.core import journey as j
from udfs.core.batch import EVENT, TIMER, Batch, Result
from udfs.core.contract import Keyed, Kind
from udfs.core.customer import CustomerCore, Slot, Step, where
from udfs.logs import JsonFormatter

NOW = T0 + 2 * HOUR
SECRET = "ann.secret@example.com"


@pytest.fixture
def core() -> CustomerCore:
    return customer_core()


def run(core: CustomerCore, blob: bytes | None, entry: tuple) -> tuple[Result, bytes | None]:
    """A batch of one; the result and the customer's bytes afterwards."""
    key = entry[1]
    result = Batch(core).run([entry], {key: blob}, MIN_WATERMARK, NOW)
    states = dict(result.states)
    return result, states[key] if key in states else blob


def apply(core: CustomerCore, blob: bytes | None, event: dict) -> tuple[Result, bytes | None]:
    """Validate and apply ``event`` (a normalized event dict) the way the operator does."""
    return run(core, blob, (EVENT, event["customer_id"], event["timestamp"], raw(event), -1))


def fire(core: CustomerCore, blob: bytes | None, ts: int) -> tuple[Result, bytes | None]:
    return run(core, blob, (TIMER, "A", ts, None, 0))


def abandoned(core: CustomerCore) -> bytes:
    """Ann's state with a cart and step 1 pending at T0 + 1h."""
    blob = None
    for event in (
        identify("A", T0, email=SECRET, first_name="Ann"),
        cart_add("A", T0, "p1", 12.5, 2, "cart-a", name="Mug"),
    ):
        _, blob = apply(core, blob, event)
    assert blob is not None
    pending = j.decode_state(blob).run_of("abandoned_cart")
    assert pending is not None and pending.due_at == T0 + HOUR
    return blob


def stores(result: Result) -> list:
    return [o for o in result.outputs if o[0] == Kind.STORE]


def dlq_of(step: Step | Result) -> dict:
    (dlq,) = [o for o in step.outputs if o[0] == Kind.DLQ]
    return contract.decode_dlq(dlq).value


def test_event_that_raises_goes_to_dlq_and_leaves_state_and_timer_untouched(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = abandoned(core)

    def explode(*args, **kwargs):
        raise KeyError(SECRET)  # an exception whose text quotes personal data

    monkeypatch.setattr(core.logic, "on_event", explode)
    event = page_view("A", T0 + 10 * MINUTE, event_id="pv-1")
    with caplog.at_level(logging.ERROR, logger="inboxflow"):
        step, after = apply(core, state, event)

    assert (step.states, step.timers, stores(step)) == ([], [], [])
    assert after == state
    record = dlq_of(step)
    assert (record["reason"], record["event_id"], record["customer_id"], record["path"]) == (
        "processing_error",
        "pv-1",
        "A",
        "$",
    )
    assert record["message"].startswith("KeyError in customer.py:")
    assert record["payload"] == raw(event)
    assert core.counts["processing_errors"] == 1
    assert core.counts["events_valid"] == 3  # identify, cart_add, the page view
    assert SECRET not in caplog.text and SECRET not in record["message"]
    logged = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert {k: logged.get(k) for k in ("customer_id", "event_id", "reason", "error")} == {
        "customer_id": "A",
        "event_id": "pv-1",
        "reason": "processing_error",
        "error": "KeyError",
    }
    assert logged["location"].startswith("customer.py:") and SECRET not in json.dumps(logged)


def test_state_that_cannot_be_encoded_is_a_processing_error_not_a_crash(core: CustomerCore) -> None:
    """The class of the original poison pill: text UTF-8 cannot encode reaching the state
    encoder. The validator now rejects it; this drives it past the validator."""
    state = abandoned(core)
    event = cart_add("A", T0 + 5 * MINUTE, "p2", 3.0, 1, "cart-a", name="\ud800")

    slot = Slot(state)
    step = core.on_event(event, "{}", slot, MIN_WATERMARK, -1, NOW)

    assert (slot.blob, slot.timer_change(), slot.state) == (state, None, None)
    record = dlq_of(step)
    assert record["reason"] == "processing_error"
    assert record["message"].startswith("UnicodeEncodeError in journey.py:")
    assert [o[0] for o in step.outputs] == [Kind.DLQ]


def test_timer_that_raises_drops_the_journey_once_and_the_customer_goes_on(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = abandoned(core)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.renderer, "render", explode)
    step, dropped = fire(core, state, T0 + HOUR)

    # the fired timer is gone already (deleting it does nothing); none is registered
    assert step.timers == [("A", T0 + HOUR, None)]
    before, after_drop = j.decode_state(state), j.decode_state(dropped)
    assert (after_drop.profile, after_drop.cart, after_drop.run_of("abandoned_cart")) == (
        before.profile,
        before.cart,
        None,
    )
    record = dlq_of(step)
    assert (record["reason"], record["customer_id"], json.loads(record["payload"])) == (
        "processing_error",
        "A",
        {"timer": T0 + HOUR, "timer_iso": "2026-01-05T09:00:00.000Z", "customer_id": "A"},
    )
    assert "RuntimeError" in record["message"] and "journey was dropped" in record["message"]
    (outcome,) = [contract.decode_outcome(o) for o in step.outputs if o[0] == Kind.OUTCOME]
    assert outcome == Keyed(
        "A",
        {
            "kind": "skipped",
            "customer_id": "A",
            "event_time": T0 + HOUR,
            "reason": "processing_error",
        },
    )
    assert core.counts["processing_errors"] == 1

    # the next event of the customer applies normally and fires nothing
    monkeypatch.undo()
    later, after = apply(core, dropped, page_view("A", T0 + 2 * HOUR, event_id="pv-2"))
    assert [o[0] for o in later.outputs if o[0] in (Kind.DLQ, Kind.REQUEST)] == []
    later_state = j.decode_state(after)
    assert later.timers == [] and later_state.run_of("abandoned_cart") is None
    assert later_state.profile.version == before.profile.version + 1


def test_validator_that_raises_is_one_dlq_record(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args, **kwargs):
        raise ValueError("bug")

    monkeypatch.setattr(core.validator, "validate", explode)
    step = core.validate("A", "{}", NOW)

    assert isinstance(step, Step) and step.store is None
    record = dlq_of(step)
    assert (record["reason"], record["customer_id"], record["event_id"]) == (
        "processing_error",
        "A",
        None,
    )


def test_every_output_of_a_normal_step_is_utf8_json(core: CustomerCore) -> None:
    state = abandoned(core)
    step, _ = fire(core, state, T0 + HOUR)

    kinds = sorted(o[0] for o in step.outputs)
    assert kinds == [Kind.STORE, Kind.REQUEST, Kind.OUTCOME, Kind.OUTCOME]
    for kind, _, _, payload in step.outputs:
        if kind == Kind.STORE:
            lines = contract.split_store_rows(payload)
            tables = [contract.decode_store_row(line)[0] for line in lines]
            assert tables == ["email_requests", "customer_profiles"]
            for line in lines:
                orjson.loads(contract.decode_store_row(line)[1].encode("utf-8"))
        else:
            orjson.loads(payload.encode("utf-8"))
    assert step.timers == [("A", T0 + HOUR, T0 + 24 * HOUR)]


def test_where_names_the_deepest_frame_of_this_project_not_the_library() -> None:
    from udfs.core.journey import load_profile

    with pytest.raises(ValueError) as caught:
        load_profile('{"customer_id": ')  # raises inside orjson, called from journey.py
    assert where(caught.value).startswith("journey.py:")
    assert where(caught.value).endswith(" in load_profile")


def test_reschedule_check_on_an_unchanged_schedule_commits_nothing(core: CustomerCore) -> None:
    from udfs.core.journey import RESCHEDULE_CHECK

    step, _ = fire(core, abandoned(core), RESCHEDULE_CHECK)
    assert (step.outputs, step.states, step.timers) == ([], [], [])


@pytest.mark.parametrize(
    ("abandon_after", "due"), [("30m", T0 + 30 * MINUTE), ("2h", T0 + 2 * HOUR)]
)
def test_reschedule_check_after_a_timing_change_moves_the_timer_and_writes_the_journey(
    core: CustomerCore, abandon_after: str, due: int
) -> None:
    """State armed under abandon_after 1h, restored with another timing: the check deletes
    the old timer, registers the new due time and stores it, and emits nothing."""
    from udfs.core.journey import RESCHEDULE_CHECK

    state = abandoned(core)
    changed = customer_core(abandon_after=abandon_after)
    step, moved = fire(changed, state, RESCHEDULE_CHECK)
    assert step.outputs == []
    assert step.timers == [("A", T0 + HOUR, due)]
    before, after = j.decode_state(state), j.decode_state(moved)
    assert (after.profile, after.cart) == (before.profile, before.cart)
    assert (
        after.run_of("abandoned_cart") is not None and after.run_of("abandoned_cart").due_at == due
    )
    fired, _ = fire(changed, moved, due)
    (request,) = [contract.decode_request(o).value for o in fired.outputs if o[0] == Kind.REQUEST]
    assert (request["step"], request["customer_id"]) == (1, "A")
    assert fired.timers == [("A", due, T0 + 24 * HOUR)]


def test_reschedule_check_that_raises_drops_the_journey_without_raising(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The firewall must hold for the restore-time check too: its instant (far before year 1)
    cannot be formatted as a date, and a raise here would fail the task on every restore."""
    from udfs.core.journey import RESCHEDULE_CHECK

    state = abandoned(core)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.logic, "on_timer", explode)
    step, dropped = fire(core, state, RESCHEDULE_CHECK)
    assert j.decode_state(dropped).run_of("abandoned_cart") is None
    assert j.decode_state(dropped).profile == j.decode_state(state).profile
    record = dlq_of(step)
    assert json.loads(record["payload"]) == {
        "timer": RESCHEDULE_CHECK,
        "timer_iso": "reschedule check after a restore",
        "customer_id": "A",
    }


def test_a_template_that_raises_at_send_time_suppresses_the_step_and_the_journey_goes_on(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A template error in a branch the start-up samples did not reach (here: a division by
    zero for one customer's name) never sends a broken email and never stops the job: the
    step is recorded as suppressed (render_failed), step 2 stays scheduled."""
    import shutil
    from dataclasses import replace

    from tests.factories import core_settings

    settings = core_settings()
    templates = shutil.copytree(settings.render.template_dir, tmp_path / "templates")
    html = templates / "abandoned_cart_1.html.j2"
    html.write_text('{% if first_name == "Ann" %}{{ 1 // 0 }}{% endif %}' + html.read_text())
    core = CustomerCore(replace(settings, render=replace(settings.render, template_dir=templates)))
    state = abandoned(core)

    with caplog.at_level(logging.ERROR):
        step, after = fire(core, state, T0 + HOUR)
    assert [o[0] for o in step.outputs if o[0] in (Kind.REQUEST, Kind.DLQ)] == []
    skipped = [
        contract.decode_outcome(o).value
        for o in step.outputs
        if o[0] == Kind.OUTCOME and contract.decode_outcome(o).value["kind"] == "skipped"
    ]
    assert [(o["reason"], o["step"]) for o in skipped] == [("render_failed", 1)]
    (store,) = [contract.decode_store(o) for o in stores(step)]
    rows = [json.loads(r.row_json) for r in store.rows if r.table == "email_requests"]
    assert [(r["step"], r["status"], r["reason"]) for r in rows] == [
        (1, "suppressed", "render_failed")
    ]
    pending = j.decode_state(after).run_of("abandoned_cart")
    assert pending is not None and pending.step == 2  # the journey goes on
    (record,) = [r for r in caplog.records if r.getMessage().startswith("render failed")]
    assert "ZeroDivisionError" in record.getMessage() and SECRET not in record.getMessage()
