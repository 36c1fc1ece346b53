"""Event validation: reason codes and paths for malformed input, exact normalization of
valid events of every type, DLQ records, and schema files as the source of event types."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factories import EVENT_TYPES, SCHEMA_DIR
from tests.unit.malformed_corpus import (
    BASE_CART_ADD,
    BASE_IDENTIFY,
    CORPUS,
    DAY_MS,
    MAX_EVENT_BYTES,
    SEEN_AT,
    Case,
    padded_to,
    variant,
)
from udfs.core.validation import EventValidator, Invalid, Reason, dlq_record

ALL_REASONS = frozenset(value for name, value in vars(Reason).items() if not name.startswith("_"))
# 2000-01-01T00:00:00Z, the default lower bound for event timestamps.
Y2K = 946_684_800_000


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(SCHEMA_DIR)


def event(**fields: Any) -> str:
    base = {"event_id": "e-1", "event_type": "cart_add", "customer_id": "c-1", "timestamp": SEEN_AT}
    base.update(fields)
    return json.dumps(base)


def normalized(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "event_type": "cart_add",
        "customer_id": "c-1",
        "timestamp": SEEN_AT,
        "context": {},
        "properties": {},
        "traits": {},
    }
    base.update(fields)
    return base


def assert_exactly(result: object, expected: dict[str, Any]) -> None:
    """Equal, and equal as JSON too: 2 == 2.0 in Python, but not on the wire."""
    assert result == expected
    assert json.dumps(result, sort_keys=True) == json.dumps(expected, sort_keys=True)


def copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


# --- malformed input ---------------------------------------------------------------


def test_corpus_is_large_distinct_and_covers_every_reason() -> None:
    assert len(CORPUS) >= 30
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    assert len({case.raw for case in CORPUS}) == len(CORPUS)
    assert {case.reason for case in CORPUS} == ALL_REASONS


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_rejects_malformed_event_with_reason_and_path(
    validator: EventValidator, case: Case
) -> None:
    result = validator.validate(case.raw, SEEN_AT)

    assert isinstance(result, Invalid)
    assert (result.reason, result.path) == (case.reason, case.path)


def test_accepts_nesting_of_exactly_the_limit(validator: EventValidator) -> None:
    from tests.unit.malformed_corpus import CART, _nested, variant

    result = validator.validate(variant(CART, context__deep=_nested(254)), SEEN_AT)

    assert not isinstance(result, Invalid), result
    assert result["context"]["deep"] == _nested(254)


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_dlq_record_of_every_malformed_event_encodes_as_utf8_json(
    validator: EventValidator, case: Case
) -> None:
    result = validator.validate(case.raw, SEEN_AT)
    assert isinstance(result, Invalid)

    encoded = orjson.dumps(dlq_record(case.raw, result, SEEN_AT, 65_536))

    back = orjson.loads(encoded)
    assert (back["reason"], back["path"]) == (case.reason, case.path)
    for key in ("event_id", "customer_id"):
        assert back[key] is None or back[key].encode("utf-8")


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if isinstance(c.raw, str)], ids=lambda case: case.id
)
def test_rejects_malformed_event_the_same_way_when_given_as_utf8_bytes(
    validator: EventValidator, case: Case
) -> None:
    assert isinstance(case.raw, str)
    raw = case.raw.encode("utf-8", "surrogatepass")  # lone surrogates -> invalid UTF-8

    result = validator.validate(raw, SEEN_AT)

    assert isinstance(result, Invalid)
    assert (result.reason, result.path) == (case.reason, case.path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "",
            Invalid("not_json", "$", "not valid JSON: Expecting value at line 1 column 1"),
        ),
        (
            "x" * (MAX_EVENT_BYTES + 1),
            Invalid("oversize", "$", "event is larger than 65536 bytes"),
        ),
        (b"{\xff}", Invalid("not_utf8", "$", "not valid UTF-8 (first bad byte at offset 1)")),
        ("[1]", Invalid("not_object", "$", "event must be a JSON object")),
        (
            event(event_type="nope"),
            Invalid(
                "unknown_event_type",
                "$.event_type",
                "event_type is not one of the types defined in the schema directory",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(event_id=" e-7 ", customer_id=None),
            Invalid(
                "missing_customer_id", "$.customer_id", "customer_id is missing or blank", "e-7"
            ),
        ),
        (
            event(event_id="", customer_id=" c-9 "),
            Invalid("missing_event_id", "$.event_id", "event_id is missing or blank", None, "c-9"),
        ),
        (
            event(timestamp="2026-01-05 10:00:00+01:00"),
            Invalid(
                "bad_timestamp",
                "$.timestamp",
                "timestamp must be RFC 3339 with a UTC offset (e.g. 2026-01-05T10:00:00+01:00)"
                " or integer epoch milliseconds",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(timestamp=SEEN_AT + DAY_MS + 1),
            Invalid(
                "future_timestamp",
                "$.timestamp",
                "timestamp is more than 86400000 ms after the time the event was seen",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(properties={"price": 1}),
            Invalid(
                "schema_violation",
                "$.properties.product_id",
                "required property 'product_id' is missing (cart_add.json)",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(properties={"product_id": "p", "price": -1}),
            Invalid(
                "schema_violation",
                "$.properties.price",
                "must be >= 0 (cart_add.json: minimum)",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(context=[]),
            Invalid(
                "schema_violation",
                "$.context",
                "must be of type object (envelope.json: type)",
                "e-1",
                "c-1",
            ),
        ),
        (
            event(properties={"product_id": "p", "price": 1, "currency": "EURO"}),
            Invalid(
                "bad_currency",
                "$.properties.currency",
                "currency must be a 3-letter ISO 4217 code",
                "e-1",
                "c-1",
            ),
        ),
    ],
    ids=[
        "not_json",
        "oversize",
        "not_utf8",
        "not_object",
        "unknown_event_type",
        "missing_customer_id",
        "missing_event_id",
        "bad_timestamp_space_separator",
        "future_timestamp",
        "schema_required",
        "schema_minimum",
        "schema_type",
        "bad_currency",
    ],
)
def test_rejects_with_exact_message_and_extracted_ids(
    validator: EventValidator, raw: str | bytes, expected: Invalid
) -> None:
    assert validator.validate(raw, SEEN_AT) == expected


@pytest.mark.parametrize(
    ("raw", "personal_value"),
    [
        (variant(BASE_IDENTIFY, traits__email="alice@@x"), "alice"),
        (variant(BASE_IDENTIFY, traits__first_name="Zebediah" * 20), "Zebediah"),
        (variant(BASE_IDENTIFY, traits__locale="Mrs Smith"), "Smith"),
        (variant(BASE_CART_ADD, properties__price="call Bob on 555-0100"), "555-0100"),
        (variant(BASE_CART_ADD, properties__currency="Bobby"), "Bobby"),
        (variant(BASE_CART_ADD, timestamp="born 1980-02-03"), "1980"),
        ('{"email": "alice@example.com", ', "alice"),
    ],
    ids=["email", "first_name", "locale", "price", "currency", "timestamp", "not_json"],
)
def test_rejects_without_putting_the_offending_value_in_the_message(
    validator: EventValidator, raw: str, personal_value: str
) -> None:
    result = validator.validate(raw, SEEN_AT)

    assert isinstance(result, Invalid)
    assert personal_value not in result.message
    assert personal_value not in result.path


def test_rejects_event_whose_utf8_size_exceeds_the_limit_though_its_length_does_not(
    validator: EventValidator,
) -> None:
    raw = padded_to(BASE_CART_ADD, MAX_EVENT_BYTES - 3)[:-3] + 'éé"}}'
    assert len(raw.encode("utf-8")) == MAX_EVENT_BYTES + 1
    assert len(raw) < MAX_EVENT_BYTES

    result = validator.validate(raw, SEEN_AT)

    assert isinstance(result, Invalid)
    assert result.reason == "oversize"


def test_applies_the_configured_size_and_future_limits() -> None:
    strict = EventValidator(SCHEMA_DIR, max_event_bytes=200, max_future_ms=0)
    small = event(properties={"product_id": "p", "price": 1})

    assert not isinstance(strict.validate(small, SEEN_AT), Invalid)
    assert strict.validate(padded_to(json.loads(small), 201), SEEN_AT) == Invalid(
        "oversize", "$", "event is larger than 200 bytes"
    )
    late = strict.validate(
        event(timestamp=SEEN_AT + 1, properties={"product_id": "p", "price": 1}), SEEN_AT
    )
    assert isinstance(late, Invalid)
    assert late.reason == "future_timestamp"


def test_rejects_non_text_input_with_type_error(validator: EventValidator) -> None:
    with pytest.raises(TypeError, match="raw event must be str or bytes, got int"):
        validator.validate(42, SEEN_AT)  # type: ignore[arg-type]


# --- valid events --------------------------------------------------------------------

VALID_CASES = [
    pytest.param(
        {
            "event_id": " pv-1 ",
            "event_type": "page_view",
            "customer_id": "\tc-1\n",
            "timestamp": 1_767_603_600_000,
            "context": {"page": {"url": "https://shop.example/"}, "user_agent": "Mozilla/5.0"},
            "properties": {"url": "https://shop.example/", "experiment": {"arm": "b"}},
            "sent_at": "2026-01-05T09:00:00Z",
            "anonymous_id": "a-1",
        },
        normalized(
            event_id="pv-1",
            event_type="page_view",
            timestamp=1_767_603_600_000,
            context={"page": {"url": "https://shop.example/"}, "user_agent": "Mozilla/5.0"},
            properties={"url": "https://shop.example/", "experiment": {"arm": "b"}},
        ),
        id="page_view_epoch_ms_trims_ids_drops_unknown_top_level_keys",
    ),
    pytest.param(
        {
            "event_id": "pv-2",
            "event_type": "product_view",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T12:00:00+02:00",
            "properties": {
                "product_id": " sku-1 ",
                "price": 20,
                "currency": "usd",
                "name": " Mug ",
            },
        },
        normalized(
            event_id="pv-2",
            event_type="product_view",
            timestamp=1_767_607_200_000,
            properties={"product_id": "sku-1", "price": 20.0, "currency": "USD", "name": " Mug "},
        ),
        id="product_view_offset_plus_two_hours",
    ),
    pytest.param(
        {
            "event_id": "ca-1",
            "event_type": "cart_add",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T10:00:00+01:00",
            "properties": {
                "product_id": "sku-1 ",
                "price": 19,
                "currency": "eur",
                "cart_id": " cart-9",
                "name": "Blue <b>mug</b>",
                "category": "kitchen",
                "image_url": "https://img.example/1.png",
                "color": "blue",
            },
        },
        normalized(
            event_id="ca-1",
            timestamp=1_767_603_600_000,
            properties={
                "product_id": "sku-1",
                "price": 19.0,
                "currency": "EUR",
                "cart_id": "cart-9",
                "name": "Blue <b>mug</b>",
                "category": "kitchen",
                "image_url": "https://img.example/1.png",
                "color": "blue",
                "quantity": 1,
            },
        ),
        id="cart_add_defaults_quantity_to_1",
    ),
    pytest.param(
        {
            "event_id": "ca-2",
            "event_type": "cart_add",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T09:00:00.123456789z",
            "properties": {"product_id": "sku-2", "price": 0, "quantity": 2.0},
        },
        normalized(
            event_id="ca-2",
            timestamp=1_767_603_600_123,
            properties={"product_id": "sku-2", "price": 0.0, "quantity": 2},
        ),
        id="cart_add_quantity_2_0_becomes_int_and_nanoseconds_truncate",
    ),
    pytest.param(
        {
            "event_id": "cr-1",
            "event_type": "cart_remove",
            "customer_id": "c-1",
            "timestamp": "2026-01-05t03:30:00-05:30",
            "properties": {"product_id": " sku-1", "cart_id": "cart-9"},
        },
        normalized(
            event_id="cr-1",
            event_type="cart_remove",
            timestamp=1_767_603_600_000,
            properties={"product_id": "sku-1", "cart_id": "cart-9"},
        ),
        id="cart_remove_has_no_default_quantity",
    ),
    pytest.param(
        {
            "event_id": "cs-1",
            "event_type": "checkout_start",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T08:00:00Z",
            "properties": {
                "cart_id": "cart-9",
                "value": 57,
                "currency": "Gbp",
                "items": [
                    {"product_id": " sku-1 ", "quantity": 3.0, "price": 19, "currency": "gbp"},
                    {"product_id": "sku-2"},
                ],
            },
        },
        normalized(
            event_id="cs-1",
            event_type="checkout_start",
            timestamp=SEEN_AT,
            properties={
                "cart_id": "cart-9",
                "value": 57.0,
                "currency": "GBP",
                "items": [
                    {"product_id": "sku-1", "quantity": 3, "price": 19.0, "currency": "GBP"},
                    {"product_id": "sku-2"},
                ],
            },
        ),
        id="checkout_start_normalizes_items",
    ),
    pytest.param(
        {
            "event_id": "pu-1",
            "event_type": "purchase",
            "customer_id": "c-1",
            "timestamp": SEEN_AT + DAY_MS,
            "properties": {
                "order_id": " o-1 ",
                "revenue": 39.98,
                "currency": "eur",
                "cart_id": "cart-9",
            },
        },
        normalized(
            event_id="pu-1",
            event_type="purchase",
            timestamp=SEEN_AT + DAY_MS,
            properties={
                "order_id": "o-1",
                "revenue": 39.98,
                "currency": "EUR",
                "cart_id": "cart-9",
            },
        ),
        id="purchase_exactly_at_future_limit",
    ),
    pytest.param(
        {
            "event_id": "id-1",
            "event_type": "identify",
            "customer_id": "c-1",
            "timestamp": Y2K,
            "traits": {
                "email": " Alice@Example.COM ",
                "first_name": "Alice",
                "last_name": "Smith",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
                "consent": {"email": True},
                "vip": True,
            },
        },
        normalized(
            event_id="id-1",
            event_type="identify",
            timestamp=Y2K,
            traits={
                "email": "alice@example.com",
                "first_name": "Alice",
                "last_name": "Smith",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
                "consent": {"email": True},
                "vip": True,
            },
        ),
        id="identify_lowercases_email_at_lower_timestamp_bound",
    ),
    pytest.param(
        {
            "event_id": "un-1",
            "event_type": "unsubscribe",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T08:00:00-00:00",
        },
        normalized(event_id="un-1", event_type="unsubscribe", timestamp=SEEN_AT),
        id="unsubscribe_minimal_gets_empty_sections",
    ),
    pytest.param(
        {
            "event_id": "hb-1",
            "event_type": "hard_bounce",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T08:00:00Z",
            "properties": {"email": "ann@example.com", "code": "5.1.1"},
        },
        normalized(
            event_id="hb-1",
            event_type="hard_bounce",
            timestamp=SEEN_AT,
            properties={"email": "ann@example.com", "code": "5.1.1"},
        ),
        id="hard_bounce_keeps_its_properties",
    ),
    pytest.param(
        {
            "event_id": "sc-1",
            "event_type": "spam_complaint",
            "customer_id": "c-1",
            "timestamp": "2026-01-05T08:00:00Z",
            "properties": {"feedback_type": "abuse"},
        },
        normalized(
            event_id="sc-1",
            event_type="spam_complaint",
            timestamp=SEEN_AT,
            properties={"feedback_type": "abuse"},
        ),
        id="spam_complaint_keeps_its_properties",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), VALID_CASES)
def test_normalizes_valid_event(validator: EventValidator, doc: dict, expected: dict) -> None:
    assert_exactly(validator.validate(json.dumps(doc), SEEN_AT), expected)


@pytest.mark.parametrize(("doc", "expected"), VALID_CASES)
def test_normalizes_valid_event_given_as_bytes(
    validator: EventValidator, doc: dict, expected: dict
) -> None:
    assert_exactly(validator.validate(json.dumps(doc).encode("utf-8"), SEEN_AT), expected)


def test_normalized_cases_cover_every_event_type() -> None:
    assert {case.values[1]["event_type"] for case in VALID_CASES} == EVENT_TYPES


@pytest.mark.parametrize(
    ("timestamp", "epoch_ms"),
    [
        ("2026-03-01T12:00:00+02:00", 1_772_359_200_000),
        ("2026-03-01T10:00:00Z", 1_772_359_200_000),
        ("2026-03-01T04:30:00.999-05:30", 1_772_359_200_999),
        ("2026-03-01T10:00:00.9999999+00:00", 1_772_359_200_999),
        ("2024-02-29T00:00:00+14:00", 1_709_114_400_000),
        ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999),
        (1_772_359_200_000, 1_772_359_200_000),
    ],
)
def test_normalizes_timestamp_to_utc_epoch_ms(
    validator: EventValidator, timestamp: str | int, epoch_ms: int
) -> None:
    raw = event(event_type="page_view", timestamp=timestamp)

    result = validator.validate(raw, epoch_ms)

    assert isinstance(result, dict)
    assert result["timestamp"] == epoch_ms


def test_normalizes_event_of_exactly_the_maximum_size(validator: EventValidator) -> None:
    raw = padded_to(BASE_CART_ADD, MAX_EVENT_BYTES)
    assert len(raw.encode("utf-8")) == MAX_EVENT_BYTES

    result = validator.validate(raw, SEEN_AT)

    assert isinstance(result, dict)
    assert len(result["context"]["pad"]) > 65_000


def test_rejects_timestamp_one_ms_before_the_lower_bound_unless_configured(
    validator: EventValidator,
) -> None:
    raw = event(timestamp="1999-12-31T23:59:59.999Z", properties={"product_id": "p", "price": 1})
    lenient = EventValidator(SCHEMA_DIR, min_timestamp_ms=0)

    rejected = validator.validate(raw, SEEN_AT)
    accepted = lenient.validate(raw, SEEN_AT)

    assert isinstance(rejected, Invalid)
    assert rejected.reason == "bad_timestamp"
    assert isinstance(accepted, dict)
    assert accepted["timestamp"] == Y2K - 1


def test_keeps_the_last_value_of_a_duplicated_key(validator: EventValidator) -> None:
    raw = (
        '{"event_id": "e-1", "event_type": "unsubscribe", "customer_id": "c-0",'
        f' "timestamp": {SEEN_AT}, "customer_id": "c-1"}}'
    )

    assert_exactly(validator.validate(raw, SEEN_AT), normalized(event_type="unsubscribe"))


def test_accepts_deeply_nested_unknown_property(validator: EventValidator) -> None:
    nested: list = []
    innermost = nested
    for _ in range(200):
        innermost.append([])
        innermost = innermost[0]
    raw = event(event_type="page_view", properties={"trail": nested})

    result = validator.validate(raw, SEEN_AT)

    assert isinstance(result, dict)
    assert result["properties"] == {"trail": nested}


def test_does_not_alias_the_parsed_sections_it_normalizes(validator: EventValidator) -> None:
    raw = event(properties={"product_id": "p", "price": 1})

    first = validator.validate(raw, SEEN_AT)
    assert isinstance(first, dict)
    first["properties"]["price"] = 99.0
    second = validator.validate(raw, SEEN_AT)

    assert isinstance(second, dict)
    assert second["properties"] == {"product_id": "p", "price": 1.0, "quantity": 1}


def test_pickled_validator_validates_the_same(validator: EventValidator) -> None:
    clone = pickle.loads(pickle.dumps(validator))
    valid = event(properties={"product_id": "p", "price": 1})
    invalid = event(properties={"product_id": "p", "price": -1})

    assert clone.event_types == validator.event_types
    assert clone.validate(valid, SEEN_AT) == validator.validate(valid, SEEN_AT)
    assert clone.validate(invalid, SEEN_AT) == validator.validate(invalid, SEEN_AT)


# --- schema directory ----------------------------------------------------------------


def test_event_types_are_the_schema_files_except_envelope_and_email_request(
    validator: EventValidator,
) -> None:
    assert validator.event_types == EVENT_TYPES


def test_new_schema_file_adds_an_event_type(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    raw = event(event_type="wishlist_add", properties={"product_id": " sku-1 "})
    assert EventValidator(schemas).validate(raw, SEEN_AT) == Invalid(
        "unknown_event_type",
        "$.event_type",
        "event_type is not one of the types defined in the schema directory",
        "e-1",
        "c-1",
    )
    (schemas / "wishlist_add.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["properties"],
                "properties": {
                    "properties": {"type": "object", "required": ["product_id"]},
                },
            }
        )
    )

    extended = EventValidator(schemas)

    assert extended.event_types == EVENT_TYPES | {"wishlist_add"}
    assert_exactly(
        extended.validate(raw, SEEN_AT),
        normalized(event_type="wishlist_add", properties={"product_id": "sku-1"}),
    )
    missing = extended.validate(event(event_type="wishlist_add"), SEEN_AT)
    assert isinstance(missing, Invalid)
    assert (missing.reason, missing.path) == ("schema_violation", "$.properties")


def test_rejects_schema_file_whose_name_is_not_an_event_type(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    (schemas / "cart_add.bak.json").write_text("{}")

    with pytest.raises(ValueError, match=r"cart_add\.bak\.json: name must be <event_type>\.json"):
        EventValidator(schemas)


def test_rejects_invalid_schema_naming_the_file(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    (schemas / "cart_add.json").write_text('{"type": "objekt"}')

    with pytest.raises(
        ValueError, match=r"^schema cart_add\.json: invalid JSON Schema at \$\.type"
    ):
        EventValidator(schemas)


def test_rejects_schema_directory_without_envelope(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    (schemas / "envelope.json").unlink()

    with pytest.raises(ValueError, match=r"envelope\.json is missing"):
        EventValidator(schemas)


def test_reports_root_path_when_fast_and_detailed_validators_disagree(tmp_path: Path) -> None:
    # "\d" is ASCII-only for jsonschema_rs (ECMA 262) but Unicode for Python's re, so
    # only the fast validator rejects "٣"; the fast validator decides.
    schemas = copy_schemas(tmp_path)
    (schemas / "coupon.json").write_text(
        json.dumps({"properties": {"properties": {"properties": {"code": {"pattern": "^\\d+$"}}}}})
    )

    result = EventValidator(schemas).validate(
        event(event_type="coupon", properties={"code": "٣"}), SEEN_AT
    )

    assert result == Invalid("schema_violation", "$", "rejected by the event schema", "e-1", "c-1")


# --- DLQ records ---------------------------------------------------------------------


def test_dlq_record_holds_payload_reason_and_times(validator: EventValidator) -> None:
    raw = variant(BASE_IDENTIFY, traits__email="alice@@x")
    invalid = validator.validate(raw, SEEN_AT)
    assert isinstance(invalid, Invalid)

    record = dlq_record(raw, invalid, SEEN_AT + 123, 65_536)

    assert record == {
        "payload": raw,
        "payload_truncated": False,
        "payload_bytes": len(raw),
        "reason": "schema_violation",
        "path": "$.traits.email",
        "message": (
            "must match the pattern ^\\s*[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+\\s*$ "
            "(identify.json: pattern)"
        ),
        "event_id": "e-3",
        "customer_id": "c-1",
        "seen_at": SEEN_AT + 123,
        "seen_at_iso": "2026-01-05T08:00:00.123Z",
    }
    assert "alice" not in record["message"]
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize(
    ("limit", "kept_chars"), [(65_536, 32_768), (65_535, 32_767)], ids=["even_limit", "odd_limit"]
)
def test_dlq_record_truncates_on_a_utf8_character_boundary(limit: int, kept_chars: int) -> None:
    raw = "é" * 40_000
    invalid = Invalid("oversize", "$", "event is larger than 65536 bytes")

    record = dlq_record(raw, invalid, SEEN_AT, limit)

    assert record["payload"] == "é" * kept_chars
    assert len(record["payload"].encode("utf-8")) in (limit, limit - 1)
    assert record["payload_truncated"] is True
    assert record["payload_bytes"] == 80_000


def test_dlq_record_keeps_payload_of_exactly_the_limit() -> None:
    record = dlq_record("ab€", Invalid("not_json", "$", "m"), SEEN_AT, 5)

    assert (record["payload"], record["payload_truncated"], record["payload_bytes"]) == (
        "ab€",
        False,
        5,
    )


def test_dlq_record_replaces_bytes_that_are_not_utf8() -> None:
    record = dlq_record(b"\xff\xfeab", Invalid("not_utf8", "$", "m"), SEEN_AT, 100)

    assert (record["payload"], record["payload_truncated"], record["payload_bytes"]) == (
        "\ufffd\ufffdab",
        False,
        4,
    )


def test_rejects_non_string_event_id_even_when_an_operator_allows_it_in_the_envelope(
    tmp_path: Path,
) -> None:
    schemas = copy_schemas(tmp_path)
    envelope = json.loads((schemas / "envelope.json").read_text())
    envelope["properties"]["event_id"] = {"type": ["string", "integer"]}
    (schemas / "envelope.json").write_text(json.dumps(envelope))

    result = EventValidator(schemas).validate(event(event_type="page_view", event_id=7), SEEN_AT)

    assert result == Invalid(
        "schema_violation", "$.event_id", "must be of type string", None, "c-1"
    )
