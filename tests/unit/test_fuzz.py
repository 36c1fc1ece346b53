"""Property-based fuzzing of the pure per-event path (issue 9): validate -> journey -> render
-> state dump/load -> ClickHouse row encoding, through :class:`udfs.core.customer.CustomerCore`.

The inputs come from ``tests/fuzzing.py``. A small in-memory :class:`Harness` stands in for
Flink: raw state per customer, the customer's event-time timers, a bounded-out-of-orderness
watermark that fires due timers, and each :class:`Step` applied the way
``udfs.flink.customer_function.CustomerFunction._commit`` applies it. Records reach the core
as the JVM hands them over (:func:`tests.fuzzing.jvm_view`).

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default, ``make test``): derandomized (fixed seed),
bounded examples, well under a minute; ``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``): 20 times
the examples, a fresh random seed per run, failures kept in ``var/hypothesis``.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests import fuzzing as fz
from tests.factories import (
    EMAIL_REQUEST_SCHEMA,
    HOUR,
    MIN_WATERMARK,
    MINUTE,
    ROOT,
    T0,
    customer_core,
    customer_logic,
)
from udfs.clickhouse.schema import COLUMNS, TIMESTAMP_COLUMNS, convert_row
from udfs.clock import MAX_WATERMARK
from udfs.core import contract
from udfs.core import journey as j
from udfs.core.contract import PROCESSING_ERROR, Kind
from udfs.core.customer import MAX_REQUEST_BYTES, REQUEST_TOO_LARGE, CustomerCore, Slot, Step
from udfs.core.validation import Reason, _render_path

# --------------------------------------------------------------------------- profiles

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=DirectoryBasedExampleDatabase(str(ROOT / "var" / "hypothesis")),
    **_COMMON,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FACTOR = 20 if PROFILE == "fuzz" else 1


def examples(n: int) -> settings:
    """The active profile with ``n`` examples (``n`` x 20 under ``fuzz``)."""
    return settings(settings.get_profile(PROFILE), max_examples=n * FACTOR)


# --------------------------------------------------------------------------- the core

KNOWN_REASONS = frozenset(value for name, value in vars(Reason).items() if name.isupper()) | {
    "key_mismatch",
    PROCESSING_ERROR,
}
OUTCOME_KINDS = frozenset(
    {
        "late",
        "duplicate",
        "abandoned",
        "sent",
        "deferred",
        "skipped",
        "cancelled",
        "completed",
        "recovered",
    }
)
SHARDS = 2
BOUND = 5 * MINUTE  # watermarks.out_of_orderness in conf/job.yaml
# Kafka's producer refuses a record above max.request.size (default 1 MiB, key and record
# overhead included); the sinks do not raise it.
KAFKA_MAX_RECORD = 1_048_576
REQUEST_SCHEMA = jsonschema_rs.Draft202012Validator(json.loads(EMAIL_REQUEST_SCHEMA.read_text()))


def shipped_core(shards: int) -> CustomerCore:
    """The core of the shipped config as it is: all four campaigns and every guard."""
    from dataclasses import replace

    from job.config import load_config
    from job.pipeline import core_settings

    settings = core_settings(
        load_config(env={}, overrides={"clickhouse": {"enabled": False}}), False
    )
    return CustomerCore(replace(settings, store_shards=shards))


# hostile records meet every campaign and guard the job ships with
CORE = shipped_core(SHARDS)
# the cart journey alone: the regression tests of cart reminders found by fuzzing (issue 9)
CART_CORE = customer_core(SHARDS)


@pytest.fixture(autouse=True)
def _quiet_rejections():
    """Every rejected record logs a warning; thousands of them per test only cost time
    (and memory in pytest's log capture). Errors (processing_error) still show."""
    logger = logging.getLogger("inboxflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# --------------------------------------------------------------------------- checks


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


def strict_json(text: str) -> object:
    """(c): the text encodes as UTF-8 and is strict JSON (no NaN/Infinity)."""
    assert isinstance(text, str), type(text)
    text.encode("utf-8")  # raises on an unpaired surrogate
    return json.loads(text, parse_constant=_no_constant)


def check_state(blob: bytes) -> None:
    """(c) and (d): the state's bytes survive decode -> encode unchanged, and so does its
    JSON form (every string in it is encodable text)."""
    assert isinstance(blob, bytes)
    state = j.decode_state(blob)
    assert j.encode_state(state) == blob
    if state.profile is not None:
        strict_json(j.dump_profile(state.profile))
    if state.cart is not None:
        strict_json(j.dump_cart(state.cart))


def check_store(store: tuple | None, collect: list | None = None) -> Counter:
    """(c): every row is a store row line (udfs.core.contract) whose JSON has exactly the
    table's columns, with a source Kafka time on profiles only, and every value fits its
    ClickHouse column."""
    tables: Counter = Counter()
    if store is None:
        return tables
    shard, rows = store
    assert 0 <= shard < SHARDS
    for line in contract.split_store_rows(rows):
        table, row_json, source = contract.decode_store_row(line)
        assert table in COLUMNS, line[:80]
        assert source is None or table == "customer_profiles", line[:80]
        row = strict_json(row_json)
        assert isinstance(row, dict)
        assert list(row) == [c.name for c in COLUMNS[table]]
        for name in TIMESTAMP_COLUMNS[table]:  # undo json_ready: seconds -> epoch ms
            if row[name] is not None:
                ms = round(row[name] * 1000)
                assert ms / 1000 == row[name]
                row[name] = ms
        convert_row(table, row)  # raises ValueError naming the column that does not fit
        tables[table] += 1
        if table == "email_requests" and collect is not None:
            collect.append(row)
    return tables


def check_outputs(step: Step) -> list[str]:
    """(c) for the outputs; the DLQ reasons found."""
    reasons = []
    for out in step.outputs:
        assert isinstance(out, tuple) and len(out) == 4
        kind, shard, key, payload = out
        assert kind in (Kind.REQUEST, Kind.DLQ, Kind.OUTCOME) and shard == 0
        assert key is None or (isinstance(key, str) and key.encode("utf-8") is not None)
        value = strict_json(payload)
        size = len(payload.encode()) + len((key or "").encode())
        assert size + 1024 <= KAFKA_MAX_RECORD, f"kind {kind}: a {size}-byte Kafka record"
        assert isinstance(value, dict)
        if kind == Kind.DLQ:
            assert value["reason"] in KNOWN_REASONS, value["reason"]
            assert isinstance(value["payload"], str) and isinstance(value["message"], str)
            reasons.append(value["reason"])
        elif kind == Kind.REQUEST:
            errors = [e.message for e in REQUEST_SCHEMA.iter_errors(value)]
            assert not errors, errors
            # amounts are >= 0 (schemas); none may print with a sign
            money = f"{value['metadata']['currency']} -"
            assert money not in value["text"] and money not in value["html"], money
        else:
            assert value["kind"] in OUTCOME_KINDS
    return reasons


# --------------------------------------------------------------------------- the harness


class Harness:
    """Flink for one subtask, in memory: per key the raw state and the set of registered
    event-time timers; the watermark trails the largest event time by the bound."""

    def __init__(self, core: CustomerCore = CORE, now: int = fz.NOW, bound: int = BOUND):
        self.core, self.now, self.bound = core, now, bound
        self.state: dict[str, bytes] = {}
        self.timers: dict[str, set[int]] = {}
        self.watermark = MIN_WATERMARK
        self.results: list[tuple[str, str | None]] = []  # per record: (outcome, reason)
        self.timer_calls = 0
        self.rows: Counter = Counter()
        self.outputs: Counter = Counter()  # by kind
        self.skipped: Counter = Counter()  # skipped reminders by reason
        self.request_rows: list[dict] = []  # email_requests rows (times in epoch ms)
        self.request_ids: set[str] = set()

    def feed(self, value: str | bytes) -> tuple[str, str | None]:
        """(a) and (b): one record, as the JVM hands it over; its outcome."""
        key, text = fz.jvm_view(value)
        self.fire(self.watermark)
        valid_before = self.core.counts["events_valid"]
        result = self.core.validate(key, text, self.now)
        if isinstance(result, Step):
            assert result.store is None
            step = result
        else:
            assert isinstance(result, dict) and result["customer_id"] == key
            slot = Slot(self.state.get(key))
            step = self.core.on_event(result, text, slot, self.watermark, 0, self.now)
            self.commit(key, step, slot)
            self.watermark = max(self.watermark, result["timestamp"] - self.bound - 1)
        reasons = check_outputs(step)
        self.tally(step)
        processed = self.core.counts["events_valid"] == valid_before + 1 and not reasons
        # (b) exactly one of: processed, or one DLQ record with a known reason
        assert processed != (len(reasons) == 1), (processed, reasons)
        # (e) nothing the strategies produce may be a processing error
        assert PROCESSING_ERROR not in reasons, step.outputs[0][3][:2000]
        outcome = ("processed", None) if processed else ("dlq", reasons[0])
        self.results.append(outcome)
        return outcome

    def fire(self, watermark: int) -> None:
        """Every timer at or below ``watermark``, in time order (Flink removes a timer from
        its queue before calling on_timer)."""
        while True:
            due = [
                (ts, key)
                for key, pending in self.timers.items()
                for ts in pending
                if ts <= watermark
            ]
            if not due:
                return
            ts, key = min(due)
            self.timers[key].discard(ts)
            slot = Slot(self.state.get(key))
            step = self.core.on_timer(key, ts, slot, self.now)
            self.timer_calls += 1
            reasons = check_outputs(step)
            assert not reasons, step.outputs[0][3][:2000]  # (e) for timers
            self.tally(step)
            self.commit(key, step, slot)

    def tally(self, step: Step) -> None:
        for kind, _, _, payload in step.outputs:
            self.outputs[kind] += 1
            if kind == Kind.OUTCOME and '"skipped"' in payload:
                self.skipped[json.loads(payload)["reason"]] += 1
            elif kind == Kind.REQUEST:
                # without a replay, no reminder is decided twice
                rid = json.loads(payload)["request_id"]
                assert rid not in self.request_ids, f"request {rid} sent twice"
                self.request_ids.add(rid)

    def commit(self, key: str, step: Step, slot: Slot) -> None:
        """What Flink applies after a batch of one (udfs.core.batch): timers, then state;
        then the invariants."""
        pending = self.timers.setdefault(key, set())
        change = slot.timer_change()
        if change is not None:
            old, new = change
            if old is not None:
                pending.discard(old)
            if new is not None:
                pending.add(new)
        if slot.blob != slot.first_blob:
            if slot.blob is None:
                self.state.pop(key, None)
            else:
                check_state(slot.blob)
                self.state[key] = slot.blob
        self.rows.update(check_store(step.store, self.request_rows))
        if slot.snapshot is not None:  # the profile row, once per batch (here: per record)
            profile = self.core.profile_row(key, slot, self.now)
            assert profile.outputs == [], profile.outputs
            self.rows.update(check_store(profile.store))
        # a step may be deferred (several times), then decided once: sent or not sent
        decided = [row["request_id"] for row in self.request_rows if row["status"] != "deferred"]
        assert len(set(decided)) == len(decided), "a reminder decided twice"
        due = j.decode_state(self.state.get(key)).next_due()
        # (f) one timer per customer, exactly at the earliest due step of its journeys
        assert pending == ({due} if due is not None else set()), (pending, due)

    def finish(self) -> None:
        """End of a bounded input: the final watermark fires every pending timer."""
        self.fire(MAX_WATERMARK)
        assert not any(self.timers.values())
        for blob in self.state.values():
            check_state(blob)


# --------------------------------------------------------------------------- properties


@examples(150)
@given(fz.st_stream(max_size=25))
def test_streams_of_hostile_records_are_all_accounted_for(records):
    """(a)-(f) over streams mixing every input class, for a few customers."""
    harness = Harness()
    for r in records:
        outcome, reason = harness.feed(r.value)
        note_event(f"{r.kind}: {reason or outcome}")
    harness.finish()


@pytest.mark.parametrize("kind", fz.EVENT_TYPES)
def test_valid_events_with_hostile_text_are_processed(kind):
    """A valid event with hostile text in every free-text field is processed, not DLQ'd
    (key_mismatch only where the JVM really reads another key), and the journey it starts
    runs to its end."""

    @examples(25)
    @given(fz.st_valid_event(event_type=kind), st.booleans())
    def check(doc_text, as_bytes):
        doc, text = doc_text
        harness = Harness()
        value = text.encode("utf-8") if as_bytes else text
        outcome, reason = harness.feed(value)
        if fz.jvm_key(text) == doc["customer_id"].strip():
            assert outcome == "processed", reason
        else:
            assert reason == "key_mismatch"
        harness.finish()

    check()


@examples(300)
@given(
    st.one_of(
        fz.st_record(),
        fz.st_json_text(),
        fz.st_bytes,
        fz.st_hostile_text(),
        st.text(st.characters(codec=None, exclude_categories=())),
    )
)
def test_validate_never_raises_even_without_the_jvm_sanitizing(value):
    """Defense in depth: raw input the JVM would have repaired first (unpaired surrogates in
    str, undecoded bytes) still ends in the DLQ or as an event, never in an exception."""
    if isinstance(value, fz.Record):
        value = value.value
    for key in ("", "c-1", fz.jvm_view(value)[0]):
        result = CORE.validate(key, value, fz.NOW)
        if isinstance(result, Step):
            assert len(result.outputs) == 1
            assert check_outputs(result) != [PROCESSING_ERROR]
        else:
            assert result["customer_id"] == key


@examples(150)
@given(fz.st_wrong_type_event())
def test_wrong_types_with_hostile_spelling_go_to_the_dlq(text):
    outcome, reason = Harness().feed(text)
    assert outcome == "dlq" and reason != PROCESSING_ERROR


def test_random_streams_are_all_accounted_for():
    """The same properties over streams drawn by ``random.Random`` (the back end of
    ``fuzzed_records``), which spreads its choices evenly where Hypothesis prefers simple
    values: 300 fixed seeds (6,000 under ``fuzz``, where the seeds change every run)."""
    count = 300 * FACTOR
    base = 0 if PROFILE != "fuzz" else random.SystemRandom().randrange(10**9)
    for seed in range(base, base + count):
        d = fz.RandomDraw(random.Random(seed))
        first = d.integer(0, len(fz.CUSTOMERS) - 1)
        pool = [fz.CUSTOMERS[(first + i * 5) % len(fz.CUSTOMERS)] for i in range(d.integer(1, 3))]
        harness = Harness()
        try:
            for r in fz.stream(d, d.integer(1, 40), pool, now=fz.NOW):
                harness.feed(r.value)
            harness.finish()
        except AssertionError as exc:
            raise AssertionError(f"random stream seed {seed}: {exc}") from exc


@examples(20)
@given(fz.st_big_cart())
def test_no_cart_makes_an_email_request_kafka_refuses(texts):
    """The largest carts valid events can build: every request fits a Kafka record (checked
    for every output), larger ones are skipped as request_too_large."""
    harness = Harness(CART_CORE)
    for text in texts:
        assert harness.feed(text) == ("processed", None)
    harness.finish()
    decided = harness.outputs[Kind.REQUEST] + harness.skipped[REQUEST_TOO_LARGE]
    assert decided == 2  # both steps of the one journey


class CartModel:
    """The open cart as the rules say it should be, written out plainly (the reference for
    :func:`test_the_cart_follows_the_cart_rules_in_any_order`): lines as [product id,
    quantity], the newest activity, and the purchases ([cart id, time], last 5) that close a
    cart they name (or any cart, when either side has no id) at or after its activity.

    * cart_add: a new cart when there is none or the event names another one; the quantity
      adds to the product's line (late or not);
    * cart_remove: the quantity (all of it when none is given) leaves the product's lines; an
      empty cart is gone;
    * checkout_start listing lines (at most MAX_ORDER_LINES): a snapshot. Another cart, or
      none: a new cart of those lines; the same cart and not older than its activity: its
      lines become those; older (late): only the activity rule applies. Without lines: only
      the activity rule, when a cart is open;
    * purchase: closes the cart it names at or after the cart's activity."""

    def __init__(self) -> None:
        self.cart: dict | None = None  # {"id": cart id, "last": time, "lines": [[pid, qty]]}
        self.bought: list[tuple[str | None, int]] = []

    def same(self, cart_id: str | None) -> bool:
        assert self.cart is not None
        return cart_id is None or self.cart["id"] in (None, cart_id)

    def open(self, cart_id: str | None, ts: int) -> None:
        if self.cart is None or not self.same(cart_id):
            self.cart = {"id": cart_id, "last": ts, "lines": []}
        elif self.cart["id"] is None:
            self.cart["id"] = cart_id

    def touch(self, ts: int) -> None:
        assert self.cart is not None
        self.cart["last"] = last = max(self.cart["last"], ts)
        cart_id = self.cart["id"]
        if any(
            at >= last and (b is None or cart_id is None or b == cart_id) for b, at in self.bought
        ):
            self.cart = None

    def apply(self, kind: str, ts: int, props: dict) -> None:
        cart_id = props.get("cart_id")
        if kind == "cart_add":
            self.open(cart_id, ts)
            assert self.cart is not None
            for entry in self.cart["lines"]:
                if entry[0] == props["product_id"]:
                    entry[1] += props["quantity"]
                    break
            else:
                self.cart["lines"].append([props["product_id"], props["quantity"]])
            self.touch(ts)
        elif kind == "cart_remove":
            if self.cart is None:
                return
            kept = []
            for pid, qty in self.cart["lines"]:
                if pid == props["product_id"]:
                    qty = qty - props["quantity"] if "quantity" in props else 0
                if qty > 0:
                    kept.append([pid, qty])
            self.cart["lines"] = kept
            if not kept:
                self.cart = None
            else:
                self.touch(ts)
        elif kind == "checkout_start":
            lines = [[i["product_id"], i["quantity"]] for i in props.get("items", [])]
            lines = lines[: j.MAX_ORDER_LINES]
            late = self.cart is not None and self.same(cart_id) and ts < self.cart["last"]
            if lines and not late:
                self.open(cart_id, ts)
                assert self.cart is not None
                self.cart["lines"] = lines
            if self.cart is not None:
                self.touch(ts)
        elif kind == "purchase":
            self.bought = [*self.bought, (cart_id, ts)][-j.RECENT_PURCHASES :]
            c = self.cart
            if c is not None and ts >= c["last"] and (c["id"] is None or self.same(cart_id)):
                self.cart = None


_CART_IDS = st.sampled_from([None, "cart-1", "cart-2"])
_PRODUCTS = st.sampled_from(["p1", "p2", "p3"])
_QTY = st.integers(1, 3)


@st.composite
def st_cart_event(draw) -> tuple[str, int, dict]:
    """One cart event (kind, time, properties) within 30 minutes: no reminder falls due,
    many share an instant or arrive out of order."""
    kind = draw(st.sampled_from(["cart_add", "cart_remove", "checkout_start", "purchase"]))
    ts = T0 + draw(st.integers(0, 30)) * MINUTE
    props: dict = {}
    cart_id = draw(_CART_IDS)
    if cart_id is not None:
        props["cart_id"] = cart_id
    if kind == "cart_add":
        props.update(product_id=draw(_PRODUCTS), quantity=draw(_QTY), price=2.5)
    elif kind == "cart_remove":
        props["product_id"] = draw(_PRODUCTS)
        if draw(st.booleans()):
            props["quantity"] = draw(_QTY)
    elif kind == "checkout_start" and draw(st.booleans()):
        lines = draw(st.lists(st.tuples(_PRODUCTS, _QTY), max_size=4))
        props["items"] = [{"product_id": p, "quantity": q, "price": 1.5} for p, q in lines]
    elif kind == "purchase":
        props.update(order_id="o-1", revenue=1.0)
    return kind, ts, props


@examples(300)
@given(st.lists(st_cart_event(), min_size=1, max_size=12))
def test_the_cart_follows_the_cart_rules_in_any_order(events):
    """Cart events in any order (late ones too) leave the cart :class:`CartModel` says, and
    an open cart always has its one reminder journey, armed at its newest activity."""
    logic, state, model = customer_logic(), j.CustomerState(), CartModel()
    for n, (kind, ts, props) in enumerate(events):
        event = {
            "event_id": f"e-{n}",
            "event_type": kind,
            "customer_id": "c-m",
            "timestamp": ts,
            "context": {},
            "properties": props,
            "traits": {},
        }
        logic.on_event(state, event, MIN_WATERMARK)
        model.apply(kind, ts, props)
        cart, expected = state.cart, model.cart
        if expected is None:
            assert cart is None and state.runs == [], (n, cart, state.runs)
            continue
        assert cart is not None, (n, expected)
        assert (cart.cart_id, cart.last_activity) == (expected["id"], expected["last"])
        assert [[i.product_id, i.quantity] for i in cart.items] == expected["lines"]
        [run] = state.runs
        assert (run.anchor, run.due_at) == (cart.last_activity, cart.last_activity + HOUR)


# --------------------------------------------------------------------------- exhaustive


WRONG_TYPE_CASES = [
    pytest.param(kind, path, value, id=f"{kind}-{'.'.join(map(str, path))}-{i}")
    for kind, fields in fz.fields_by_type().items()
    for path, allowed in fields
    for i, value in enumerate(fz.wrong_values(allowed))
]
_SPECIAL = {
    ("event_type",): {"missing_event_type", "unknown_event_type"},
    ("customer_id",): {"missing_customer_id", "schema_violation"},
    ("event_id",): {"missing_event_id", "schema_violation"},
    ("timestamp",): {"bad_timestamp"},
}


@pytest.mark.parametrize(("kind", "path", "value"), WRONG_TYPE_CASES)
def test_every_field_of_every_schema_rejects_every_wrong_type(kind, path, value):
    """Generated from conf/schemas: each typed field given each value of a type it does not
    allow goes to the DLQ with the expected reason and that field's path."""
    doc = fz.with_value(fz.plain_event(kind), path, value)
    outcome, reason = Harness().feed(json.dumps(doc))
    assert outcome == "dlq"
    assert reason in _SPECIAL.get(path, {"schema_violation"})
    if path not in _SPECIAL:
        invalid = CORE.validator.validate(json.dumps(doc), fz.NOW)
        assert invalid.path == _render_path(path)


def test_wrong_type_cases_cover_every_event_type():
    assert {case.values[0] for case in WRONG_TYPE_CASES} == set(fz.EVENT_TYPES)
    assert len(WRONG_TYPE_CASES) > 500


@pytest.mark.parametrize("kind", fz.EVENT_TYPES)
def test_plain_events_are_valid(kind):
    assert Harness().feed(json.dumps(fz.plain_event(kind))) == ("processed", None)


def test_fuzzed_records_are_reproducible_bytes_and_all_accounted_for():
    """The helper other test layers mix into a real job: same list for the same seed,
    bytes, customers from the pool, every class present, every record accounted for."""
    records = fz.fuzzed_records(11, 400)
    assert records == fz.fuzzed_records(11, 400)
    assert records != fz.fuzzed_records(12, 400)
    assert all(type(r) is bytes for r in records)
    harness = Harness()
    for r in records:
        harness.feed(r)
    harness.finish()
    outcomes = Counter(o for o, _ in harness.results)
    reasons = Counter(r for _, r in harness.results if r)
    assert outcomes["processed"] > 100 and outcomes["dlq"] > 100, outcomes
    assert {
        "not_json",
        "schema_violation",
        "oversize",
        "unpaired_surrogate",
        "key_mismatch",
    } <= set(reasons), reasons
    assert harness.outputs[Kind.REQUEST] > 0 and harness.rows["cart_recoveries"] >= 0
    story = fz.fuzzed_records(3, 200, customers=("story-1", "story-2"))
    assert sum(b"story-1" in r for r in story) > 20


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"customer_id": " c-1\\t"}', "c-1"),
        ('{"customer_id": "\\u00a0c-1"}', "\xa0c-1"),  # Java keeps U+00A0, Python strips it
        ('{"customer_id": "a", "customer_id": "b"}', "b"),
        ('{"customer_id": "a", "x": NaN, "customer_id": "b"}', "a"),
        ('{"customer_id": {"customer_id": "n"}, "customer_id": "b"}', "b"),  # object skipped
        ('{"customer_id": {"customer_id": "n"}}', ""),
        ('{"timestamp": [], "customer_id": "b"}', "b"),
        ('{"customer_id": 7}', ""),
        ('{"customer_id": "\\ud800"}', ""),
        ('{"x": ' + "[" * 1001 + "]" * 1001 + ', "customer_id": "b"}', ""),
        ('{"x": ' + "[" * 999 + "]" * 999 + ', "customer_id": "b"}', "b"),  # 1000 levels
        ('{"x": ' + "[" * 1000 + "]" * 1000 + ', "customer_id": "b"}', ""),
        ('{"x": ' + "9" * 1001 + ', "customer_id": "b"}', ""),  # Jackson: number too long
        ('{"x": "a\\\\\\"]]", "customer_id": "b"}', "b"),
        ('[{"customer_id": "b"}]', ""),
        ("", ""),
    ],
)
def test_jvm_key_model(text, key):
    assert fz.jvm_key(text) == key


def test_jvm_view_decodes_like_the_kafka_source():
    assert fz.jvm_view(b'{"customer_id": "c\xff"}') == ("c\ufffd", '{"customer_id": "c\ufffd"}')
    assert fz.jvm_view('{"customer_id": "c\ud800"}')[1] == '{"customer_id": "c\ufffd"}'
    assert fz.jvm_view('"\ud83d\ude00\ude00"')[1] == '"\U0001f600\ufffd"'  # a pair is one char
    assert fz.jvm_view("x") == ("", "x")
    assert T0 < fz.NOW


# --------------------------------------------------------------------------- regressions
# Bugs the properties above found, each pinned by a plain example.


@pytest.mark.parametrize("event_type", ["page_view", "purchase", "cart_add"])
def test_traits_that_are_not_strings_never_reach_the_profile(event_type):
    """Only identify.json types traits: on other event types ``traits.locale`` (or email,
    first_name, timezone) could be an object, a list or a number, and went into the
    profile: ClickHouse refused the profile rows of that customer from then on (String
    columns), until an identify overwrote the trait. Now only string traits are taken."""
    harness = Harness()
    doc = fz.plain_event(event_type, customer="c-t")
    doc["traits"] = {
        "email": 5,
        "first_name": ["x"],
        "locale": {"é": 10**30, "": []},
        "timezone": True,
    }
    doc.get("context", {}).pop("locale", None)  # a string context.locale fills the profile
    assert harness.feed(json.dumps(doc)) == ("processed", None)  # harness checks the rows
    profile = j.decode_state(harness.state["c-t"]).profile
    assert (profile.email, profile.first_name, profile.locale, profile.timezone) == (
        None,
        None,
        None,
        None,
    )
    doc = fz.plain_event("page_view", customer="c-t", ts=T0 + 1)
    doc.update(event_id="e-2", traits={"first_name": "Bob", "email": "bob@example.com"})
    harness.feed(json.dumps(doc))
    profile = j.decode_state(harness.state["c-t"]).profile
    assert (profile.first_name, profile.email) == ("Bob", "bob@example.com")  # strings: kept


@pytest.mark.parametrize("category", [{"a": 1}, ["shoes"], 5, 1.5, True, None, ""])
def test_a_purchase_category_that_is_not_a_string_is_not_counted(category):
    """purchase.json does not define ``properties.category``: an object or list raised
    TypeError (unhashable) and a number made the profile unserializable (orjson refuses
    non-string keys), so the event went to the DLQ as processing_error."""
    harness = Harness()
    doc = fz.plain_event("purchase", customer="c-p")
    doc["properties"]["category"] = category
    assert harness.feed(json.dumps(doc)) == ("processed", None)
    assert j.decode_state(harness.state["c-p"]).profile.category_counts == {}
    doc["properties"]["category"] = "shoes"
    doc["event_id"] = "e-2"
    harness.feed(json.dumps(doc))
    assert j.decode_state(harness.state["c-p"]).profile.category_counts == {"shoes": 1}


@pytest.mark.parametrize(("lines", "sent"), [(10, True), (50, False)])
def test_an_email_request_too_large_for_kafka_is_skipped(lines, sent):
    """50 cart lines of 512 '"' characters (name) and 2,048 (image URL), each escaped again
    in the HTML, rendered a 1.2 MB email request: above Kafka's max.request.size, so the
    sink failed the job, and the restarted job replayed it. It is now skipped as
    request_too_large, with its email_requests row suppressed for that reason."""
    harness = Harness(CART_CORE)
    for text in fz.big_cart("c-big", lines, '"'):
        assert harness.feed(text) == ("processed", None)
    step1 = [row for row in harness.request_rows if row["step"] == 1]
    assert len(step1) == 1
    if sent:
        assert harness.outputs[Kind.REQUEST] == 1 and not harness.skipped
        assert (step1[0]["status"], step1[0]["reason"]) == ("sent", "")
    else:
        assert harness.outputs[Kind.REQUEST] == 0
        assert harness.skipped == Counter({REQUEST_TOO_LARGE: 1})
        assert (step1[0]["status"], step1[0]["reason"]) == ("suppressed", REQUEST_TOO_LARGE)
    assert MAX_REQUEST_BYTES < KAFKA_MAX_RECORD


@pytest.mark.parametrize(
    ("email", "sent"),
    [
        ("a@b@c.de", False),
        ("a@", False),
        ("@b.de", False),
        ("a\ufeff@b.de", False),
        ("ä@ü.de", True),
        ("a+<b>@c", True),
    ],
)
def test_a_request_is_only_sent_to_an_address_of_the_published_shape(email, sent):
    """Traits of non-identify events are unchecked strings: ``"a@"`` or ``"a@b@c.de"`` as
    ``traits.email`` of a page_view went out as ``to`` of an email request, against
    email_request.json (``^[^@\\s]+@[^@\\s]+$``). Now such a reminder is skipped
    (render_failed) like any other unrenderable one."""
    harness = Harness()
    view = fz.plain_event("page_view", customer="c-e")
    view["traits"] = {"email": email}
    harness.feed(json.dumps(view))
    cart = fz.plain_event("cart_add", customer="c-e", ts=T0 + 1)
    cart["event_id"] = "e-2"
    harness.feed(json.dumps(cart))
    harness.finish()  # check_outputs validates every request against email_request.json
    if sent:
        assert harness.outputs[Kind.REQUEST] == 2 and not harness.skipped
    else:
        assert harness.outputs[Kind.REQUEST] == 0
        assert harness.skipped == Counter({"render_failed": 2})


def test_a_zero_price_never_prints_with_a_minus_sign():
    """``"price": -0.0`` is valid (``"minimum": 0``) and the email showed "EUR -0.00" as
    unit and line price (issue 9); the amounts reach Babel through the same rounding."""
    from udfs.core.l10n import format_money
    from udfs.core.render import _to_cents

    amounts = (-0.0, -0.004, 0.0, 0.005, -1.5)
    assert [format_money(_to_cents(x), "EUR", "en") for x in amounts] == [
        "€0.00",
        "€0.00",
        "€0.00",
        "€0.01",
        "-€1.50",
    ]
    assert [format_money(x, "EUR", "de") for x in amounts] == [
        "0,00\xa0€",
        "0,00\xa0€",
        "0,00\xa0€",
        "0,01\xa0€",
        "-1,50\xa0€",
    ]
    harness = Harness(CART_CORE)
    who = fz.plain_event("identify", customer="c-z")
    cart = fz.plain_event("cart_add", customer="c-z", ts=T0 + 1)
    cart["event_id"] = "e-2"
    cart["properties"]["price"] = -0.0
    for doc in (who, cart):
        harness.feed(json.dumps(doc))
    harness.finish()  # check_outputs: no "EUR -" in any request
    assert harness.outputs[Kind.REQUEST] == 2


@pytest.mark.parametrize(
    ("late", "lines"),
    [
        # a checkout listing its items is a snapshot of the cart, but a late one must not
        # undo the newer contents (plain_event's checkout lists sku-1 once)
        ("checkout_start", [("sku-1", 1), ("sku-2", 1)]),
        ("cart_add", [("sku-1", 2), ("sku-2", 1)]),  # quantities add up, late or not
        ("cart_remove", [("sku-1", 1)]),
    ],
)
def test_a_late_cart_event_does_not_send_the_steps_again(late, lines):
    """A cart event not newer than the cart's last activity (out of order, or the same
    instant) re-armed the journey from step 1 with the same armed_at: once the steps had
    fired, both were sent again under the same request ids (and counted twice). A late
    event that arrived before the steps fired changed nothing, so the result depended on
    when the watermark passed."""
    harness = Harness(CART_CORE)
    cart = fz.plain_event("cart_add", customer="c-l", ts=T0 + HOUR)
    second = fz.plain_event("cart_add", customer="c-l", ts=T0 + HOUR)
    second["properties"].update(product_id="sku-2")
    second["event_id"] = "e-1b"
    events = [
        fz.plain_event("identify", customer="c-l", ts=T0),
        cart,
        second,
        fz.plain_event("page_view", customer="c-l", ts=T0 + 30 * HOUR),
    ]
    for i, doc in enumerate(events):
        doc["event_id"] = doc["event_id"] + f"-{i}"
        assert harness.feed(json.dumps(doc)) == ("processed", None)
    harness.fire(T0 + 30 * HOUR)
    assert harness.outputs[Kind.REQUEST] == 2  # steps 1 and 2
    again = fz.plain_event(late, customer="c-l", ts=T0 + HOUR - MINUTE)
    again["event_id"] = "late-1"
    if late == "cart_remove":
        again["properties"].update(product_id="sku-2")
    assert harness.feed(json.dumps(again)) == ("processed", None)
    harness.finish()
    assert harness.outputs[Kind.REQUEST] == 2  # (the harness also refuses a request id twice)
    state = j.decode_state(harness.state["c-l"])
    assert (state.profile.emails_sent, state.profile.journey_status) == (2, "completed")
    assert [(i.product_id, i.quantity) for i in state.cart.items] == lines
    assert state.cart.last_activity == T0 + HOUR
