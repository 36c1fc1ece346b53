"""Malformed raw events with the reason code and JSON path the validator must report.

Reusable by any test layer (e.g. an end-to-end test can produce these to Kafka and
expect them on the DLQ). Every case is checked against ``EventValidator`` with
``seen_at_ms=SEEN_AT`` and the default limits (65,536 bytes, 24 h into the future).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

# 2026-01-05T08:00:00Z, the same instant as tests.factories.T0.
SEEN_AT = 1_767_600_000_000
DAY_MS = 24 * 3600 * 1000
MAX_EVENT_BYTES = 65_536

BASE_CART_ADD: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "cart_add",
    "customer_id": "c-1",
    "timestamp": "2026-01-05T08:00:00Z",
    "properties": {"product_id": "sku-1", "price": 19.99, "currency": "EUR"},
}
BASE_PURCHASE: dict[str, Any] = {
    "event_id": "e-2",
    "event_type": "purchase",
    "customer_id": "c-1",
    "timestamp": SEEN_AT,
    "properties": {
        "order_id": "o-1",
        "revenue": 39.98,
        "items": [{"product_id": "sku-1", "quantity": 2, "price": 19.99}],
    },
}
BASE_IDENTIFY: dict[str, Any] = {
    "event_id": "e-3",
    "event_type": "identify",
    "customer_id": "c-1",
    "timestamp": SEEN_AT,
    "traits": {"email": "alice@example.com"},
}


@dataclass(frozen=True)
class Case:
    id: str
    raw: str | bytes
    reason: str
    path: str


_DELETE = object()


def variant(base: dict[str, Any], **changes: Any) -> str:
    """JSON text of ``base`` with dotted-path keys changed (``properties__price=-1``)
    or removed (``=_DELETE``)."""
    doc = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = doc
        for key in parents:
            target = target.setdefault(key, {})
        if value is _DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(doc)


def padded_to(base: dict[str, Any], size: int) -> str:
    """Valid JSON of exactly ``size`` UTF-8 bytes (ASCII padding in context.pad)."""
    empty = variant(base, context__pad="")
    return variant(base, context__pad="x" * (size - len(empty.encode("utf-8"))))


def _nested(levels: int) -> Any:
    """``levels`` arrays inside each other around one string holding brackets."""
    value: Any = "[[[{{{"
    for _ in range(levels):
        value = [value]
    return value


CART = BASE_CART_ADD
_cart_json = json.dumps(CART)

CORPUS: tuple[Case, ...] = (
    # --- bytes and text ---
    Case("oversize_valid_json", padded_to(CART, MAX_EVENT_BYTES + 1), "oversize", "$"),
    Case("oversize_before_utf8_check", b"\xff" * (MAX_EVENT_BYTES + 1), "oversize", "$"),
    Case("bytes_ff_fe", b"\xff\xfe", "not_utf8", "$"),
    Case("truncated_multibyte_in_value", b'{"event_id": "\xc3"}', "not_utf8", "$"),
    Case("lone_surrogate_in_str", '{"event_id": "\ud800"}', "not_utf8", "$"),
    # valid JSON syntax: the escape spells a lone surrogate, which UTF-8 cannot encode
    Case(
        "surrogate_escape_in_name",
        _cart_json.replace('"sku-1"', '"sku-1", "name": "\\ud800"'),
        "unpaired_surrogate",
        "$.properties.name",
    ),
    Case(
        "low_surrogate_escape_in_customer_id",
        variant(CART, customer_id="c-\udc00"),
        "unpaired_surrogate",
        "$.customer_id",
    ),
    Case(
        "surrogate_escape_in_event_id",
        variant(CART, event_id="\udbff"),
        "unpaired_surrogate",
        "$.event_id",
    ),
    Case(
        "surrogate_escape_in_key",
        variant(CART, properties__extra={"\ud800": 1}),
        "unpaired_surrogate",
        '$.properties.extra["\\ud800"]',
    ),
    Case(
        "surrogate_escape_in_item",
        variant(
            BASE_PURCHASE,
            properties__items=[
                {"product_id": "sku-1", "quantity": 1, "price": 1.0, "name": "ok"},
                {"product_id": "sku-2\ud83d", "quantity": 1, "price": 1.0},
            ],
        ),
        "unpaired_surrogate",
        "$.properties.items[1].product_id",
    ),
    Case(
        "reversed_pair_escape",
        _cart_json.replace('"sku-1"', '"\\ude00\\ud83d"'),
        "unpaired_surrogate",
        "$.properties.product_id",
    ),
    Case("empty_string", "", "not_json", "$"),
    Case("whitespace_only", "   ", "not_json", "$"),
    Case("open_brace", "{", "not_json", "$"),
    Case("trailing_garbage", _cart_json + " x", "not_json", "$"),
    Case("two_documents", _cart_json + _cart_json, "not_json", "$"),
    Case("utf8_bom", "\ufeff" + _cart_json, "not_json", "$"),
    Case("nan_literal", _cart_json.replace("19.99", "NaN"), "not_json", "$"),
    Case("infinity_literal", _cart_json.replace("19.99", "-Infinity"), "not_json", "$"),
    Case("float_overflow", _cart_json.replace("19.99", "1e400"), "not_json", "$"),
    Case("int_with_5000_digits", _cart_json.replace("19.99", "9" * 5000), "not_json", "$"),
    Case("nesting_30000_deep", "[" * 30_000 + "]" * 30_000, "not_json", "$"),
    Case(
        "nesting_20000_deep_in_properties",
        _cart_json.replace('"sku-1"', "[" * 20_000 + "]" * 20_000),
        "not_json",
        "$",
    ),
    # 257 levels (the limit is 256): the root object, context, and 255 nested arrays
    Case("nesting_257_deep_in_context", variant(CART, context__deep=_nested(255)), "not_json", "$"),
    # beyond java.time's offset range: the JVM could not give it an event time
    Case(
        "timestamp_offset_beyond_18h",
        variant(CART, timestamp="2026-01-05T08:00:00-18:01"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case("single_quotes", "{'event_id': 'e-1'}", "not_json", "$"),
    Case("null", "null", "not_object", "$"),
    Case("array", "[]", "not_object", "$"),
    Case("array_of_event", f"[{_cart_json}]", "not_object", "$"),
    Case("number", "42", "not_object", "$"),
    Case("string", '"str"', "not_object", "$"),
    # --- event type ---
    Case(
        "event_type_missing",
        variant(CART, event_type=_DELETE),
        "missing_event_type",
        "$.event_type",
    ),
    Case("event_type_null", variant(CART, event_type=None), "missing_event_type", "$.event_type"),
    Case("event_type_blank", variant(CART, event_type=" "), "missing_event_type", "$.event_type"),
    Case(
        "event_type_unknown",
        variant(CART, event_type="cart_clear"),
        "unknown_event_type",
        "$.event_type",
    ),
    Case(
        "event_type_wrong_case",
        variant(CART, event_type="Cart_Add"),
        "unknown_event_type",
        "$.event_type",
    ),
    Case("event_type_number", variant(CART, event_type=7), "unknown_event_type", "$.event_type"),
    Case(
        "event_type_envelope",
        variant(CART, event_type="envelope"),
        "unknown_event_type",
        "$.event_type",
    ),
    Case(
        "event_type_email_request",
        variant(CART, event_type="email_request"),
        "unknown_event_type",
        "$.event_type",
    ),
    # --- customer id (checked before event id and timestamp) ---
    Case(
        "customer_id_missing",
        variant(CART, customer_id=_DELETE),
        "missing_customer_id",
        "$.customer_id",
    ),
    Case(
        "customer_id_null", variant(CART, customer_id=None), "missing_customer_id", "$.customer_id"
    ),
    Case(
        "customer_id_empty", variant(CART, customer_id=""), "missing_customer_id", "$.customer_id"
    ),
    Case(
        "customer_id_whitespace",
        variant(CART, customer_id=" \t "),
        "missing_customer_id",
        "$.customer_id",
    ),
    Case(
        "customer_id_missing_and_bad_timestamp",
        variant(CART, customer_id=_DELETE, timestamp="nope"),
        "missing_customer_id",
        "$.customer_id",
    ),
    Case("customer_id_number", variant(CART, customer_id=42), "schema_violation", "$.customer_id"),
    Case(
        "customer_id_129_chars",
        variant(CART, customer_id="c" * 129),
        "schema_violation",
        "$.customer_id",
    ),
    # --- event id ---
    Case("event_id_missing", variant(CART, event_id=_DELETE), "missing_event_id", "$.event_id"),
    Case("event_id_null", variant(CART, event_id=None), "missing_event_id", "$.event_id"),
    Case("event_id_tab", variant(CART, event_id="\t"), "missing_event_id", "$.event_id"),
    Case("event_id_number", variant(CART, event_id=1), "schema_violation", "$.event_id"),
    # --- timestamp ---
    Case("timestamp_missing", variant(CART, timestamp=_DELETE), "bad_timestamp", "$.timestamp"),
    Case("timestamp_null", variant(CART, timestamp=None), "bad_timestamp", "$.timestamp"),
    Case(
        "timestamp_without_offset",
        variant(CART, timestamp="2026-01-05T10:00:00"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case("timestamp_garbage", variant(CART, timestamp="yesterday"), "bad_timestamp", "$.timestamp"),
    Case("timestamp_bool", variant(CART, timestamp=True), "bad_timestamp", "$.timestamp"),
    Case(
        "timestamp_year_99999",
        variant(CART, timestamp="99999-01-05T10:00:00Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_date_only", variant(CART, timestamp="2026-01-05"), "bad_timestamp", "$.timestamp"
    ),
    Case(
        "timestamp_basic_format",
        variant(CART, timestamp="20260105T100000Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_feb_30",
        variant(CART, timestamp="2026-02-30T10:00:00Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_leap_second",
        variant(CART, timestamp="2016-12-31T23:59:60Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_hour_24",
        variant(CART, timestamp="2026-01-05T24:00:00Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_offset_24h",
        variant(CART, timestamp="2026-01-05T10:00:00+24:00"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_offset_no_colon",
        variant(CART, timestamp="2026-01-05T10:00:00+0100"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_arabic_digits",
        variant(CART, timestamp="٢٠٢٦-01-05T10:00:00Z"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_epoch_ms_float",
        variant(CART, timestamp=1_767_600_000_000.0),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_epoch_ms_string",
        variant(CART, timestamp="1767600000000"),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_epoch_seconds",
        variant(CART, timestamp=1_767_600_000),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case("timestamp_negative", variant(CART, timestamp=-1), "bad_timestamp", "$.timestamp"),
    Case(
        "timestamp_after_year_9999",
        variant(CART, timestamp=253_402_300_800_000),
        "bad_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_object", variant(CART, timestamp={"ms": SEEN_AT}), "bad_timestamp", "$.timestamp"
    ),
    Case(
        "timestamp_two_days_ahead",
        variant(CART, timestamp=SEEN_AT + 2 * DAY_MS),
        "future_timestamp",
        "$.timestamp",
    ),
    Case(
        "timestamp_one_ms_past_future_limit",
        variant(CART, timestamp="2026-01-06T08:00:00.001Z"),
        "future_timestamp",
        "$.timestamp",
    ),
    # --- envelope schema ---
    Case("properties_list", variant(CART, properties=[1, 2]), "schema_violation", "$.properties"),
    Case("context_string", variant(CART, context="web"), "schema_violation", "$.context"),
    Case("traits_null", variant(CART, traits=None), "schema_violation", "$.traits"),
    Case(
        "user_agent_too_long",
        variant(CART, context__user_agent="M" * 1025),
        "schema_violation",
        "$.context.user_agent",
    ),
    Case(
        "first_error_by_path_wins",
        variant(CART, context="web", properties__price=-1),
        "schema_violation",
        "$.context",
    ),
    # --- cart_add ---
    Case(
        "cart_add_no_properties",
        variant(CART, properties=_DELETE),
        "schema_violation",
        "$.properties",
    ),
    Case(
        "cart_add_no_product_id",
        variant(CART, properties__product_id=_DELETE),
        "schema_violation",
        "$.properties.product_id",
    ),
    Case(
        "cart_add_blank_product_id",
        variant(CART, properties__product_id="   "),
        "schema_violation",
        "$.properties.product_id",
    ),
    Case(
        "cart_add_product_id_129_chars",
        variant(CART, properties__product_id="p" * 129),
        "schema_violation",
        "$.properties.product_id",
    ),
    Case(
        "cart_add_product_id_number",
        variant(CART, properties__product_id=123),
        "schema_violation",
        "$.properties.product_id",
    ),
    Case(
        "cart_add_no_price",
        variant(CART, properties__price=_DELETE),
        "schema_violation",
        "$.properties.price",
    ),
    Case(
        "cart_add_negative_price",
        variant(CART, properties__price=-0.01),
        "schema_violation",
        "$.properties.price",
    ),
    Case(
        "cart_add_price_string",
        variant(CART, properties__price="19.99"),
        "schema_violation",
        "$.properties.price",
    ),
    Case(
        "cart_add_price_bool",
        variant(CART, properties__price=True),
        "schema_violation",
        "$.properties.price",
    ),
    Case(
        "cart_add_price_null",
        variant(CART, properties__price=None),
        "schema_violation",
        "$.properties.price",
    ),
    Case(
        "cart_add_quantity_0",
        variant(CART, properties__quantity=0),
        "schema_violation",
        "$.properties.quantity",
    ),
    Case(
        "cart_add_quantity_1_5",
        variant(CART, properties__quantity=1.5),
        "schema_violation",
        "$.properties.quantity",
    ),
    Case(
        "cart_add_quantity_string",
        variant(CART, properties__quantity="2"),
        "schema_violation",
        "$.properties.quantity",
    ),
    Case(
        "cart_add_name_too_long",
        variant(CART, properties__name="n" * 513),
        "schema_violation",
        "$.properties.name",
    ),
    Case(
        "cart_add_javascript_image_url",
        variant(CART, properties__image_url="javascript:alert(1)"),
        "schema_violation",
        "$.properties.image_url",
    ),
    Case(
        "cart_add_cart_id_empty",
        variant(CART, properties__cart_id=""),
        "schema_violation",
        "$.properties.cart_id",
    ),
    Case(
        "cart_add_currency_number",
        variant(CART, properties__currency=978),
        "schema_violation",
        "$.properties.currency",
    ),
    Case(
        "cart_add_currency_euro",
        variant(CART, properties__currency="EURO"),
        "bad_currency",
        "$.properties.currency",
    ),
    Case(
        "cart_add_currency_two_letters",
        variant(CART, properties__currency="eu"),
        "bad_currency",
        "$.properties.currency",
    ),
    Case(
        "cart_add_currency_digit",
        variant(CART, properties__currency="E1R"),
        "bad_currency",
        "$.properties.currency",
    ),
    Case(
        "cart_add_currency_non_ascii_uppercasing_to_ascii",
        variant(CART, properties__currency="ıſk"),
        "bad_currency",
        "$.properties.currency",
    ),
    # --- cart_remove ---
    Case(
        "cart_remove_no_product_id",
        variant(CART, event_type="cart_remove", properties={"cart_id": "cart-1"}),
        "schema_violation",
        "$.properties.product_id",
    ),
    Case(
        "cart_remove_quantity_negative",
        variant(CART, event_type="cart_remove", properties={"product_id": "sku-1", "quantity": -1}),
        "schema_violation",
        "$.properties.quantity",
    ),
    # --- checkout_start ---
    Case(
        "checkout_start_value_negative",
        variant(CART, event_type="checkout_start", properties={"value": -5}),
        "schema_violation",
        "$.properties.value",
    ),
    # --- product_view ---
    Case(
        "product_view_no_product_id",
        variant(CART, event_type="product_view", properties={}),
        "schema_violation",
        "$.properties.product_id",
    ),
    # --- purchase ---
    Case(
        "purchase_no_order_id",
        variant(BASE_PURCHASE, properties__order_id=_DELETE),
        "schema_violation",
        "$.properties.order_id",
    ),
    Case(
        "purchase_no_revenue",
        variant(BASE_PURCHASE, properties__revenue=_DELETE),
        "schema_violation",
        "$.properties.revenue",
    ),
    Case(
        "purchase_items_not_array",
        variant(BASE_PURCHASE, properties__items={"product_id": "sku-1"}),
        "schema_violation",
        "$.properties.items",
    ),
    Case(
        "purchase_item_without_product_id",
        variant(BASE_PURCHASE, properties__items=[{"product_id": "sku-1"}, {"quantity": 1}]),
        "schema_violation",
        "$.properties.items[1].product_id",
    ),
    Case(
        "purchase_item_bad_currency",
        variant(BASE_PURCHASE, properties__items=[{"product_id": "sku-1", "currency": "euro"}]),
        "bad_currency",
        "$.properties.items[0].currency",
    ),
    # --- identify ---
    Case(
        "identify_bad_email",
        variant(BASE_IDENTIFY, traits__email="alice@@x"),
        "schema_violation",
        "$.traits.email",
    ),
    Case(
        "identify_email_no_domain_dot",
        variant(BASE_IDENTIFY, traits__email="alice@x"),
        "schema_violation",
        "$.traits.email",
    ),
    Case(
        "identify_email_number",
        variant(BASE_IDENTIFY, traits__email=7),
        "schema_violation",
        "$.traits.email",
    ),
    Case(
        "identify_no_traits", variant(BASE_IDENTIFY, traits=_DELETE), "schema_violation", "$.traits"
    ),
    Case(
        "identify_traits_list",
        variant(BASE_IDENTIFY, traits=["alice@example.com"]),
        "schema_violation",
        "$.traits",
    ),
    Case(
        "identify_bad_locale",
        variant(BASE_IDENTIFY, traits__locale="en US"),
        "schema_violation",
        "$.traits.locale",
    ),
    Case(
        "identify_consent_not_boolean",
        variant(BASE_IDENTIFY, traits__consent={"email": "yes"}),
        "schema_violation",
        "$.traits.consent.email",
    ),
)
