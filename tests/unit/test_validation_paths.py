"""The lean path of ``EventValidator.validate`` against the detailed one (issue 13).

``validate`` accepts an event in whatever order its checks are cheapest and hands anything
it does not accept, raw, to ``_validate_detailed``, which runs the checks in the documented
order. These tests hold the two to the same result for every input: the same normalized
event (same key order, ``1`` is not ``1.0``: compared by ``repr``) or the same
``Invalid``. Also: the one-call schema check means the same as two calls, and the
integer timestamp arithmetic equals exact ``datetime`` arithmetic.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job.dev.gen import DEFAULT_START_MS, generate
from tests import fuzzing as fz
from tests.factories import SCHEMA_DIR
from tests.unit.malformed_corpus import CORPUS, SEEN_AT
from udfs.core import validation as v
from udfs.core.validation import EventValidator

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
# seen_at values around the fuzzers' event times: most accepted, some in the future.
SEEN_ATS = (fz.NOW, fz.T0, fz.T0 - fz.DAY, fz.T0 - 25 * fz.HOUR, SEEN_AT)


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(SCHEMA_DIR)


def assert_same(validator: EventValidator, raw: str | bytes, seen_at: int) -> object:
    lean = validator.validate(raw, seen_at)
    detailed = validator._validate_detailed(raw, seen_at)
    assert repr(lean) == repr(detailed)
    return lean


# --- the two paths -------------------------------------------------------------------


@SETTINGS
@given(record=fz.st_record(), seen_at=st.sampled_from(SEEN_ATS))
def test_both_paths_agree_on_hostile_records(
    validator: EventValidator, record: fz.Record, seen_at: int
) -> None:
    assert_same(validator, record.value, seen_at)
    assert_same(validator, fz.as_kafka_value(record.value), seen_at)


# Values that break one check or another: blank, wrong type, out of range, bad currency,
# a number only a double overflows, a float quantity, surrogates, deep nesting.
HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    "\x1c",
    "\u3000x\u3000",
    " sku ",
    0,
    -1,
    1,
    2.0,
    2.5,
    10**400,
    True,
    [],
    {},
    [{"product_id": " p "}],
    "eur",
    "EURO",
    "ıso",
    "2026-01-05T08:00:00+18:01",
    "2026-01-05t08:00:00.123456789z",
    "1767600000000",
    1_767_600_000_000,
    946_684_799_999,
    "\ud800",
    " Alice@Example.COM ",
    [[[[1]]]],
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path in ``doc`` (the document itself excluded)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.append((*prefix, index))
            found.extend(_paths(value, (*prefix, index)))
    return found


@st.composite
def st_mutated_event(draw: Any) -> str:
    """A valid event with a few values replaced, keys added or removed."""
    doc, _ = draw(fz.st_valid_event())
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.integers(0, 9))
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            extra = draw(st.sampled_from(sorted(v._LINE_KEYS) + ["email", "items", "x"]))
            parent[extra] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        else:
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
    return json.dumps(doc, ensure_ascii=draw(st.booleans()))


@SETTINGS
@given(raw=st_mutated_event(), seen_at=st.sampled_from(SEEN_ATS))
def test_both_paths_agree_on_mutated_valid_events(
    validator: EventValidator, raw: str, seen_at: int
) -> None:
    assert_same(validator, raw, seen_at)
    assert_same(validator, raw.encode("utf-8", "surrogatepass"), seen_at)


def test_both_paths_agree_on_the_generated_stream(validator: EventValidator) -> None:
    accepted = 0
    for record in generate(11, 20_000, 3000, DEFAULT_START_MS):
        for seen_at in (DEFAULT_START_MS + 30 * fz.DAY, DEFAULT_START_MS - fz.DAY):
            result = assert_same(validator, record.value, seen_at)
            # as the customer function gets it: text, non-ASCII characters and all
            assert_same(validator, record.value.decode("utf-8", errors="replace"), seen_at)
            accepted += isinstance(result, dict)
    assert accepted > 2900  # all but the malformed ones, seen after their event time


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_both_paths_agree_on_the_malformed_corpus(validator: EventValidator, case: Any) -> None:
    assert_same(validator, case.raw, SEEN_AT)
    if isinstance(case.raw, str):
        assert_same(validator, case.raw.encode("utf-8", "surrogatepass"), SEEN_AT)


def test_a_mutable_default_is_copied_for_every_event(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    (schemas / "tagged.json").write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"tags": {"type": "array", "default": ["new"]}},
                    },
                },
            }
        )
    )
    validator = EventValidator(schemas)
    raw = json.dumps(
        {"event_id": "e-1", "event_type": "tagged", "customer_id": "c-1", "timestamp": SEEN_AT}
    )
    first = validator.validate(raw, SEEN_AT)
    assert isinstance(first, dict)
    first["properties"]["tags"].append("changed")
    assert repr(validator.validate(raw, SEEN_AT)) == repr(
        validator._validate_detailed(raw, SEEN_AT)
    )
    again = validator.validate(raw, SEEN_AT)
    assert isinstance(again, dict)
    assert again["properties"]["tags"] == ["new"]


def test_valid_events_take_the_lean_path(
    validator: EventValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event the detailed path accepts, the lean path accepts on its own: text with
    non-ASCII characters too (as ``str`` and as UTF-8), and deep nesting within its bound
    (deeper, where neither bound settles it, the detailed path measures)."""
    seen_at = DEFAULT_START_MS + 30 * fz.DAY
    raws: list[str | bytes] = []
    for record in generate(12, 20_000, 2000, DEFAULT_START_MS, 0.0):
        text = record.value.decode("utf-8")
        raws += [record.value, text, text.replace('"name":"', '"name":"Ü\U0001d54f ')]
    raws += [_deep_event(kinds) for kinds in ("o" * 100, "a" * 100, "oa" * 50)]
    expected = [validator._validate_detailed(raw, seen_at) for raw in raws]

    def detailed(raw: str | bytes, seen_at_ms: int) -> object:
        raise AssertionError("the detailed path ran")

    monkeypatch.setattr(validator, "_validate_detailed", detailed)
    accepted = 0
    for raw, want in zip(raws, expected, strict=True):
        if isinstance(want, dict):
            assert repr(validator.validate(raw, seen_at)) == repr(want)
            accepted += 1
    assert accepted == len(raws)
    assert any(isinstance(raw, str) and not raw.isascii() for raw in raws)


# --- nesting ---------------------------------------------------------------------------


def _depth_of(value: Any) -> int:
    """Nesting of arrays and objects in ``value`` (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth_of, value), default=0)
    return 0


def _lean_bound(text: str) -> int:
    """The lean path's bound on the nesting of any JSON text it parses."""
    return text.count("[") + (len(text) - 2) // 5 + 1


def _chain(kinds: str, inner: Any = None) -> Any:
    """Containers inside each other, outermost first: "o" an object with key "", "a" an
    array; ``inner`` (None: nothing, the innermost container is empty) at the bottom."""
    value = inner
    for kind in reversed(kinds):
        if kind == "o":
            value = {} if value is None else {"": value}
        else:
            value = [] if value is None else [value]
    return value


def _deep_event(kinds: str, *, compact: bool = True) -> str:
    """A valid page_view, as short as can be around ``context[""]``, the chain of
    ``kinds``: nested ``len(kinds) + 2`` deep, the lean path's bound as tight as it gets
    for an event."""
    doc = {
        "event_id": "e",
        "event_type": "page_view",
        "customer_id": "c",
        "timestamp": SEEN_AT - 1,
        "context": {"": _chain(kinds)},
    }
    return json.dumps(doc, separators=(",", ":") if compact else None)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=60,
)


@SETTINGS
@given(value=JSON_VALUES)
def test_the_nesting_bound_holds_for_json_text(value: Any) -> None:
    for text in (
        json.dumps(value, separators=(",", ":")),
        json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        json.dumps(value, indent=1),
    ):
        assert _depth_of(value) <= _lean_bound(text)


@settings(SETTINGS, max_examples=200)
@given(kinds=st.text("oa", min_size=1, max_size=300))
def test_the_nesting_bound_holds_for_the_tightest_chains(kinds: str) -> None:
    text = json.dumps(_chain(kinds), separators=(",", ":"))
    assert _depth_of(json.loads(text)) == len(kinds) <= _lean_bound(text)
    if "a" not in kinds:
        assert _lean_bound(text) == len(kinds)  # tight: objects cost exactly five


@pytest.mark.parametrize("levels", [253, 254, 255, 256])
@pytest.mark.parametrize("pattern", ["o", "a", "oa", "aao"])
@pytest.mark.parametrize("compact", [True, False])
def test_both_paths_agree_at_the_nesting_limit(
    validator: EventValidator, levels: int, pattern: str, compact: bool
) -> None:
    kinds = (pattern * levels)[:levels]
    raw = _deep_event(kinds, compact=compact)
    result = assert_same(validator, raw, SEEN_AT)
    assert_same(validator, raw.encode("utf-8"), SEEN_AT)
    assert isinstance(result, dict) == (levels + 2 <= v.MAX_DEPTH)


@SETTINGS
@given(
    kinds=st.text("oa", min_size=200, max_size=280),
    inner=st.sampled_from((None, "[[{{", 1, "ü")),
    compact=st.booleans(),
)
def test_both_paths_agree_on_deep_events(
    validator: EventValidator, kinds: str, inner: Any, compact: bool
) -> None:
    doc = {**fz.plain_event("cart_add", ts=SEEN_AT - 1), "context": {"deep": _chain(kinds, inner)}}
    raw = json.dumps(doc, separators=(",", ":") if compact else None, ensure_ascii=compact)
    assert_same(validator, raw, SEEN_AT)
    assert_same(validator, raw.encode("utf-8"), SEEN_AT)


# --- one schema call -----------------------------------------------------------------


def test_the_shipped_schemas_are_checked_in_one_call(validator: EventValidator) -> None:
    for plan in validator._plans.values():
        assert getattr(plan.is_valid, "__name__", None) == "is_valid"  # not the two-call pair


@pytest.mark.parametrize(
    "schema",
    [
        {"$id": "https://example.com/t.json", "type": "object"},
        {"properties": {"a": {"$id": "inner", "type": "string"}}},
        {"properties": {"a": {"$ref": "other.json#/$defs/x"}}},
        {"$ref": "https://example.com/t.json"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}},
        {"$defs": {"x": {"$dynamicAnchor": "node"}}, "$dynamicRef": "#node"},
        {"$defs": {"x": {"$anchor": "x"}}, "$ref": "#x"},
        True,
        False,
    ],
)
def test_schemas_that_could_mean_something_else_in_a_registry_are_not_combined(
    schema: Any,
) -> None:
    assert not v._combinable(schema)


def test_shipped_schemas_are_combinable() -> None:
    for path in SCHEMA_DIR.glob("*.json"):
        if path.name in v.NON_EVENT_SCHEMA_FILES - {v.ENVELOPE_FILE}:
            continue
        assert v._combinable(json.loads(path.read_text())), path.name


@pytest.mark.parametrize("with_id", [False, True])
def test_one_call_and_two_calls_agree(tmp_path: Path, with_id: bool) -> None:
    """With an ``$id`` in a type schema the plan falls back to two calls: same results."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    if with_id:
        for path in schemas.glob("*.json"):
            doc = json.loads(path.read_text())
            doc["$id"] = f"https://example.com/{path.name}"
            path.write_text(json.dumps(doc))
    validator = EventValidator(schemas)
    d = fz.RandomDraw(random.Random(5))
    for _ in range(300):
        record = fz.record(d, fz.PLAIN_CUSTOMERS, fz.T0)
        assert_same(validator, record.value, fz.NOW)
        if not isinstance(record.value, str):
            continue
        try:
            doc = orjson.loads(record.value)  # refuses unpaired surrogates, as Rust would
        except orjson.JSONDecodeError:
            continue
        kind = doc.get("event_type") if isinstance(doc, dict) else None
        plan = validator._plans.get(kind) if isinstance(kind, str) else None
        if plan is None:
            continue
        envelope, compiled = validator._envelope, validator._types[kind]
        two_calls = envelope.fast.is_valid(doc) and compiled.fast.is_valid(doc)
        assert bool(plan.is_valid(doc)) == bool(two_calls)


def test_both_paths_agree_under_a_loosened_envelope(tmp_path: Path) -> None:
    """An envelope that no longer demands string ids and object sections: the checks in
    code behind the schema (reached only then) give the same results on both paths."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    (schemas / "envelope.json").write_text(json.dumps({"type": "object"}))
    for path in schemas.glob("*.json"):
        if path.name not in v.NON_EVENT_SCHEMA_FILES:
            path.write_text(json.dumps({"type": "object"}))
    validator = EventValidator(schemas)
    base = {"event_id": "e-1", "event_type": "cart_add", "customer_id": "c-1", "timestamp": SEEN_AT}
    d = fz.RandomDraw(random.Random(6))
    for field in ("event_id", "customer_id", "context", "properties", "traits"):
        for value in HOSTILE_VALUES:
            doc = {**base, field: copy.deepcopy(value)}
            assert_same(validator, json.dumps(doc), SEEN_AT)
            for _ in range(3):
                doc = fz.valid_event(d, "c-1", SEEN_AT)
                doc[field] = copy.deepcopy(value)
                assert_same(validator, json.dumps(doc), SEEN_AT)


# --- timestamps ----------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_rfc3339(text: str) -> int | None:
    """The parser before issue 13: exact datetime arithmetic."""
    if v._RFC3339.fullmatch(text) is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) > timedelta(hours=18):
        return None
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


@st.composite
def st_rfc3339(draw: Any) -> str:
    text = draw(st.datetimes()).isoformat(timespec="seconds")  # naive: the offset comes next
    digits = draw(st.integers(0, 10))
    if digits:
        text += "." + draw(st.text("0123456789", min_size=digits, max_size=digits))
    if draw(st.booleans()):
        text += draw(st.sampled_from(("Z", "z", "+00:00", "-00:00")))
    else:
        hours = draw(st.sampled_from((0, 1, 5, 13, 14, 17, 18, 19, 23, 24, 99)))
        minutes = draw(st.sampled_from((0, 1, 30, 45, 59, 60, 75, 99)))
        text += f"{draw(st.sampled_from('+-'))}{hours:02d}:{minutes:02d}"
    if draw(st.booleans()):
        text = text[:10] + "t" + text[11:]
    return text


@settings(SETTINGS, max_examples=2000)
@given(text=st_rfc3339())
def test_timestamp_arithmetic_equals_datetime_arithmetic(text: str) -> None:
    assert v._parse_rfc3339(text) == reference_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999999Z",
        "0001-01-01T00:00:00+18:00",
        "0001-01-01T00:00:00-18:00",
        "9999-12-31T23:59:59.999999-18:00",
        "2026-01-05T08:00:00+17:75",
        "2026-01-05T08:00:00+18:01",
        "2026-01-05T08:00:00-18:00",
        "2024-02-29T12:00:00.5+05:30",
        "2023-02-29T12:00:00Z",
        "2026-01-05T08:00:60Z",
    ],
)
def test_timestamp_corner_cases_equal_datetime_arithmetic(text: str) -> None:
    assert v._parse_rfc3339(text) == reference_rfc3339(text)


def test_timestamps_in_every_offset_of_a_day() -> None:
    moment = _EPOCH + timedelta(milliseconds=SEEN_AT + 123)
    for minutes in range(-18 * 60, 18 * 60 + 1, 15):
        text = moment.astimezone(timezone(timedelta(minutes=minutes))).isoformat()
        assert v._parse_rfc3339(text) == SEEN_AT + 123
