"""Batches (udfs/core/batch.py): one call applies many events and timers, and what Flink gets
back is exactly what one call per event would have left behind: the same outputs in the same
order, the same final state and the same one timer per customer. Customers with several
events in one batch see their own updates in order; a bad record or one that makes the logic
raise in the middle of a customer's events changes nothing for the events around it."""

from __future__ import annotations

import json
import pickle
from typing import Any

import msgspec
import pytest

from bench.pure import Subtask
from tests.factories import (
    CAMPAIGN,
    HOUR,
    MIN_WATERMARK,
    MINUTE,
    T0,
    cart_add,
    customer_core,
    customer_logic,
    identify,
    page_view,
    purchase,
    raw,
    teleport,
)
from udfs.core import journey as j
from udfs.core.batch import (
    EVENT,
    TIMER,
    Batch,
    Entry,
    decode_result,
    encode_batch,
    encode_result,
    migrate_states,
)
from udfs.core.contract import Kind, Routed, Table, decode_store_row, split_store_rows

NOW = T0 + 3 * HOUR


def event(doc: dict[str, Any], kafka_ms: int = -1) -> Entry:
    return (EVENT, doc["customer_id"], doc["timestamp"], raw(doc), kafka_ms)


def bad(key: str, text: str) -> Entry:
    return (EVENT, key, T0, text, -1)


def timer(key: str, ts: int) -> Entry:
    return (TIMER, key, ts, None, 0)


class Flink(Subtask):
    """The bench's stand-in for ``BatchCustomerOperator`` (keyed state as bytes, timers,
    every output kept), driven batch by batch: each :class:`Result` applied as the operator
    applies it (``Subtask.apply``)."""

    def __init__(self) -> None:
        super().__init__(bound_ms=0, batch_events=1, keep=True)
        self.outputs: list[Routed] = []

    def states_for(self, entries: list[Entry]) -> dict[str, bytes | None]:
        return {key: self.state.get(key) for _, key, *_ in entries}

    def run(self, batch: Batch, entries: list[Entry], watermark: int = MIN_WATERMARK) -> None:
        self.apply(batch.run(entries, self.states_for(entries), watermark, NOW))

    def store_rows(self) -> list[str]:
        return [line for o in self.outputs if o[0] == Kind.STORE for line in split_store_rows(o[3])]

    def kafka_outputs(self) -> list[tuple]:
        return [o for o in self.outputs if o[0] != Kind.STORE]

    def pending(self) -> dict[str, set[int]]:
        return {k: v for k, v in self.timers.items() if v}


def one_by_one(entries: list[Entry]) -> Flink:
    flink, batch = Flink(), Batch(customer_core())
    for entry in entries:
        flink.run(batch, [entry])
    return flink


def as_one_batch(entries: list[Entry]) -> Flink:
    flink = Flink()
    flink.run(Batch(customer_core()), entries)
    return flink


def split_rows(lines: list[str]) -> tuple[list[str], dict[str, list[dict]]]:
    """(lines of other tables, profile rows per customer in order)."""
    other, profiles = [], {}
    for line in lines:
        table, row_json, _ = decode_store_row(line)
        if table == Table.PROFILES:
            row = json.loads(row_json)
            profiles.setdefault(row["customer_id"], []).append(row)
        else:
            other.append(line)
    return other, profiles


def assert_same(single: Flink, batched: Flink) -> None:
    """``batched`` left what ``single`` (one event per batch) left: the same Kafka outputs,
    states and timers, the same email request and recovery rows, and per customer one
    profile row per batch, the newest version ``single`` wrote for it in that batch."""
    assert single.kafka_outputs() == batched.kafka_outputs()
    assert single.state == batched.state
    assert single.pending() == batched.pending()
    other_1, profiles_1 = split_rows(single.store_rows())
    other_n, profiles_n = split_rows(batched.store_rows())
    assert sorted(other_1) == sorted(other_n)
    assert sorted(profiles_1) == sorted(profiles_n)
    for cid, rows in profiles_n.items():
        assert rows[-1] == profiles_1[cid][-1]
        assert {row["version"] for row in rows} <= {row["version"] for row in profiles_1[cid]}


STORY = [
    event(identify("A", T0, email="a@example.com", first_name="Ann")),
    event(cart_add("A", T0 + MINUTE, "p1", 10.0, 1, "cart-a"), kafka_ms=T0),
    event(identify("B", T0, email="b@example.com")),
    bad("A", "not json"),
    event(cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 2, "cart-a")),
    bad("B", teleport("B", "t-1")),
    event(cart_add("B", T0 + MINUTE, "p9", 1.0, 1, "cart-b")),
    event(cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 2, "cart-a", event_id="dup")),
    event(cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 2, "cart-a", event_id="dup")),  # again
    # step 1 of A is due at T0 + 2m + 1h: this event of A fires it first
    event(page_view("A", T0 + 2 * HOUR)),
    event(purchase("B", T0 + 30 * MINUTE, "cart-b", 1.0)),
]


def test_one_batch_leaves_what_one_call_per_event_leaves() -> None:
    single, batched = one_by_one(STORY), as_one_batch(STORY)
    assert_same(single, batched)
    kinds = [(o[0], o[2]) for o in batched.kafka_outputs()]
    assert kinds.count((Kind.DLQ, None)) == 1 and kinds.count((Kind.DLQ, "B")) == 1  # no id
    assert kinds.count((Kind.REQUEST, "A")) == 1  # step 1 of A, fired by its page view
    # A's step 2 is pending (24 h after the last cart activity); B bought its cart
    assert batched.pending() == {"A": {T0 + 2 * MINUTE + 24 * HOUR}}
    state = j.decode_state(batched.state["A"])
    assert state.profile is not None and state.profile.version == 6  # 5 events + the step
    assert [i.product_id for i in state.cart.items] == ["p1", "p2"]


def test_the_store_rows_of_a_batch_leave_as_one_element_per_shard_after_every_other_output():
    batched = as_one_batch(STORY)
    kinds = [o[0] for o in batched.outputs]
    first_store = kinds.index(Kind.STORE)
    assert set(kinds[first_store:]) == {Kind.STORE}
    shards = [o[1] for o in batched.outputs if o[0] == Kind.STORE]
    assert len(shards) == len(set(shards)) <= 2
    # one profile row per customer for the whole batch: the newest version
    _, profiles = split_rows(batched.store_rows())
    assert {cid: [r["version"] for r in rows] for cid, rows in profiles.items()} == {
        "A": [6],
        "B": [3],
    }
    _, single = split_rows(one_by_one(STORY).store_rows())
    # one per batch of one event: the page view's batch made two versions (its due step,
    # then the event) and wrote the newer one
    assert [r["version"] for r in single["A"]] == [1, 2, 3, 4, 6]


def test_a_batch_only_reports_what_changed() -> None:
    flink = as_one_batch(STORY)
    again = Batch(customer_core()).run(
        [event(page_view("A", T0 + 2 * MINUTE, event_id="dup"))],
        flink.states_for([event(page_view("A", T0))]),
        MIN_WATERMARK,
        NOW,
    )
    # a duplicate: nothing to write, no timer to move, one outcome
    assert (again.states, again.timers) == ([], [])
    assert [o[0] for o in again.outputs] == [Kind.OUTCOME]
    empty = Batch(customer_core()).run([], {}, MIN_WATERMARK, NOW)
    assert (empty.outputs, empty.states, empty.timers) == ([], [], [])


def test_timers_interleaved_with_events_fire_in_order() -> None:
    setup = [event(identify("A", T0, email="a@example.com")), event(cart_add("A", T0, "p1"))]
    due = T0 + HOUR
    rest = [
        timer("A", due),
        event(cart_add("A", due + MINUTE, "p2")),  # a new activity after the step: re-arms
        timer("A", due + MINUTE + HOUR),
    ]
    single, batched = one_by_one(setup), one_by_one(setup)
    for entry in rest:
        single.run(Batch(customer_core()), [entry])
    batched.run(Batch(customer_core()), rest)
    assert_same(single, batched)
    steps = [o for o in batched.outputs if o[0] == Kind.REQUEST]
    assert len(steps) == 2  # step 1 of the first and of the second abandonment
    assert batched.pending() == {"A": {due + MINUTE + 24 * HOUR}}


def test_an_event_that_raises_mid_batch_leaves_the_customers_state_for_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = customer_core()
    real = core.logic.on_event

    def explode_on(state: j.CustomerState, doc: dict, watermark: int):
        decision = real(state, doc, watermark)  # changes the state, then fails
        if doc["event_id"] == "boom":
            raise RuntimeError("bug")
        return decision

    monkeypatch.setattr(core.logic, "on_event", explode_on)
    entries = [
        event(identify("A", T0, email="a@example.com")),
        event(cart_add("A", T0 + MINUTE, "p1", event_id="boom")),
        event(cart_add("A", T0 + 2 * MINUTE, "p2")),
    ]
    flink = Flink()
    flink.run(Batch(core), entries)
    dlq = [o for o in flink.outputs if o[0] == Kind.DLQ]
    assert len(dlq) == 1 and '"processing_error"' in dlq[0][3]
    state = j.decode_state(flink.state["A"])
    # the failed event left nothing: only p2 is in the cart, and two events were counted
    assert [i.product_id for i in state.cart.items] == ["p2"]
    assert state.profile.version == 2
    assert flink.pending() == {"A": {T0 + 2 * MINUTE + HOUR}}


def test_the_payload_round_trip_is_the_same_batch() -> None:
    flink = one_by_one(STORY[:3])
    entries = STORY[3:]
    states = flink.states_for(entries)
    direct = Batch(customer_core()).run(entries, states, MIN_WATERMARK, NOW)
    payload = encode_batch(MIN_WATERMARK, entries, states)
    answer = Batch(customer_core()).run_payload(payload, NOW)
    assert answer == encode_result(direct)
    decoded = decode_result(answer)
    assert decoded.outputs == direct.outputs
    assert decoded.states == direct.states and decoded.timers == direct.timers


def test_an_event_without_text_goes_to_the_dlq() -> None:
    result = Batch(customer_core()).run([(EVENT, "A", T0, None, -1)], {}, MIN_WATERMARK, NOW)
    assert [o[0] for o in result.outputs] == [Kind.DLQ] and result.states == []


def test_the_state_reads_the_plain_paths_pickled_form_and_keeps_its_layout() -> None:
    flink = one_by_one(STORY)
    blob = flink.state["A"]
    assert blob[:1] == b"\x94"  # an array of four: profile, cart, legacy journey, runs
    assert j.decode_state(pickle.dumps(blob)) == j.decode_state(blob)
    # a value written today must decode after any change to the state types (fields are
    # only ever appended): it is the positional MessagePack array below
    plain = msgspec.msgpack.decode(blob)
    assert plain[0][0] == "A" and plain[1][0] == "cart-a" and plain[2] is None
    # the run: campaign, anchor (entry), key, next step
    assert plain[3][0][:4] == [CAMPAIGN, T0 + 2 * MINUTE, "cart-a", 2]


def test_a_state_written_before_campaigns_decodes_and_its_journey_carries_on() -> None:
    """Issue 13's layout: three fields, the cart journey in the third, profiles without the
    fields appended since. Its journey becomes a run of the cart campaign, same due time."""
    flink = one_by_one(STORY)
    plain = msgspec.msgpack.decode(flink.state["A"])
    run = plain[3][0]
    profile = plain[0][:21]  # the Profile fields of issue 13
    old = msgspec.msgpack.encode([profile, plain[1], [run[1], run[2], run[3], run[4]]])
    state = j.decode_state(old)
    assert state.runs == [] and state.journey == j.Journey(run[1], run[2], run[3], run[4])
    assert state.next_due() == run[4]
    lg = customer_logic()
    d = lg.on_timer(state, j.RESCHEDULE_CHECK)
    assert d.timer == run[4] and state.journey is None
    (upgraded,) = state.runs
    assert (upgraded.campaign, upgraded.anchor, upgraded.key, upgraded.step) == (
        CAMPAIGN,
        run[1],
        run[2],
        run[3],
    )
    assert state.profile.seen_times == [state.profile.last_seen] * len(state.profile.seen_ids)


def test_state_of_the_old_three_json_values_migrates_and_a_bad_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = j.state_from_json  # the forms versions before issue 13 kept
    now = j.decode_state(one_by_one(STORY).state["A"])
    (run,) = now.runs
    state = j.CustomerState(
        now.profile, now.cart, j.Journey(run.anchor, run.key, run.step, run.due_at)
    )
    assert state.profile is not None and state.cart is not None and state.journey is not None
    texts = [j.dump_profile(state.profile), j.dump_cart(state.cart), j.dump_journey(state.journey)]
    payload = msgspec.msgpack.encode(["A", *texts, "B", '{"customer_id": ', None, None])
    with caplog.at_level("ERROR", logger="inboxflow"):
        answer = msgspec.msgpack.decode(migrate_states(payload))
    assert answer[0] == "A" and j.decode_state(answer[1]) == state == old(*texts)
    assert answer[2:] == ["B", None]  # unreadable: the customer starts afresh, logged
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    logged = record.fields
    assert (logged["customer_id"], logged["reason"]) == ("B", "legacy_state_unreadable")
    assert "customer_id" not in record.getMessage()
