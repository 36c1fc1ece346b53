"""The firewall around one event or timer (udfs/core/customer.py): whatever raises while a record
is applied becomes one DLQ record, the customer's state and timer stay as they were (event)
or the journey is dropped (timer), and nothing raises out of CustomerCore."""

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
from udfs.core.contract import Keyed, Kind
from udfs.core.customer import CustomerCore, Step, where
from udfs.logs import JsonFormatter

NOW = T0 + 2 * HOUR
SECRET = "ann.secret@example.com"


@pytest.fixture
def core() -> CustomerCore:
    return customer_core()


def apply(core: CustomerCore, state: tuple, event: dict) -> tuple[Step, tuple]:
    """Validate and apply ``event`` (a normalized event dict) the way the wrapper does."""
    text = raw(event)
    validated = core.validate(event["customer_id"], text, NOW)
    assert not isinstance(validated, Step), validated
    step = core.on_event(validated, text, state, MIN_WATERMARK, -1, NOW)
    return step, (step.state if step.state is not None else state)


def abandoned(core: CustomerCore) -> tuple:
    """Ann's raw state with a cart and step 1 pending at T0 + 1h."""
    state: tuple = (None, None, None)
    for event in (
        identify("A", T0, email=SECRET, first_name="Ann"),
        cart_add("A", T0, "p1", 12.5, 2, "cart-a", name="Mug"),
    ):
        _, state = apply(core, state, event)
    assert json.loads(state[2])["due_at"] == T0 + HOUR
    return state


def dlq_of(step: Step) -> dict:
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

    assert (step.state, step.timers, step.store) == (None, None, None)
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

    step = core.on_event(event, "{}", state, MIN_WATERMARK, -1, NOW)

    assert (step.state, step.timers) == (None, None)
    record = dlq_of(step)
    assert record["reason"] == "processing_error"
    assert record["message"].startswith("TypeError in journey.py:")
    assert [o[0] for o in step.outputs] == [Kind.DLQ]


def test_timer_that_raises_drops_the_journey_once_and_the_customer_goes_on(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = abandoned(core)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.renderer, "render", explode)
    step = core.on_timer("A", T0 + HOUR, state, NOW)

    assert step.timers is None  # the fired timer is gone; none is registered
    assert step.state == (state[0], state[1], None)
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
    later, after = apply(core, step.state, page_view("A", T0 + 2 * HOUR, event_id="pv-2"))
    assert [o[0] for o in later.outputs if o[0] in (Kind.DLQ, Kind.REQUEST)] == []
    assert later.timers is None and after[2] is None
    assert json.loads(after[0])["version"] == json.loads(state[0])["version"] + 1


def test_validator_that_raises_is_one_dlq_record(
    core: CustomerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args, **kwargs):
        raise ValueError("bug")

    monkeypatch.setattr(core.validator, "validate", explode)
    step = core.validate("A", "{}", NOW)

    assert isinstance(step, Step) and step.state is None
    record = dlq_of(step)
    assert (record["reason"], record["customer_id"], record["event_id"]) == (
        "processing_error",
        "A",
        None,
    )


def test_every_output_of_a_normal_step_is_utf8_json(core: CustomerCore) -> None:
    state = abandoned(core)
    step = core.on_timer("A", T0 + HOUR, state, NOW)

    kinds = sorted(o[0] for o in step.outputs)
    assert kinds == [Kind.REQUEST, Kind.OUTCOME, Kind.OUTCOME]
    for output in step.outputs:
        orjson.loads(output[3].encode("utf-8"))
    assert step.timers == (T0 + HOUR, T0 + 24 * HOUR)


def test_where_names_the_deepest_frame_of_this_project_not_the_library() -> None:
    from udfs.core.journey import load_profile

    with pytest.raises(ValueError) as caught:
        load_profile('{"customer_id": ')  # raises inside orjson, called from journey.py
    assert where(caught.value).startswith("journey.py:")
    assert where(caught.value).endswith(" in load_profile")


def test_reschedule_check_on_an_unchanged_schedule_commits_nothing(core: CustomerCore) -> None:
    from udfs.core.journey import RESCHEDULE_CHECK

    step = core.on_timer("A", RESCHEDULE_CHECK, abandoned(core), NOW)
    assert (step.outputs, step.state, step.timers, step.store) == ([], None, None, None)


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
    step = changed.on_timer("A", RESCHEDULE_CHECK, state, NOW)
    assert step.outputs == [] and step.store is None
    assert step.timers == (T0 + HOUR, due)
    assert step.state[:2] == state[:2]
    assert json.loads(step.state[2])["due_at"] == due
    fired = changed.on_timer("A", due, step.state, NOW)
    (request,) = [contract.decode_request(o).value for o in fired.outputs if o[0] == Kind.REQUEST]
    assert (request["step"], request["customer_id"]) == (1, "A")
    assert fired.timers == (due, T0 + 24 * HOUR)


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
    step = core.on_timer("A", RESCHEDULE_CHECK, state, NOW)
    assert step.state == (state[0], state[1], None)
    record = dlq_of(step)
    assert json.loads(record["payload"]) == {
        "timer": RESCHEDULE_CHECK,
        "timer_iso": "reschedule check after a restore",
        "customer_id": "A",
    }
