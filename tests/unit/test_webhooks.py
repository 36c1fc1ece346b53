"""Webhook verification and mapping (``job/collector/webhooks.py``).

Signatures are built here with the providers' documented algorithms (Stripe: header
``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; Shopify: base64 of
HMAC-SHA256(secret, body)), not with the stripe library's helpers, so a library that
checked something else would fail these tests. Mapped events are compared in full, and as
JSON too (``19.99 == 19.99`` but ``2 == 2.0`` only in Python)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job.collector.webhooks import (
    CustomerLookup,
    Mapped,
    ReplayCache,
    ShopifyWebhooks,
    StripeWebhooks,
    WebhookError,
)
from tests.factories import SCHEMA_DIR
from udfs.core.validation import EventValidator

STRIPE_SECRET = "whsec_test_0123456789abcdef"
SHOPIFY_SECRET = "shpss_test_fedcba9876543210"

# 2026-01-01T10:00:00Z, the Stripe events' "created"
CREATED = 1_767_261_600
CREATED_MS = CREATED * 1000
# The Shopify order's created_at (15:00Z) and the checkout's updated_at (14:30Z)
ORDER_CREATED_AT = "2026-01-01T10:00:00-05:00"
CHECKOUT_UPDATED_AT = "2026-01-01T09:30:00-05:00"
# Close after every timestamp above: what the collector passes the validator.
NOW_MS = int(datetime(2026, 1, 1, 16, 0, tzinfo=UTC).timestamp() * 1000)
DAY_S = 86_400

HOSTILE = settings(derandomize=True, database=None, deadline=None, max_examples=300)


def stripe_header(payload: bytes, secret: str = STRIPE_SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    return f"t={t},v1={stripe_v1(payload, secret, t)}"


def stripe_v1(payload: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


def shopify_hmac(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def as_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def assert_mapped(actual: Mapped, expected: Mapped) -> None:
    assert actual == expected
    assert as_json(list(actual.events)) == as_json(list(expected.events))


def tamper(body: bytes) -> bytes:
    """``body`` with one byte changed (a digit of an amount)."""
    at = body.index(b"1999") + 3
    changed = body[:at] + b"8" + body[at + 1 :]
    assert len(changed) == len(body) and changed != body
    return changed


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(Path(SCHEMA_DIR))


# --------------------------------------------------------------------------- Stripe


def stripe_event(kind: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "type": kind,
        "created": CREATED,
        "livemode": False,
        "data": {"object": obj},
    }


def session(**fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "cs_test_a1",
        "object": "checkout.session",
        "amount_total": 1999,
        "currency": "usd",
        "customer": "cus_123",
        "customer_details": {"email": "Ann@Example.com", "name": "Ann Lee"},
        "client_reference_id": None,
        "metadata": {"customer_id": "c-42", "cart_id": "cart-7"},
        "payment_intent": "pi_1",
        "payment_status": "paid",
    }
    obj.update(fields)
    return stripe_event("checkout.session.completed", obj)


def payment_intent(**fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1999,
        "amount_received": 1999,
        "currency": "usd",
        "customer": "cus_123",
        "receipt_email": "Ann@Example.com",
        "metadata": {"customer_id": "c-42", "cart_id": "cart-7"},
        "status": "succeeded",
    }
    obj.update(fields)
    return stripe_event("payment_intent.succeeded", obj, event_id="evt_2")


def stripe_identify(order_id: str, customer_id: str, email: str) -> dict[str, Any]:
    return {
        "event_id": f"stripe:identify:{order_id}",
        "event_type": "identify",
        "customer_id": customer_id,
        "timestamp": CREATED_MS,
        "traits": {"email": email},
    }


def stripe_purchase(order_id: str, customer_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "event_id": f"stripe:{order_id}",
        "event_type": "purchase",
        "customer_id": customer_id,
        "timestamp": CREATED_MS,
        "properties": {"order_id": order_id, **properties},
        "context": {"source": "stripe"},
    }


@pytest.fixture
def stripe_hooks() -> StripeWebhooks:
    return StripeWebhooks(STRIPE_SECRET, tolerance_s=300)


def test_stripe_valid_signature_returns_the_event(stripe_hooks: StripeWebhooks) -> None:
    body = orjson.dumps(session())
    assert stripe_hooks.verify(body, stripe_header(body)) == session()


def test_stripe_header_with_several_v1_one_of_them_right(stripe_hooks: StripeWebhooks) -> None:
    body = orjson.dumps(session())
    t = int(time.time())
    wrong = stripe_v1(body, "whsec_old_secret", t)
    right = stripe_v1(body, STRIPE_SECRET, t)
    header = f"t={t},v1={wrong},v1={right},v0={wrong}"
    assert stripe_hooks.verify(body, header) == session()


def verify_error(call: Any, *args: Any) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        call(*args)
    return info.value


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        pytest.param(lambda b: (tamper(b), stripe_header(b)), 401, "bad_signature", id="tampered"),
        pytest.param(
            lambda b: (b, stripe_header(b, secret="whsec_wrong")), 401, "bad_signature", id="secret"
        ),
        pytest.param(
            lambda b: (b, stripe_header(b, t=int(time.time()) - 600)), 400, "expired", id="expired"
        ),
        pytest.param(
            # too old AND signed with the wrong secret: not authenticated, so not "expired"
            lambda b: (b, stripe_header(b, "whsec_wrong", int(time.time()) - 600)),
            401,
            "bad_signature",
            id="expired-and-wrong-secret",
        ),
        pytest.param(lambda b: (b, None), 401, "missing_signature", id="missing"),
        pytest.param(lambda b: (b, ""), 401, "missing_signature", id="empty"),
        pytest.param(lambda b: (b, "garbage"), 401, "bad_signature", id="no-fields"),
        pytest.param(
            lambda b: (b, stripe_header(b).replace("t=", "t=x")), 401, "bad_signature", id="bad-t"
        ),
        pytest.param(
            lambda b: (b, stripe_header(b).split(",")[0]), 401, "bad_signature", id="no-v1"
        ),
        pytest.param(
            lambda b: (b, stripe_header(b).split(",")[1]), 401, "bad_signature", id="no-t"
        ),
        pytest.param(
            lambda b: (b, f"t={int(time.time())},v1"), 401, "bad_signature", id="v1-no-value"
        ),
        pytest.param(
            # the library compares with hmac.compare_digest, which raises TypeError on this
            lambda b: (b, f"t={int(time.time())},v1=\u00e9\u00e9"),
            401,
            "bad_signature",
            id="non-ascii",
        ),
        pytest.param(lambda b: (b, f"t={'9' * 5000},v1=00"), 401, "bad_signature", id="huge-t"),
        pytest.param(
            lambda b: (b"\xff" + b, stripe_header(b"\xff" + b)), 401, "bad_signature", id="not-utf8"
        ),
    ],
)
def test_stripe_rejections(
    stripe_hooks: StripeWebhooks, make: Any, status: int, reason: str
) -> None:
    body = orjson.dumps(session())
    error = verify_error(stripe_hooks.verify, *make(body))
    assert (error.status, error.reason) == (status, reason)
    # the message is value-free: nothing from the body (email, ids, amounts) is quoted
    for value in ("Ann", "c-42", "cs_test", "1999", "whsec"):
        assert value not in error.message


@pytest.mark.parametrize(
    ("body", "reason"), [(b"{not json", "not_json"), (b"[1, 2]", "not_object"), (b"", "not_json")]
)
def test_stripe_signed_body_that_is_no_event(
    stripe_hooks: StripeWebhooks, body: bytes, reason: str
) -> None:
    error = verify_error(stripe_hooks.verify, body, stripe_header(body))
    assert (error.status, error.reason) == (400, reason)


def test_stripe_constructor_refuses_blank_secret_and_no_tolerance() -> None:
    with pytest.raises(ValueError, match="secret"):
        StripeWebhooks("  ")
    with pytest.raises(ValueError, match="tolerance"):
        StripeWebhooks(STRIPE_SECRET, tolerance_s=0)


def test_stripe_session_paid_with_metadata_customer_id(stripe_hooks: StripeWebhooks) -> None:
    assert_mapped(
        stripe_hooks.map(session()),
        Mapped(
            "stripe:evt_1",
            (
                stripe_identify("pi_1", "c-42", "Ann@Example.com"),
                stripe_purchase("pi_1", "c-42", revenue=19.99, currency="USD", cart_id="cart-7"),
            ),
        ),
    )


def test_stripe_session_with_client_reference_id_and_no_payment_intent(
    stripe_hooks: StripeWebhooks,
) -> None:
    event = session(metadata={}, client_reference_id="c-ref", payment_intent=None)
    assert_mapped(
        stripe_hooks.map(event),
        Mapped(
            "stripe:evt_1",
            (
                stripe_identify("cs_test_a1", "c-ref", "Ann@Example.com"),
                stripe_purchase("cs_test_a1", "c-ref", revenue=19.99, currency="USD"),
            ),
        ),
    )


def test_stripe_session_customer_from_lookup_by_stripe_customer() -> None:
    lookup = CustomerLookup({"stripe:cus_123": "c-7", "email:ann@example.com": "c-8"})
    hooks = StripeWebhooks(STRIPE_SECRET, lookup=lookup)
    event = session(metadata={"cart_id": "cart-7"}, customer_details=None)
    assert_mapped(
        hooks.map(event),
        Mapped(
            "stripe:evt_1",
            (stripe_purchase("pi_1", "c-7", revenue=19.99, currency="USD", cart_id="cart-7"),),
        ),
    )


def test_stripe_session_customer_from_lookup_by_email() -> None:
    # the file's key is lower-case, the session's email is not
    hooks = StripeWebhooks(STRIPE_SECRET, lookup=CustomerLookup({"email:ann@example.com": "c-8"}))
    event = session(metadata={}, customer=None)
    assert_mapped(
        hooks.map(event),
        Mapped(
            "stripe:evt_1",
            (
                stripe_identify("pi_1", "c-8", "Ann@Example.com"),
                stripe_purchase("pi_1", "c-8", revenue=19.99, currency="USD"),
            ),
        ),
    )


def test_stripe_session_first_hit_wins() -> None:
    lookup = CustomerLookup({"stripe:cus_123": "c-7", "email:ann@example.com": "c-8"})
    hooks = StripeWebhooks(STRIPE_SECRET, lookup=lookup)
    assert [e["customer_id"] for e in hooks.map(session()).events] == ["c-42", "c-42"]
    by_ref = hooks.map(session(metadata={}, client_reference_id="c-ref"))
    assert [e["customer_id"] for e in by_ref.events] == ["c-ref", "c-ref"]
    by_customer = hooks.map(session(metadata={}))
    assert [e["customer_id"] for e in by_customer.events] == ["c-7", "c-7"]


def test_stripe_custom_metadata_key() -> None:
    hooks = StripeWebhooks(STRIPE_SECRET, metadata_key="inboxflow_id")
    event = session(metadata={"customer_id": "c-42", "inboxflow_id": "c-99"})
    assert [e["customer_id"] for e in hooks.map(event).events] == ["c-99", "c-99"]


def test_stripe_session_unpaid_is_ignored(stripe_hooks: StripeWebhooks) -> None:
    assert stripe_hooks.map(session(payment_status="unpaid")) == Mapped(
        "stripe:evt_1",
        ignored="checkout session unpaid: payment_intent.succeeded reports the payment",
    )


def test_stripe_session_without_customer_is_unmapped(stripe_hooks: StripeWebhooks) -> None:
    mapped = stripe_hooks.map(session(metadata={}, client_reference_id=None))
    assert mapped == Mapped(
        "stripe:evt_1",
        unmapped=(
            "checkout session without a customer id: none in the metadata, no "
            "client_reference_id, Stripe customer and email not in the lookup"
        ),
    )


@pytest.mark.parametrize(
    ("currency", "amount", "revenue"),
    [
        ("jpy", 1999, 1999.0),  # zero-decimal
        ("JPY", 5, 5.0),
        ("kwd", 19999, 19.999),  # three-decimal
        ("bhd", 1005, 1.005),
        ("eur", 1999, 19.99),
        ("usd", 1, 0.01),
        ("usd", 0, 0.0),
    ],
)
def test_stripe_minor_units(
    stripe_hooks: StripeWebhooks, currency: str, amount: int, revenue: float
) -> None:
    (purchase,) = stripe_hooks.map(
        session(amount_total=amount, currency=currency, customer_details=None)
    ).events
    assert purchase["properties"] == {
        "order_id": "pi_1",
        "revenue": revenue,
        "currency": currency.upper(),
        "cart_id": "cart-7",
    }
    assert type(purchase["properties"]["revenue"]) is float


def test_stripe_payment_intent_gives_the_sessions_event_ids(stripe_hooks: StripeWebhooks) -> None:
    mapped = stripe_hooks.map(payment_intent())
    assert_mapped(
        mapped,
        Mapped(
            "stripe:evt_2",
            (
                stripe_identify("pi_1", "c-42", "Ann@Example.com"),
                stripe_purchase("pi_1", "c-42", revenue=19.99, currency="USD", cart_id="cart-7"),
            ),
        ),
    )
    # the same events (ids included) as the session that created this PaymentIntent
    assert mapped.events == stripe_hooks.map(session()).events


def test_stripe_payment_intent_customer_by_lookup_and_unmapped() -> None:
    lookup = CustomerLookup({"stripe:cus_123": "c-7", "email:ann@example.com": "c-8"})
    hooks = StripeWebhooks(STRIPE_SECRET, lookup=lookup)
    by_customer = hooks.map(payment_intent(metadata={}))
    assert [e["customer_id"] for e in by_customer.events] == ["c-7", "c-7"]
    by_email = hooks.map(payment_intent(metadata={}, customer=None))
    assert [e["customer_id"] for e in by_email.events] == ["c-8", "c-8"]
    no_receipt = hooks.map(payment_intent(metadata={}, customer=None, receipt_email=None))
    assert no_receipt == Mapped(
        "stripe:evt_2",
        unmapped=(
            "payment intent without a customer id: none in the metadata, Stripe "
            "customer and receipt email not in the lookup"
        ),
    )


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("customer.created", '"customer.created"'),
        ("charge.refunded", '"charge.refunded"'),
        ("x" * 500, "(unreadable)"),
        ("a\nb", "(unreadable)"),
        (None, "(unreadable)"),
        (["checkout.session.completed"], "(unreadable)"),
    ],
)
def test_stripe_other_types_are_ignored(
    stripe_hooks: StripeWebhooks, kind: Any, label: str
) -> None:
    event = session()
    event["type"] = kind
    assert stripe_hooks.map(event) == Mapped(
        "stripe:evt_1", ignored=f"stripe event type {label} is not mapped"
    )


def test_stripe_bad_amount_and_time_are_left_out(stripe_hooks: StripeWebhooks) -> None:
    event = session(amount_total="1999", customer_details=None, metadata={"customer_id": 42})
    event["created"] = 2**62  # beyond year 9999: no timestamp rather than a 2**62 * 1000 int
    assert_mapped(
        stripe_hooks.map(event),
        Mapped(
            "stripe:evt_1",
            (
                {
                    "event_id": "stripe:pi_1",
                    "event_type": "purchase",
                    "customer_id": "42",
                    "properties": {"order_id": "pi_1", "currency": "USD"},
                    "context": {"source": "stripe"},
                },
            ),
        ),
    )


# --------------------------------------------------------------------------- Shopify

ORDER_ID = 820982911946154508
CUSTOMER_ID = 115310627314723954
CHECKOUT_TOKEN = "bd5a8aa1ecd019dd3520ff791ee3a24c"


def line_items() -> list[dict[str, Any]]:
    return [
        {
            "id": 466157049,
            "product_id": 632910392,
            "variant_id": 39072856,
            "title": "IPod Nano - 8gb",
            "quantity": 1,
            "price": "99.50",
        },
        {  # a custom line on a variant only: the variant id stands in for the product
            "id": 518995019,
            "product_id": None,
            "variant_id": 49148385,
            "title": "Case",
            "quantity": 2,
            "price": "49.75",
        },
        {  # neither id (a tip): left out
            "id": 703073504,
            "product_id": None,
            "variant_id": None,
            "title": "Tip",
            "quantity": 1,
            "price": "5.00",
        },
    ]


MAPPED_ITEMS = [
    {"product_id": "632910392", "quantity": 1, "price": 99.5, "name": "IPod Nano - 8gb"},
    {"product_id": "49148385", "quantity": 2, "price": 49.75, "name": "Case"},
]


def customer() -> dict[str, Any]:
    return {
        "id": CUSTOMER_ID,
        "email": "jon@example.com",
        "first_name": "Jon",
        "last_name": "Doe",
    }


def order(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ORDER_ID,
        "email": "jon@example.com",
        "created_at": ORDER_CREATED_AT,
        "updated_at": "2026-01-01T10:00:05-05:00",
        "currency": "USD",
        "total_price": "199.00",
        "customer": customer(),
        "line_items": line_items(),
        "checkout_token": CHECKOUT_TOKEN,
        "cart_token": "68778783ad298f1c80c3bafcddeea02f",
        "customer_locale": "de-CH",
        "buyer_accepts_marketing": True,
    }
    body.update(fields)
    return body


def checkout(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": 450789469,
        "token": CHECKOUT_TOKEN,
        "cart_token": "68778783ad298f1c80c3bafcddeea02f",
        "email": "jon@example.com",
        "customer": customer(),
        "created_at": "2026-01-01T09:00:00-05:00",
        "updated_at": CHECKOUT_UPDATED_AT,
        "completed_at": None,
        "currency": "USD",
        "total_price": "199.00",
        "line_items": line_items(),
        "customer_locale": "en",
        "buyer_accepts_marketing": False,
    }
    body.update(fields)
    return body


ORDER_IDENTIFY = {
    "event_id": f"shopify:identify:order:{ORDER_ID}",
    "event_type": "identify",
    "customer_id": str(CUSTOMER_ID),
    "timestamp": ORDER_CREATED_AT,
    "traits": {"email": "jon@example.com", "first_name": "Jon", "locale": "de-CH", "consent": True},
}
ORDER_PURCHASE = {
    "event_id": f"shopify:order:{ORDER_ID}",
    "event_type": "purchase",
    "customer_id": str(CUSTOMER_ID),
    "timestamp": ORDER_CREATED_AT,
    "properties": {
        "order_id": str(ORDER_ID),
        "revenue": 199.0,
        "currency": "USD",
        "cart_id": CHECKOUT_TOKEN,
        "items": MAPPED_ITEMS,
    },
    "context": {"source": "shopify", "locale": "de-CH"},
}
CHECKOUT_VERSION = f"{CHECKOUT_TOKEN}:{CHECKOUT_UPDATED_AT}"
CHECKOUT_IDENTIFY = {
    "event_id": f"shopify:identify:checkout:{CHECKOUT_VERSION}",
    "event_type": "identify",
    "customer_id": str(CUSTOMER_ID),
    "timestamp": CHECKOUT_UPDATED_AT,
    "traits": {"email": "jon@example.com", "first_name": "Jon", "locale": "en", "consent": False},
}
CHECKOUT_START = {
    "event_id": f"shopify:checkout:{CHECKOUT_VERSION}",
    "event_type": "checkout_start",
    "customer_id": str(CUSTOMER_ID),
    "timestamp": CHECKOUT_UPDATED_AT,
    "properties": {
        "cart_id": CHECKOUT_TOKEN,
        "value": 199.0,
        "currency": "USD",
        "items": MAPPED_ITEMS,
    },
    "context": {"source": "shopify", "locale": "en"},
}
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"


def epoch_s(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


@pytest.fixture
def shopify_hooks() -> ShopifyWebhooks:
    return ShopifyWebhooks(SHOPIFY_SECRET, tolerance_s=DAY_S)


def test_shopify_valid_signature_returns_the_body(shopify_hooks: ShopifyWebhooks) -> None:
    body = orjson.dumps(order(total_price="1999.00"))
    now = epoch_s(order()["updated_at"]) + 60
    assert shopify_hooks.verify(body, shopify_hmac(body), now=now) == order(total_price="1999.00")


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        pytest.param(lambda b: (tamper(b), shopify_hmac(b)), 401, "bad_signature", id="tampered"),
        pytest.param(
            lambda b: (b, shopify_hmac(b, "shpss_wrong")), 401, "bad_signature", id="secret"
        ),
        pytest.param(lambda b: (b, None), 401, "missing_signature", id="missing"),
        pytest.param(lambda b: (b, ""), 401, "missing_signature", id="empty"),
        pytest.param(lambda b: (b, "not base64!"), 401, "bad_signature", id="not-base64"),
        pytest.param(lambda b: (b, shopify_hmac(b)[:-4]), 401, "bad_signature", id="truncated"),
        pytest.param(
            lambda b: (b, base64.b64encode(b"short").decode()), 401, "bad_signature", id="short"
        ),
        pytest.param(lambda b: (b, "\u00e9\u00e9=="), 401, "bad_signature", id="non-ascii"),
        pytest.param(lambda b: (b, shopify_hmac(b).encode().hex()), 401, "bad_signature", id="hex"),
    ],
)
def test_shopify_rejections(
    shopify_hooks: ShopifyWebhooks, make: Any, status: int, reason: str
) -> None:
    body = orjson.dumps(order(total_price="1999.00"))
    now = epoch_s(order()["updated_at"]) + 60
    body, header = make(body)
    error = verify_error(shopify_hooks.verify, body, header, now)
    assert (error.status, error.reason) == (status, reason)
    for value in ("jon", "1999", str(ORDER_ID), "shpss"):
        assert value not in error.message


@pytest.mark.parametrize(
    ("fields", "now_minus_updated", "reason"),
    [
        pytest.param({}, 2 * DAY_S, "expired", id="updated-2-days-ago"),
        pytest.param({}, -2 * DAY_S, "expired", id="updated-2-days-ahead"),
        pytest.param({}, DAY_S - 1, None, id="updated-just-inside"),
        pytest.param({}, 0, None, id="updated-now"),
        # updated_at decides, not the older created_at
        pytest.param({"created_at": "2020-01-01T00:00:00Z"}, 60, None, id="old-created"),
        # no updated_at: created_at is the signed time
        pytest.param(
            {"updated_at": None, "created_at": "2026-01-01T10:00:05-05:00"},
            2 * DAY_S,
            "expired",
            id="created-2-days-ago",
        ),
        pytest.param(
            {"updated_at": "yesterday", "created_at": "2026-01-01T10:00:05-05:00"},
            60,
            None,
            id="unparsable-updated-created-fresh",
        ),
        # no parsable time at all: not expired (documented)
        pytest.param(
            {"updated_at": "2026-01-01 10:00:05", "created_at": 5}, 10 * DAY_S, None, id="no-time"
        ),
    ],
)
def test_shopify_expiry(
    shopify_hooks: ShopifyWebhooks,
    fields: dict[str, Any],
    now_minus_updated: float,
    reason: str | None,
) -> None:
    body = orjson.dumps(order(**fields))
    now = epoch_s("2026-01-01T10:00:05-05:00") + now_minus_updated
    if reason is None:
        assert shopify_hooks.verify(body, shopify_hmac(body), now=now) == order(**fields)
    else:
        error = verify_error(shopify_hooks.verify, body, shopify_hmac(body), now)
        assert (error.status, error.reason) == (400, reason)


def test_shopify_expiry_default_now_is_the_clock(shopify_hooks: ShopifyWebhooks) -> None:
    fresh = orjson.dumps(order(updated_at=datetime.now(UTC).isoformat()))
    assert isinstance(shopify_hooks.verify(fresh, shopify_hmac(fresh)), dict)
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * DAY_S, UTC).isoformat()
    stale = orjson.dumps(order(updated_at=two_days_ago))
    assert verify_error(shopify_hooks.verify, stale, shopify_hmac(stale)).reason == "expired"


@pytest.mark.parametrize(
    ("body", "reason"), [(b"{not json", "not_json"), (b'"order"', "not_object"), (b"", "not_json")]
)
def test_shopify_signed_body_that_is_no_object(
    shopify_hooks: ShopifyWebhooks, body: bytes, reason: str
) -> None:
    error = verify_error(shopify_hooks.verify, body, shopify_hmac(body), 0.0)
    assert (error.status, error.reason) == (400, reason)


def test_shopify_order_exact_events(shopify_hooks: ShopifyWebhooks) -> None:
    assert_mapped(
        shopify_hooks.map("orders/create", WEBHOOK_ID, order()),
        Mapped(f"shopify:{WEBHOOK_ID}", (ORDER_IDENTIFY, ORDER_PURCHASE)),
    )


def test_shopify_order_without_webhook_id_uses_the_derived_event_id(
    shopify_hooks: ShopifyWebhooks,
) -> None:
    for webhook_id in (None, ""):
        mapped = shopify_hooks.map("orders/create", webhook_id, order())
        assert mapped.delivery_id == f"shopify:order:{ORDER_ID}"
        assert mapped.events == (ORDER_IDENTIFY, ORDER_PURCHASE)


def test_shopify_event_ids_come_from_the_signed_body(shopify_hooks: ShopifyWebhooks) -> None:
    first = shopify_hooks.map("orders/create", WEBHOOK_ID, order())
    forged = shopify_hooks.map("orders/create", "forged-id", order())
    assert first.delivery_id != forged.delivery_id
    assert [e["event_id"] for e in forged.events] == [e["event_id"] for e in first.events]


def test_shopify_order_bad_locale_no_consent_no_name(shopify_hooks: ShopifyWebhooks) -> None:
    body = order(
        customer_locale="not a locale!",
        buyer_accepts_marketing=None,
        customer={"id": CUSTOMER_ID, "email": "jon@example.com", "first_name": None},
        checkout_token=None,
        total_price="abc",
    )
    identify = {**ORDER_IDENTIFY, "traits": {"email": "jon@example.com"}}
    properties = {
        "order_id": str(ORDER_ID),
        "currency": "USD",
        "items": MAPPED_ITEMS,
    }
    purchase = {**ORDER_PURCHASE, "properties": properties, "context": {"source": "shopify"}}
    assert_mapped(
        shopify_hooks.map("orders/create", WEBHOOK_ID, body),
        Mapped(f"shopify:{WEBHOOK_ID}", (identify, purchase)),
    )


def test_shopify_customer_id_resolution() -> None:
    lookup = CustomerLookup({f"shopify:{CUSTOMER_ID}": "c-2", "email:jon@example.com": "c-3"})
    hooks = ShopifyWebhooks(SHOPIFY_SECRET, lookup=lookup)

    def customer_ids(body: dict[str, Any]) -> list[str]:
        return [e["customer_id"] for e in hooks.map("orders/create", WEBHOOK_ID, body).events]

    assert customer_ids(order()) == ["c-2", "c-2"]
    other_customer = {**customer(), "id": 1}
    assert customer_ids(order(customer=other_customer)) == ["c-3", "c-3"]
    # the customer's email when the order has none; email keys ignore case
    upper = {**customer(), "id": 1, "email": "JON@example.com"}
    assert customer_ids(order(customer=upper, email=None)) == ["c-3", "c-3"]
    unknown = {"id": 1, "email": "x@example.com"}
    assert customer_ids(order(customer=unknown, email=None)) == ["1", "1"]
    # no customer: the email lookup alone
    assert customer_ids(order(customer=None)) == ["c-3", "c-3"]
    # nothing: unmapped
    guest = hooks.map("orders/create", WEBHOOK_ID, order(customer=None, email="y@example.com"))
    assert guest == Mapped(
        f"shopify:{WEBHOOK_ID}",
        unmapped="order without a customer id: no customer, email not in the lookup",
    )


def test_shopify_order_without_email_has_no_identify(shopify_hooks: ShopifyWebhooks) -> None:
    body = order(email=None, customer={"id": CUSTOMER_ID})
    assert shopify_hooks.map("orders/create", WEBHOOK_ID, body).events == (ORDER_PURCHASE,)


def test_shopify_checkout_exact_events(shopify_hooks: ShopifyWebhooks) -> None:
    assert_mapped(
        shopify_hooks.map("checkouts/update", WEBHOOK_ID, checkout()),
        Mapped(f"shopify:{WEBHOOK_ID}", (CHECKOUT_IDENTIFY, CHECKOUT_START)),
    )
    assert shopify_hooks.map("checkouts/update", None, checkout()).delivery_id == (
        f"shopify:checkout:{CHECKOUT_VERSION}"
    )


def test_shopify_checkout_update_is_a_new_event(shopify_hooks: ShopifyWebhooks) -> None:
    later = shopify_hooks.map(
        "checkouts/update", None, checkout(updated_at="2026-01-01T09:45:00-05:00")
    )
    assert [e["event_id"] for e in later.events] == [
        f"shopify:identify:checkout:{CHECKOUT_TOKEN}:2026-01-01T09:45:00-05:00",
        f"shopify:checkout:{CHECKOUT_TOKEN}:2026-01-01T09:45:00-05:00",
    ]


def test_shopify_completed_checkout_is_ignored(shopify_hooks: ShopifyWebhooks) -> None:
    body = checkout(completed_at="2026-01-01T09:40:00-05:00")
    assert shopify_hooks.map("checkouts/update", WEBHOOK_ID, body) == Mapped(
        f"shopify:{WEBHOOK_ID}", ignored="checkout completed: orders/create reports the purchase"
    )


@pytest.mark.parametrize(
    "lines",
    [[], None, "lines", [{"product_id": None, "variant_id": None, "quantity": 1}, None, 5]],
)
def test_shopify_empty_checkout_is_ignored(shopify_hooks: ShopifyWebhooks, lines: Any) -> None:
    assert shopify_hooks.map("checkouts/update", WEBHOOK_ID, checkout(line_items=lines)) == Mapped(
        f"shopify:{WEBHOOK_ID}", ignored="empty checkout"
    )


def test_shopify_anonymous_checkout_is_unmapped(shopify_hooks: ShopifyWebhooks) -> None:
    body = checkout(customer=None, email=None)
    assert shopify_hooks.map("checkouts/update", WEBHOOK_ID, body) == Mapped(
        f"shopify:{WEBHOOK_ID}",
        unmapped="checkout without a customer id: no customer, email not in the lookup",
    )


@pytest.mark.parametrize(
    ("topic", "label"),
    [
        ("products/update", '"products/update"'),
        ("orders/paid", '"orders/paid"'),
        ("", "(unreadable)"),
        ("Orders/Create\r\nX-Evil: 1", "(unreadable)"),
    ],
)
def test_shopify_other_topics_are_ignored(
    shopify_hooks: ShopifyWebhooks, topic: str, label: str
) -> None:
    assert shopify_hooks.map(topic, WEBHOOK_ID, order()) == Mapped(
        f"shopify:{WEBHOOK_ID}", ignored=f"shopify topic {label} is not mapped"
    )
    assert shopify_hooks.map(topic, None, order()).delivery_id.startswith("shopify:")


# --------------------------------------------------------------------------- all happy cases


def happy_events() -> list[dict[str, Any]]:
    stripe_hooks = StripeWebhooks(STRIPE_SECRET)
    shopify_hooks = ShopifyWebhooks(SHOPIFY_SECRET)
    mapped = [
        stripe_hooks.map(session()),
        stripe_hooks.map(session(metadata={}, client_reference_id="c-ref", payment_intent=None)),
        stripe_hooks.map(session(currency="jpy")),
        stripe_hooks.map(session(currency="kwd", amount_total=19999)),
        stripe_hooks.map(payment_intent()),
        shopify_hooks.map("orders/create", WEBHOOK_ID, order()),
        shopify_hooks.map("checkouts/update", WEBHOOK_ID, checkout()),
    ]
    return [event for m in mapped for event in m.events]


def test_every_happy_event_passes_the_jobs_validator(validator: EventValidator) -> None:
    events = happy_events()
    assert len(events) == 14
    for event in events:
        result = validator.validate(orjson.dumps(event), NOW_MS)
        assert isinstance(result, dict), (event["event_id"], result)
        assert result["event_id"] == event["event_id"]
        assert result["customer_id"] == event["customer_id"]


# --------------------------------------------------------------------------- hostile bodies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", " ", "abc", "1e999", "-1", "NaN", "sNaN", "9" * 400, "1_0", "\u0660"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _shaped(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``template``'s keys, each keeping its value or getting any JSON value (or dropped)."""
    return st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(st.just(value), json_values, st.just(None))
            for key, value in template.items()
        },
    )


def _with_lines(body: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    lines = st.lists(st.one_of(_shaped(line_items()[0]), json_values), max_size=4)
    return st.builds(lambda b, ls: {**b, "line_items": ls}, body, lines)


stripe_objects = st.one_of(
    _shaped(session()["data"]["object"]), _shaped(payment_intent()["data"]["object"]), json_values
)
stripe_events = st.builds(
    lambda event, obj, kind: {**event, "type": kind, "data": {"object": obj}},
    _shaped(session()),
    stripe_objects,
    st.sampled_from(["checkout.session.completed", "payment_intent.succeeded", "x"]),
)
shopify_bodies = st.one_of(_with_lines(_shaped(order())), _with_lines(_shaped(checkout())))


def assert_harmless(mapped: Mapped) -> None:
    assert isinstance(mapped, Mapped)
    assert isinstance(mapped.delivery_id, str)
    orjson.dumps(list(mapped.events))  # every mapped event can be written out as JSON
    assert sum(x is not None for x in (mapped.ignored, mapped.unmapped)) <= 1


@HOSTILE
@given(event=st.one_of(stripe_events, st.dictionaries(st.text(max_size=8), json_values)))
def test_stripe_map_never_raises(event: dict[str, Any]) -> None:
    lookup = CustomerLookup({"stripe:cus_123": "c-7", "email:ann@example.com": "c-8"})
    assert_harmless(StripeWebhooks(STRIPE_SECRET, lookup=lookup).map(event))


@HOSTILE
@given(
    topic=st.sampled_from(["orders/create", "checkouts/update", "x"]),
    webhook_id=st.one_of(st.none(), st.text(max_size=5)),
    body=st.one_of(shopify_bodies, st.dictionaries(st.text(max_size=8), json_values)),
)
def test_shopify_map_never_raises(topic: str, webhook_id: str | None, body: dict[str, Any]) -> None:
    lookup = CustomerLookup({f"shopify:{CUSTOMER_ID}": "c-2", "email:jon@example.com": "c-3"})
    assert_harmless(ShopifyWebhooks(SHOPIFY_SECRET, lookup=lookup).map(topic, webhook_id, body))


HOSTILE_VALUES: list[Any] = [None, [], {}, [1, 2], "x", 10**19, -(10**30), 1e308, True, "\u0000"]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_values_everywhere_never_raise(value: Any) -> None:
    """Every key of every body (nested ones too) replaced, one at a time, by ``value``."""
    lookup = CustomerLookup({"stripe:cus_123": "c-7", f"shopify:{CUSTOMER_ID}": "c-2"})
    stripe_hooks = StripeWebhooks(STRIPE_SECRET, lookup=lookup)
    shopify_hooks = ShopifyWebhooks(SHOPIFY_SECRET, lookup=lookup)
    for kind, body in [("stripe", session()), ("stripe", payment_intent())] + [
        (topic, body)
        for topic in ("orders/create", "checkouts/update")
        for body in (order(), checkout())
    ]:
        for path in _paths(body):
            hostile = copy.deepcopy(body)
            _set(hostile, path, value)
            if kind == "stripe":
                assert_harmless(stripe_hooks.map(hostile))
            else:
                assert_harmless(shopify_hooks.map(kind, None, hostile))
        assert_harmless(
            stripe_hooks.map(value) if kind == "stripe" else shopify_hooks.map(kind, None, value)
        )


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, child in items:
        paths.append((*prefix, key))
        paths.extend(_paths(child, (*prefix, key)))
    return paths


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def test_huge_numbers_and_bad_ids_are_left_out(shopify_hooks: ShopifyWebhooks) -> None:
    lines = [
        {"product_id": 2**64 + 1, "variant_id": 7, "quantity": 10**30, "price": "1e999"},
        {"product_id": 1.5, "variant_id": True, "quantity": 1, "price": "1"},
        {"product_id": " ", "variant_id": "v-9", "quantity": True, "price": "sNaN", "title": 5},
    ]
    body = order(id=10**40, total_price="1" * 400, line_items=lines, customer={"id": 3})
    mapped = shopify_hooks.map("orders/create", "w", {**body, "email": None})
    assert_mapped(
        mapped,
        Mapped(
            "shopify:w",
            (
                {
                    "event_type": "purchase",
                    "customer_id": "3",
                    "timestamp": ORDER_CREATED_AT,
                    "properties": {
                        "currency": "USD",
                        "cart_id": CHECKOUT_TOKEN,
                        "items": [{"product_id": "7"}, {"product_id": "v-9"}],
                    },
                    "context": {"source": "shopify", "locale": "de-CH"},
                },
            ),
        ),
    )
    # a float is no customer id, and there is no email to look up
    float_id = shopify_hooks.map("orders/create", "w", order(customer={"id": 3.5}, email=None))
    assert float_id.events == () and float_id.unmapped is not None


@HOSTILE
@given(body=st.binary(max_size=64), header=st.one_of(st.none(), st.text(max_size=80)))
def test_verify_raises_only_webhook_errors(body: bytes, header: str | None) -> None:
    for call in (
        lambda: StripeWebhooks(STRIPE_SECRET).verify(body, header),
        lambda: ShopifyWebhooks(SHOPIFY_SECRET).verify(body, header, 0.0),
    ):
        with pytest.raises(WebhookError) as info:
            call()
        assert info.value.status == 401  # nothing unsigned gets as far as parsing


@HOSTILE
@given(body=st.one_of(st.binary(max_size=64), json_values.map(orjson.dumps)))
def test_verify_signed_garbage_raises_only_webhook_errors(body: bytes) -> None:
    for call in (
        lambda: StripeWebhooks(STRIPE_SECRET).verify(body, stripe_header(body)),
        lambda: ShopifyWebhooks(SHOPIFY_SECRET).verify(body, shopify_hmac(body), 0.0),
    ):
        try:
            assert isinstance(call(), dict)
        except WebhookError as exc:
            assert exc.reason in {"bad_signature", "not_json", "not_object", "expired"}


# --------------------------------------------------------------------------- ReplayCache


def test_replay_cache_seen_after_add_and_forgotten_after_ttl() -> None:
    cache = ReplayCache(ttl_s=60)
    assert not cache.seen("stripe:evt_1", 1000.0)
    cache.add("stripe:evt_1", 1000.0)
    assert cache.seen("stripe:evt_1", 1000.0)
    assert cache.seen("stripe:evt_1", 1059.9)
    assert not cache.seen("stripe:evt_2", 1001.0)
    assert not cache.seen("stripe:evt_1", 1060.0)
    assert len(cache) == 0  # the expired key was dropped when looked at


def test_replay_cache_add_drops_expired_and_refreshes() -> None:
    cache = ReplayCache(ttl_s=60)
    cache.add("a", 0.0)
    cache.add("b", 30.0)
    cache.add("a", 50.0)  # refreshed: now the newest
    cache.add("c", 100.0)  # "b" expired (70 s old) and is dropped
    assert len(cache) == 2
    assert cache.seen("a", 100.0) and cache.seen("c", 100.0) and not cache.seen("b", 100.0)


def test_replay_cache_is_bounded_oldest_evicted_first() -> None:
    cache = ReplayCache(ttl_s=3600, max_entries=3)
    for i, key in enumerate("abcd"):
        cache.add(key, float(i))
    assert len(cache) == 3
    assert [cache.seen(k, 10.0) for k in "abcd"] == [False, True, True, True]
    cache.add("b", 11.0)  # refreshed, so "c" is now the oldest
    cache.add("e", 12.0)
    assert [cache.seen(k, 13.0) for k in "bcde"] == [True, False, True, True]


def test_replay_cache_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        ReplayCache(ttl_s=0)
    with pytest.raises(ValueError, match="max_entries"):
        ReplayCache(ttl_s=1, max_entries=0)


# --------------------------------------------------------------------------- CustomerLookup


def test_lookup_from_file(tmp_path: Path) -> None:
    path = tmp_path / "customers.json"
    path.write_text(
        '{"stripe:cus_123": "c-1", "shopify:4567": "c-2", "email:Ann@Example.COM": "c-3"}'
    )
    for given_path in (path, str(path)):
        lookup = CustomerLookup.from_file(given_path)
        assert lookup.get("stripe:cus_123") == "c-1"
        assert lookup.get("shopify:4567") == "c-2"
        assert lookup.get("email:ann@example.com") == "c-3"
        assert lookup.get("email:ANN@example.com") == "c-3"
        assert lookup.get("stripe:CUS_123") is None  # only email keys ignore case
        assert lookup.get("email:bob@example.com") is None


def test_lookup_without_file_is_empty() -> None:
    for path in (None, ""):
        lookup = CustomerLookup.from_file(path)
        assert len(lookup) == 0 and lookup.get("stripe:cus_123") is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "cannot be read"),
        ("{", "not valid JSON"),
        ('["stripe:cus_1"]', "must be a JSON object"),
        ('{"stripe:cus_1": 5}', "entry 1: customer id must be a non-blank string"),
        ('{"stripe:cus_1": "c-1", "shopify:1": " "}', "entry 2: customer id must be a non-blank"),
        ('{"": "c-1"}', "entry 1: key must be a non-blank string"),
        ('{"email:a@b.co": "c-1", "email:A@B.CO": "c-2"}', "entry 2: key equals an earlier one"),
    ],
)
def test_lookup_bad_file_names_the_file_and_why(tmp_path: Path, text: str | None, why: str) -> None:
    path = tmp_path / "customers.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError) as info:
        CustomerLookup.from_file(path)
    assert str(path) in str(info.value) and why in str(info.value)
    assert "a@b.co" not in str(info.value).lower()  # keys (emails) are not quoted
