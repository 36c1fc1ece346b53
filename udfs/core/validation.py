"""Parse, validate and normalize raw customer events (pure Python, no pyflink).

The hot path is: size check -> UTF-8 decode -> ``json`` parse -> a few envelope checks
in code -> one compiled ``jsonschema_rs`` validator per event type (envelope + type
schema) -> normalization in place. It only ever returns an accepted event: at the first
thing it does not accept, the record is handed, raw, to the detailed path, which runs
every check in the documented order and names the reason and path. There, when a fast
validator rejects an event, the pure-Python ``jsonschema`` validator (much slower,
docs/PERFORMANCE.md#costs-behind-the-design) runs, to find a deterministic error path and
a message built from the *schema* (never from the event, so no personal data leaks into
the DLQ message or logs). Both paths give the same result for every input
(tests/unit/test_validation_paths.py compares them).

Decisions worth knowing:

* Event types are the ``*.json`` files in the schema directory except ``envelope.json``
  and ``email_request.json``; the file stem is the type name.
* Every event is validated against ``envelope.json`` and then against its own type
  schema. Schema files are self-contained (``$ref`` only within a file, ``#/$defs/...``)
  so operators can edit one file without a registry.
* A ``default`` declared in a type schema for a key directly inside the event's
  ``context``, ``properties`` or ``traits`` object is applied when that key is absent
  (this is how cart_add's quantity defaults to 1).
* Duplicate object keys are accepted, last one wins (Python's ``json`` behaviour). The
  normalized event is re-serialized downstream, so every consumer sees the same single
  value; rejecting them would cost an ``object_pairs_hook`` on every object.
* ``NaN``/``Infinity`` literals and numbers that overflow a double are ``not_json``:
  they cannot be written back out as JSON.
* Documents nested deeper than ``MAX_DEPTH`` (256) arrays/objects are ``not_json``, checked
  on the text before any parser recurses. Without an explicit limit the outcome depended on
  the interpreter: the stdlib parser stops at the recursion limit, which differs between a
  test process and the interpreter embedded in a TaskManager, and the JVM's JSON reader
  (Jackson) stops at 1,000 levels, so the same record got different reasons in different
  places.
* A string (value or object key) holding an unpaired UTF-16 surrogate, which JSON can
  spell as an escape (``"\\ud800"``) in perfectly valid syntax, is rejected as
  ``unpaired_surrogate`` with the path of the first such string in document order. It
  cannot be encoded as UTF-8, so every encoder downstream (state, Kafka, ClickHouse, the
  hand-over to the JVM) would raise on it. Rejected rather than repaired to U+FFFD: a
  repaired id could collide with another customer's, product or cart id, and the producer
  gets to see its bug in the DLQ. Ids taken from such an event for the DLQ record are
  left out (``None``) when they are not encodable.
* Timestamps: RFC 3339 ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`` (``T``/``Z`` in
  either case, up to 9 fraction digits truncated to ms, no leap second ``:60``), or an
  integer of epoch milliseconds. Floats, numeric strings and booleans are rejected. The
  offset must lie within ±18:00 (RFC 3339 allows up to ±23:59, but the JVM, which reads
  event time for the watermark, cannot represent more, and no time zone uses more than
  ±14:00): an event the JVM cannot time would be applied without moving the watermark.
  Accepted range is ``min_timestamp_ms`` (default 2000-01-01, which also catches epoch
  *seconds* sent by mistake) to 9999-12-31T23:59:59.999Z.
* Top-level keys other than the seven of the normalized event are dropped.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import jsonschema
import jsonschema_rs
import orjson

from udfs.core.instant import iso_ms


class Reason:
    """DLQ reason codes (stable strings, consumed by operators and dashboards)."""

    NOT_UTF8: Final = "not_utf8"
    NOT_JSON: Final = "not_json"
    NOT_OBJECT: Final = "not_object"
    OVERSIZE: Final = "oversize"
    MISSING_EVENT_TYPE: Final = "missing_event_type"
    UNKNOWN_EVENT_TYPE: Final = "unknown_event_type"
    MISSING_CUSTOMER_ID: Final = "missing_customer_id"
    MISSING_EVENT_ID: Final = "missing_event_id"
    BAD_TIMESTAMP: Final = "bad_timestamp"
    FUTURE_TIMESTAMP: Final = "future_timestamp"
    SCHEMA_VIOLATION: Final = "schema_violation"
    BAD_CURRENCY: Final = "bad_currency"
    UNPAIRED_SURROGATE: Final = "unpaired_surrogate"


ENVELOPE_FILE: Final = "envelope.json"
# Schema files in conf/schemas/ that describe something other than an input event type.
NON_EVENT_SCHEMA_FILES: Final = frozenset({ENVELOPE_FILE, "email_request.json"})


def event_types(schema_dir: Path | str) -> frozenset[str]:
    """The event types ``schema_dir`` defines (one ``<event_type>.json`` each)."""
    return frozenset(
        path.stem
        for path in Path(schema_dir).glob("*.json")
        if path.name not in NON_EVENT_SCHEMA_FILES
    )


DEFAULT_MAX_EVENT_BYTES: Final = 65_536
MAX_DEPTH: Final = 256
DEFAULT_MAX_FUTURE_MS: Final = 24 * 3600 * 1000
DEFAULT_MIN_TIMESTAMP_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

_EVENT_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# [0-9], not \d: \d also matches non-ASCII digits such as "٢".
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_rfc3339_fullmatch: Final = _RFC3339.fullmatch
_fromisoformat: Final = datetime.fromisoformat
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# JSON strings (skipped) and the brackets outside them, for the nesting depth
_DEPTH_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')

_ID_KEYS: Final = ("product_id", "cart_id", "order_id")
_AMOUNT_KEYS: Final = ("price", "revenue", "value")
_SECTIONS: Final = ("context", "properties", "traits")
# Every key _normalize_line may touch: a line holding none of them is left as it is.
_LINE_KEYS: Final = frozenset((*_ID_KEYS, *_AMOUNT_KEYS, "quantity", "currency"))
_DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
# Keywords that could resolve differently once a schema is a resource inside another one.
_NOT_COMBINABLE_KEYWORDS: Final = frozenset(
    {"$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor"}
)
_EPOCH_ORDINAL: Final = 719_163  # date(1970, 1, 1).toordinal()
_MAX_OFFSET_MS: Final = 18 * 3_600_000  # java.time.ZoneOffset's range
# An id extracted for the DLQ record only; longer values are garbage, not ids.
_MAX_EXTRACTED_ID_CHARS: Final = 256


@dataclass(frozen=True)
class Invalid:
    """Why an event was rejected.

    Invariant: ``message`` is built from the schema and the code only; it never contains
    a value taken from the event, so it is safe to log and to put in the DLQ.
    """

    reason: str
    path: str
    message: str
    event_id: str | None = None
    customer_id: str | None = None


class _Rejected(Exception):
    """Internal control flow: carries (reason, path, message) out of nested helpers."""

    def __init__(self, reason: str, path: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        self.message = message


_NOT_PARSED = object()


def _reject_constant(name: str) -> Any:
    raise _Rejected(Reason.NOT_JSON, "$", "NaN and Infinity are not valid JSON")


def _parse_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Rejected(Reason.NOT_JSON, "$", "number out of double range")
    return number


@dataclass(frozen=True)
class _CompiledSchema:
    """One schema file compiled twice: fast (Rust) for every event, slow (Python) for
    error details on rejected events only. Also holds the ``default`` values it declares
    one level below ``context``/``properties``/``traits``."""

    name: str
    schema: Any  # a JSON object or boolean schema document
    fast: Any
    slow: jsonschema.protocols.Validator
    defaults: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    @classmethod
    def compile(cls, name: str, schema: Any) -> _CompiledSchema:
        # check_schema also rejects documents that are neither an object nor a boolean.
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(
                f"schema {name}: invalid JSON Schema at {_render_path(exc.absolute_path)}: "
                f"{exc.message}"
            ) from exc
        try:
            fast = jsonschema_rs.Draft202012Validator(schema)
        except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
            raise ValueError(f"schema {name}: cannot be compiled: {exc}") from exc
        slow = jsonschema.Draft202012Validator(schema)
        return cls(name, schema, fast, slow, _section_defaults(schema))


def _section_defaults(schema: Any) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    result = []
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(props, Mapping):
        return ()
    for section in _SECTIONS:
        sub = props.get(section)
        sub_props = sub.get("properties") if isinstance(sub, Mapping) else None
        if not isinstance(sub_props, Mapping):
            continue
        found = tuple(
            (key, spec["default"])
            for key, spec in sorted(sub_props.items())
            if isinstance(spec, Mapping) and "default" in spec
        )
        if found:
            result.append((section, found))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class _FastPlan:
    """What the lean path needs for one event type: one call answering "valid against
    the envelope and the type schema?", and the type's defaults as (index into
    ``_SECTIONS``, key, value, whether the value must be deep-copied), in the order
    ``_normalize_sections`` applies them."""

    is_valid: Callable[[Any], Any]
    defaults: tuple[tuple[int, str, Any, bool], ...]

    @classmethod
    def build(cls, envelope: _CompiledSchema, compiled: _CompiledSchema) -> _FastPlan:
        defaults = tuple(
            (_SECTIONS.index(section), key, value, type(value) not in _IMMUTABLE_JSON)
            for section, pairs in compiled.defaults
            for key, value in pairs
        )
        return cls(_both_schemas(envelope, compiled), defaults)


# deepcopy returns these as they are.
_IMMUTABLE_JSON: Final = frozenset({str, int, float, bool, type(None)})
_ENVELOPE_URI: Final = "urn:inboxflow:envelope"
_TYPE_URI: Final = "urn:inboxflow:event-type"


def _both_schemas(envelope: _CompiledSchema, compiled: _CompiledSchema) -> Callable[[Any], Any]:
    """``is_valid`` of envelope and type schema in one ``jsonschema_rs`` call where that
    means the same as two (each schema a resource of its own in a registry, so its
    ``#/...`` references resolve as when it is compiled alone; the event is handed to
    Rust once, about a fifth less than two calls on the bench's events), else the two
    compiled validators one after the other."""
    if _combinable(envelope.schema) and _combinable(compiled.schema):
        try:
            registry = jsonschema_rs.Registry(
                [(_ENVELOPE_URI, envelope.schema), (_TYPE_URI, compiled.schema)],
                draft=jsonschema_rs.Draft202012,
            )
            combined = jsonschema_rs.Draft202012Validator(
                {"allOf": [{"$ref": _ENVELOPE_URI}, {"$ref": _TYPE_URI}]}, registry=registry
            )
        except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError):
            pass
        else:
            is_valid: Callable[[Any], Any] = combined.is_valid
            return is_valid
    envelope_is_valid = envelope.fast.is_valid
    type_is_valid = compiled.fast.is_valid

    def both(doc: Any) -> Any:
        return envelope_is_valid(doc) and type_is_valid(doc)

    return both


def _combinable(schema: Any) -> bool:
    """True if ``schema`` means the same as a resource in a registry as on its own: a
    2020-12 object schema (``$schema`` absent or 2020-12) whose references all stay
    inside it (``#...``) and that declares no resource, anchor or dialect of its own.
    Conservative: a false "no" only costs a second call."""
    if not isinstance(schema, dict) or schema.get("$schema", _DRAFT_2020_12) != _DRAFT_2020_12:
        return False
    stack: list[Any] = [{key: value for key, value in schema.items() if key != "$schema"}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "$schema" in node or not _NOT_COMBINABLE_KEYWORDS.isdisjoint(node):
                return False
            ref = node.get("$ref", "#")
            if not (isinstance(ref, str) and ref.startswith("#")):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _load_schema_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"schema {path}: cannot be read as JSON: {exc}") from exc


class EventValidator:
    """Turns raw event records into normalized event dicts or an :class:`Invalid`.

    Invariants:
    * ``validate`` never raises for any ``str``/``bytes`` input; every rejection is an
      ``Invalid`` with one of the :class:`Reason` codes and a value-free message.
    * Checks run in a fixed order (oversize, not_utf8, not_json, not_object, event type,
      customer_id, event_id, timestamp, future timestamp, schema, normalization), so the
      reason for a given input does not depend on anything but the input and the schemas.
    * Schemas are read and compiled once, in the constructor; the instance is immutable
      afterwards and safe to share between threads. Pickling keeps the schema documents
      and recompiles on load (the Rust validators themselves cannot be pickled).
    """

    event_types: frozenset[str]

    def __init__(
        self,
        schema_dir: Path,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        *,
        min_timestamp_ms: int = DEFAULT_MIN_TIMESTAMP_MS,
    ) -> None:
        schema_dir = Path(schema_dir)
        envelope_path = schema_dir / ENVELOPE_FILE
        if not envelope_path.is_file():
            raise ValueError(f"schema directory {schema_dir}: {ENVELOPE_FILE} is missing")
        type_schemas: dict[str, Any] = {}
        for path in sorted(schema_dir.glob("*.json")):
            if path.name in NON_EVENT_SCHEMA_FILES:
                continue
            if not _EVENT_TYPE_NAME.fullmatch(path.stem):
                raise ValueError(
                    f"schema file {path}: name must be <event_type>.json with event_type "
                    f"matching {_EVENT_TYPE_NAME.pattern}"
                )
            type_schemas[path.stem] = _load_schema_file(path)
        self._setup(
            _load_schema_file(envelope_path),
            type_schemas,
            max_event_bytes,
            max_future_ms,
            min_timestamp_ms,
        )

    def _setup(
        self,
        envelope: Any,
        type_schemas: Mapping[str, Any],
        max_event_bytes: int,
        max_future_ms: int,
        min_timestamp_ms: int,
    ) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be >= 1, got {max_event_bytes}")
        if max_future_ms < 0:
            raise ValueError(f"max_future_ms must be >= 0, got {max_future_ms}")
        if not 0 <= min_timestamp_ms <= MAX_TIMESTAMP_MS:
            raise ValueError(f"min_timestamp_ms out of range, got {min_timestamp_ms}")
        if not type_schemas:
            raise ValueError("no event type schemas found")
        self._max_event_bytes = max_event_bytes
        self._max_future_ms = max_future_ms
        self._min_timestamp_ms = min_timestamp_ms
        self._envelope = _CompiledSchema.compile(ENVELOPE_FILE, envelope)
        self._types = {
            name: _CompiledSchema.compile(f"{name}.json", schema)
            for name, schema in sorted(type_schemas.items())
        }
        self.event_types = frozenset(self._types)
        self._plans = {
            name: _FastPlan.build(self._envelope, compiled)
            for name, compiled in self._types.items()
        }
        # One decoder for all calls: json.loads(..., parse_float=...) would build a new
        # JSONDecoder per call.
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "envelope": self._envelope.schema,
            "types": {name: c.schema for name, c in self._types.items()},
            "max_event_bytes": self._max_event_bytes,
            "max_future_ms": self._max_future_ms,
            "min_timestamp_ms": self._min_timestamp_ms,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(
            state["envelope"],
            state["types"],
            state["max_event_bytes"],
            state["max_future_ms"],
            state["min_timestamp_ms"],
        )

    def validate(self, raw: str | bytes, seen_at_ms: int) -> dict[str, Any] | Invalid:
        """Return the normalized event, or why ``raw`` was rejected.

        ``seen_at_ms`` (epoch ms UTC, passed in by the caller) bounds how far in the
        future an event timestamp may be.

        The lean path for events that pass: the checks of ``_validate_detailed`` in
        whatever order is cheapest (for an accepted event every check passes, so order
        cannot matter), one schema call, normalization in place of the freshly parsed
        document. At the first check that does not pass, or anything unusual, the raw
        record goes to ``_validate_detailed``, which decides from scratch.
        """
        if type(raw) is str:
            text = raw
            if text.isascii():
                size = len(text)
            else:
                try:
                    # Its size in UTF-8; a lone surrogate (not UTF-8 at all) raises.
                    size = len(text.encode("utf-8"))
                except UnicodeEncodeError:
                    return self._validate_detailed(raw, seen_at_ms)
            if size > self._max_event_bytes:
                return self._validate_detailed(raw, seen_at_ms)
        elif type(raw) is bytes:
            if len(raw) > self._max_event_bytes:
                return self._validate_detailed(raw, seen_at_ms)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return self._validate_detailed(raw, seen_at_ms)
        else:
            return self._validate_detailed(raw, seen_at_ms)
        # Nesting: accepted only if at most MAX_DEPTH, known from a bound that holds for
        # any text the parser below accepts (else the detailed path measures). On the
        # deepest chain of containers each array has a "[" of its own and each object a
        # "{" and a "}", plus, if it holds the next one, a key (two quotes at least) and a
        # ":". With k objects on the chain, len >= 5 * (k - 1) + 2, so depth <= count("[")
        # + (len - 2) // 5 + 1. "[" is rare in events and "in" is far cheaper than a count
        # (which walks the whole text); counting "{" too is the fallback bound.
        arrays = text.count("[") if "[" in text else 0
        if arrays + (len(text) - 2) // 5 + 1 > MAX_DEPTH and arrays + text.count("{") > MAX_DEPTH:
            return self._validate_detailed(raw, seen_at_ms)
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._validate_detailed(raw, seen_at_ms)
        if type(doc) is not dict:
            return self._validate_detailed(raw, seen_at_ms)
        event_type = doc.get("event_type")
        plan = self._plans.get(event_type) if type(event_type) is str else None
        event_id = doc.get("event_id")
        customer_id = doc.get("customer_id")
        timestamp = doc.get("timestamp")
        if plan is None or type(event_id) is not str or type(customer_id) is not str:
            return self._validate_detailed(raw, seen_at_ms)
        event_id = event_id.strip()
        customer_id = customer_id.strip()
        if type(timestamp) is str:
            timestamp = _parse_rfc3339(timestamp)
        elif type(timestamp) is not int:
            timestamp = None
        if (
            not event_id
            or not customer_id
            or timestamp is None
            or not self._min_timestamp_ms <= timestamp <= MAX_TIMESTAMP_MS
            or timestamp > seen_at_ms + self._max_future_ms
        ):
            return self._validate_detailed(raw, seen_at_ms)
        try:
            valid = plan.is_valid(doc)
        except Exception:  # noqa: BLE001 - the detailed path decides (and raises as before)
            valid = False
        if not valid:
            return self._validate_detailed(raw, seen_at_ms)
        context = doc.get("context")
        properties = doc.get("properties")
        traits = doc.get("traits")
        # The document is ours and is dropped after this call: its section dicts become the
        # normalized event's (the detailed path copies them).
        if context is None:
            context = {}
        if properties is None:
            properties = {}
        if traits is None:
            traits = {}
        if type(context) is not dict or type(properties) is not dict or type(traits) is not dict:
            return self._validate_detailed(raw, seen_at_ms)
        if plan.defaults:
            sections = (context, properties, traits)
            for index, key, default, mutable in plan.defaults:
                section = sections[index]
                if key not in section:
                    section[key] = copy.deepcopy(default) if mutable else default
        try:
            # The path "" is never seen: a rejection goes to the detailed path.
            if not _LINE_KEYS.isdisjoint(properties):
                _normalize_line(properties, "")
            items = properties.get("items")
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict) and not _LINE_KEYS.isdisjoint(item):
                        _normalize_line(item, "")
        except _Rejected:
            return self._validate_detailed(raw, seen_at_ms)
        email = traits.get("email")
        if isinstance(email, str):
            traits["email"] = email.strip().lower()
        return {
            "event_id": event_id,
            "event_type": event_type,
            "customer_id": customer_id,
            "timestamp": timestamp,
            "context": context,
            "properties": properties,
            "traits": traits,
        }

    def _validate_detailed(self, raw: str | bytes, seen_at_ms: int) -> dict[str, Any] | Invalid:
        """``validate`` checking one thing after the other in the documented order, so a
        rejection names the first check that fails; also the reference for the lean path."""
        try:
            text = self._decode(raw)
        except _Rejected as rej:
            return Invalid(rej.reason, rej.path, rej.message)
        if text.count("{") + text.count("[") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
            return Invalid(
                Reason.NOT_JSON, "$", f"not valid JSON: nested deeper than {MAX_DEPTH} levels"
            )
        try:
            # orjson is faster and as strict as RFC 8259; only when it refuses does the
            # stdlib decoder run, to name the exact reason.
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = _NOT_PARSED
        from_fallback = doc is _NOT_PARSED
        try:
            if from_fallback:
                doc = self._decoder.decode(text)
        except _Rejected as rej:
            return Invalid(rej.reason, rej.path, rej.message)
        except json.JSONDecodeError as exc:
            return Invalid(
                Reason.NOT_JSON,
                "$",
                f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            )
        except ValueError:
            # int() refusing more than sys.get_int_max_str_digits() digits.
            return Invalid(Reason.NOT_JSON, "$", "not valid JSON: number too long")
        except RecursionError:
            return Invalid(Reason.NOT_JSON, "$", "not valid JSON: nesting too deep")
        if type(doc) is not dict:
            return Invalid(Reason.NOT_OBJECT, "$", "event must be a JSON object")
        event_id = _extract_id(doc.get("event_id"))
        customer_id = _extract_id(doc.get("customer_id"))
        if from_fallback:
            # orjson refuses unpaired surrogate escapes; the stdlib decoder keeps them.
            bad = _first_surrogate_path(doc)
            if bad is not None:
                return Invalid(
                    Reason.UNPAIRED_SURROGATE,
                    bad,
                    "string holds an unpaired UTF-16 surrogate (not encodable as UTF-8)",
                    event_id,
                    customer_id,
                )
        try:
            return self._check(doc, seen_at_ms)
        except _Rejected as rej:
            return Invalid(rej.reason, rej.path, rej.message, event_id, customer_id)

    def _decode(self, raw: str | bytes) -> str:
        limit = self._max_event_bytes
        if isinstance(raw, str):
            if raw.isascii():
                if len(raw) > limit:
                    raise _Rejected(Reason.OVERSIZE, "$", f"event is larger than {limit} bytes")
                return raw
            if len(raw.encode("utf-8", "surrogatepass")) > limit:
                raise _Rejected(Reason.OVERSIZE, "$", f"event is larger than {limit} bytes")
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:
                raise _Rejected(
                    Reason.NOT_UTF8, "$", "text contains lone surrogates, not encodable as UTF-8"
                ) from None
            return raw
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            raise TypeError(f"raw event must be str or bytes, got {type(raw).__name__}")
        if len(raw) > limit:
            raise _Rejected(Reason.OVERSIZE, "$", f"event is larger than {limit} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Rejected(
                Reason.NOT_UTF8, "$", f"not valid UTF-8 (first bad byte at offset {exc.start})"
            ) from None

    def _check(self, doc: dict[str, Any], seen_at_ms: int) -> dict[str, Any]:
        event_type = doc.get("event_type")
        if event_type is None or (isinstance(event_type, str) and not event_type.strip()):
            raise _Rejected(Reason.MISSING_EVENT_TYPE, "$.event_type", "event_type is missing")
        compiled = self._types.get(event_type) if isinstance(event_type, str) else None
        if compiled is None:
            raise _Rejected(
                Reason.UNKNOWN_EVENT_TYPE,
                "$.event_type",
                "event_type is not one of the types defined in the schema directory",
            )
        if _is_blank(doc.get("customer_id")):
            raise _Rejected(
                Reason.MISSING_CUSTOMER_ID, "$.customer_id", "customer_id is missing or blank"
            )
        if _is_blank(doc.get("event_id")):
            raise _Rejected(Reason.MISSING_EVENT_ID, "$.event_id", "event_id is missing or blank")
        timestamp = self._parse_timestamp(doc.get("timestamp"))
        if timestamp > seen_at_ms + self._max_future_ms:
            raise _Rejected(
                Reason.FUTURE_TIMESTAMP,
                "$.timestamp",
                f"timestamp is more than {self._max_future_ms} ms after the time the event "
                "was seen",
            )
        envelope_ok = _fast_is_valid(self._envelope, doc)
        type_ok = _fast_is_valid(compiled, doc)
        if not (envelope_ok and type_ok):
            # Explain only with the schemas that rejected: the slow validator is expensive
            # per schema.
            failed = tuple(
                schema
                for schema, ok in ((self._envelope, envelope_ok), (compiled, type_ok))
                if not ok
            )
            path, message = _first_schema_error(failed, doc)
            raise _Rejected(Reason.SCHEMA_VIOLATION, path, message)
        return {
            "event_id": _normalized_key_id(doc["event_id"], "$.event_id"),
            "event_type": event_type,
            "customer_id": _normalized_key_id(doc["customer_id"], "$.customer_id"),
            "timestamp": timestamp,
            **_normalize_sections(doc, compiled.defaults),
        }

    def _parse_timestamp(self, value: Any) -> int:
        if value is None:
            raise _Rejected(Reason.BAD_TIMESTAMP, "$.timestamp", "timestamp is missing")
        if type(value) is int:  # not isinstance: bool is an int subclass
            millis = value
        elif isinstance(value, str):
            parsed = _parse_rfc3339(value)
            if parsed is None:
                raise _Rejected(
                    Reason.BAD_TIMESTAMP,
                    "$.timestamp",
                    "timestamp must be RFC 3339 with a UTC offset (e.g. 2026-01-05T10:00:00+01:00)"
                    " or integer epoch milliseconds",
                )
            millis = parsed
        else:
            raise _Rejected(
                Reason.BAD_TIMESTAMP,
                "$.timestamp",
                "timestamp must be an RFC 3339 string or integer epoch milliseconds",
            )
        if not self._min_timestamp_ms <= millis <= MAX_TIMESTAMP_MS:
            raise _Rejected(
                Reason.BAD_TIMESTAMP,
                "$.timestamp",
                f"timestamp is outside the accepted range "
                f"[{self._min_timestamp_ms}, {MAX_TIMESTAMP_MS}] epoch ms",
            )
        return millis


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, brackets inside strings
    ignored (well-formedness is the parser's business)."""
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _fast_is_valid(compiled: _CompiledSchema, doc: Any) -> bool:
    try:
        return bool(compiled.fast.is_valid(doc))
    except (ValueError, RecursionError):
        # Defensive: jsonschema_rs refusing an instance (e.g. too deep) is a rejection.
        return False


def _normalized_key_id(value: Any, path: str) -> str:
    # envelope.json already demands a string; this only bites if an operator loosens
    # it, because keys and dedup need strings.
    if type(value) is not str:
        raise _Rejected(Reason.SCHEMA_VIOLATION, path, "must be of type string")
    return value.strip()


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _extract_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_EXTRACTED_ID_CHARS or not _encodable(text):
        return None
    return text


def _encodable(text: str) -> bool:
    """True unless ``text`` holds an unpaired surrogate (the only ``str`` content that
    UTF-8 cannot encode)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_surrogate_path(doc: Any) -> str | None:
    """Path of the first string (object key or value, document order) that UTF-8 cannot
    encode, or None. Iterative: the document may be nested as deep as the parser allows."""
    stack: list[tuple[bool, Any, tuple[Any, ...]]] = [(False, doc, ())]
    while stack:
        is_key, value, path = stack.pop()
        if type(value) is str:
            if not _encodable(value):
                return _render_path(path)
        elif not is_key and type(value) is dict:
            for key, child in reversed(list(value.items())):
                stack.append((False, child, (*path, key)))
                stack.append((True, key, (*path, key)))
        elif not is_key and type(value) is list:
            for index in range(len(value) - 1, -1, -1):
                stack.append((False, value[index], (*path, index)))
    return None


def _parse_rfc3339(text: str) -> int | None:
    """Epoch ms for an RFC 3339 date-time with offset, or None if it is not one."""
    # The regex enforces RFC 3339's shape (fromisoformat alone also takes week dates,
    # basic format, naive times, ...); fromisoformat, in C, then does the calendar
    # checks (day of month, leap years, hour <= 23, second <= 59, offset < 24 h).
    if _rfc3339_fullmatch(text) is None:
        return None
    try:
        parsed = _fromisoformat(text.upper())
    except ValueError:
        return None
    offset = parsed.utcoffset()
    if offset is None:  # unreachable: the regex demands an offset
        return None
    # Whole minutes (the regex allows no seconds in the offset), so this is exact.
    offset_ms = offset.days * 86_400_000 + offset.seconds * 1000
    if not -_MAX_OFFSET_MS <= offset_ms <= _MAX_OFFSET_MS:
        return None
    # Integer arithmetic on the local fields, equal to (parsed - epoch) // 1 ms but a third
    # of its cost (datetime.timestamp() goes through a float and can round a .999999
    # fraction up into the next second). offset_ms is whole milliseconds, so the floor of
    # the microseconds commutes with subtracting it.
    return (
        (parsed.toordinal() - _EPOCH_ORDINAL) * 86_400_000
        + parsed.hour * 3_600_000
        + parsed.minute * 60_000
        + parsed.second * 1000
        + parsed.microsecond // 1000
        - offset_ms
    )


def _normalize_sections(
    doc: Mapping[str, Any],
    defaults: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...],
) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        value = doc.get(name)
        if value is None:
            sections[name] = {}
        elif isinstance(value, dict):
            # Shallow copy: the normalized event must not alias a dict we then edit.
            sections[name] = dict(value)
        else:
            # Only reachable if an operator loosened envelope.json.
            raise _Rejected(Reason.SCHEMA_VIOLATION, f"$.{name}", "must be of type object")
    for name, pairs in defaults:
        section = sections[name]
        for key, default in pairs:
            if key not in section:
                section[key] = copy.deepcopy(default)
    _normalize_line(sections["properties"], "$.properties")
    items = sections["properties"].get("items")
    if isinstance(items, list):
        normalized_items = []
        for index, item in enumerate(items):
            if isinstance(item, dict):
                item = dict(item)
                _normalize_line(item, f"$.properties.items[{index}]")
            normalized_items.append(item)
        sections["properties"]["items"] = normalized_items
    traits = sections["traits"]
    email = traits.get("email")
    if isinstance(email, str):
        traits["email"] = email.strip().lower()
    return sections


def _normalize_line(values: dict[str, Any], path: str) -> None:
    """Normalize ids, amounts, quantity and currency of a properties object or an item,
    in place. Hot path: membership tests first, so absent keys cost one lookup each."""
    for key in _ID_KEYS:
        if key in values:
            value = values[key]
            if type(value) is str:
                value = value.strip()
                if not value:
                    raise _Rejected(Reason.SCHEMA_VIOLATION, f"{path}.{key}", "must not be blank")
                values[key] = value
    for key in _AMOUNT_KEYS:
        if key in values:
            value = values[key]
            if type(value) is int:  # floats stay as they are; bool is not int here
                try:
                    values[key] = float(value)
                except OverflowError:
                    raise _Rejected(
                        Reason.SCHEMA_VIOLATION, f"{path}.{key}", "number out of double range"
                    ) from None
    if "quantity" in values:
        quantity = values["quantity"]
        if type(quantity) is float and quantity.is_integer():
            # JSON Schema's "integer" accepts 2.0; downstream code wants an int.
            values["quantity"] = int(quantity)
    if "currency" in values:
        currency = values["currency"]
        # isascii() first: "ı".upper() == "I" and "ſ".upper() == "S".
        if not (
            type(currency) is str
            and len(currency) == 3
            and currency.isascii()
            and currency.isalpha()
        ):
            raise _Rejected(
                Reason.BAD_CURRENCY,
                f"{path}.currency",
                "currency must be a 3-letter ISO 4217 code",
            )
        values["currency"] = currency.upper()


# --- schema error details (slow path, rejected events only) -------------------------


def _first_schema_error(schemas: tuple[_CompiledSchema, ...], doc: Any) -> tuple[str, str]:
    """(path, message) of the error with the smallest path over all schemas.

    Sorting makes the choice independent of jsonschema's iteration order.
    """
    found: list[tuple[str, str]] = []
    for compiled in schemas:
        try:
            found.extend(
                _describe(error, compiled.name) for error in compiled.slow.iter_errors(doc)
            )
        except RecursionError:
            found.append(("$", f"{compiled.name}: document nested too deeply to validate"))
    if not found:
        # The fast and the slow validator disagree (e.g. regex dialects); the fast one
        # is authoritative for accept/reject.
        return "$", "rejected by the event schema"
    return min(found)


def _describe(error: jsonschema.ValidationError, schema_name: str) -> tuple[str, str]:
    """Path and a message that names the schema rule, never the offending value."""
    keyword = str(error.validator)
    expected = error.validator_value
    path = list(error.absolute_path)
    if keyword == "required" and isinstance(error.instance, dict) and isinstance(expected, list):
        missing = [name for name in expected if name not in error.instance]
        if missing:
            path.append(missing[0])
            return _render_path(
                path
            ), f"required property '{missing[0]}' is missing ({schema_name})"
    return _render_path(path), f"{_rule_text(keyword, expected)} ({schema_name}: {keyword})"


def _rule_text(keyword: str, expected: Any) -> str:
    match keyword:
        case "type":
            types = expected if isinstance(expected, list) else [expected]
            return "must be of type " + " or ".join(str(t) for t in types)
        case "minimum":
            return f"must be >= {expected}"
        case "exclusiveMinimum":
            return f"must be > {expected}"
        case "maximum":
            return f"must be <= {expected}"
        case "exclusiveMaximum":
            return f"must be < {expected}"
        case "multipleOf":
            return f"must be a multiple of {expected}"
        case "minLength":
            return f"must have at least {expected} characters"
        case "maxLength":
            return f"must have at most {expected} characters"
        case "pattern":
            return f"must match the pattern {expected}"
        case "format":
            return f"must be a valid {expected}"
        case "minItems":
            return f"must have at least {expected} items"
        case "maxItems":
            return f"must have at most {expected} items"
        case "uniqueItems":
            return "items must be unique"
        case "minProperties":
            return f"must have at least {expected} properties"
        case "maxProperties":
            return f"must have at most {expected} properties"
        case "additionalProperties" | "unevaluatedProperties":
            return "has properties the schema does not allow"
        case "enum":
            return "must be one of the values listed in the schema"
        case "const":
            return "must equal the value fixed in the schema"
        case "anyOf" | "oneOf":
            return "does not match the allowed alternatives"
        case "not":
            return "matches a form the schema forbids"
        case _:
            return "violates a schema rule"


def _render_path(parts: Any) -> str:
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


# --- dead-letter records -------------------------------------------------------------


def dlq_record(
    raw: str | bytes, invalid: Invalid, seen_at_ms: int, max_payload_bytes: int
) -> dict[str, Any]:
    """The DLQ value for a rejected event.

    ``payload`` is the original text cut to at most ``max_payload_bytes`` UTF-8 bytes on
    a character boundary; bytes that are not UTF-8 are decoded with U+FFFD replacement
    (lone surrogates in ``str`` input become ``?``). ``payload_bytes`` is the size of the
    original record.
    """
    if max_payload_bytes < 0:
        raise ValueError(f"max_payload_bytes must be >= 0, got {max_payload_bytes}")
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if isinstance(raw, bytes):
        original_size = len(raw)
        text = raw.decode("utf-8", "replace")
    else:
        original_size = len(raw.encode("utf-8", "surrogatepass"))
        text = raw
    encoded = text.encode("utf-8", "replace")
    truncated = len(encoded) > max_payload_bytes
    if truncated:
        # encoded is valid UTF-8, so "ignore" can only drop the one character cut in half.
        payload = encoded[:max_payload_bytes].decode("utf-8", "ignore")
    else:
        payload = encoded.decode("utf-8")
    return {
        "payload": payload,
        "payload_truncated": truncated,
        "payload_bytes": original_size,
        "reason": invalid.reason,
        "path": invalid.path,
        "message": invalid.message,
        "event_id": invalid.event_id,
        "customer_id": invalid.customer_id,
        "seen_at": seen_at_ms,
        "seen_at_iso": iso_ms(seen_at_ms),
    }
