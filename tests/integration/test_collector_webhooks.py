"""Signed webhooks through the real collector into the real broker: what each provider's
request becomes on the events topic (or the dead-letter topic), replays, tampering, expiry.
Signatures are made here with the providers' documented algorithms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics
from tests.collector_harness import running_collector, settings

STRIPE_SECRET = "whsec_test_0123456789"
SHOPIFY_SECRET = "shpss_test_0123456789"


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


@pytest.fixture
def topics(broker) -> dict[str, str]:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    t = {"events": f"{prefix}.events", "dlq": f"{prefix}.dlq"}
    create_topics(broker.bootstrap, {t["events"]: 1, t["dlq"]: 1})
    return t


def read(broker, topic: str, count: int | None = None) -> list[dict]:
    got = consume(broker.bootstrap, topic, until_count=count, idle_timeout_s=1.5, max_wait_s=30)
    return [json.loads(r.value) for r in got]


def stripe_signed(payload: bytes, t: int | None = None, secret: str = STRIPE_SECRET) -> str:
    """Stripe's documented scheme: v1 = hex HMAC-SHA256(secret, "<t>.<payload>")."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def shopify_signed(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    """Shopify's documented scheme: base64 HMAC-SHA256(secret, raw body)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def session_event(customer: dict, created: int, pi: str = "pi_3Ab", evt: str = "evt_1") -> bytes:
    return json.dumps(
        {
            "id": evt,
            "object": "event",
            "type": "checkout.session.completed",
            "created": created,
            "data": {
                "object": {
                    "id": "cs_test_a1",
                    "object": "checkout.session",
                    "amount_total": 12999,
                    "currency": "eur",
                    "payment_intent": pi,
                    "payment_status": "paid",
                    "customer": "cus_9",
                    "customer_details": {"email": "Ann@Example.com"},
                    **customer,
                }
            },
        }
    ).encode()


def collector(broker, topics, **changes):
    return running_collector(
        settings(
            broker.bootstrap,
            topics,
            stripe_secret=STRIPE_SECRET,
            shopify_secret=SHOPIFY_SECRET,
            **changes,
        )
    )


def test_a_stripe_checkout_becomes_identify_and_purchase_and_a_replay_is_not_produced_again(
    broker, topics
) -> None:
    now = int(time.time())
    body = session_event({"metadata": {"customer_id": "c-ann", "cart_id": "cart-7"}}, now)
    header = {"Stripe-Signature": stripe_signed(body), "Content-Type": "application/json"}
    with collector(broker, topics) as c:
        first = c.request("POST", "/v1/webhooks/stripe", body, header)
        replay = c.request("POST", "/v1/webhooks/stripe", body, header)
    assert (first.status, first.json()) == (202, {"accepted": 2, "dead_lettered": 0})
    assert (replay.status, replay.json()) == (200, {"duplicate": True})
    assert read(broker, topics["events"]) == [
        {
            "event_id": "stripe:identify:pi_3Ab",
            "event_type": "identify",
            "customer_id": "c-ann",
            "timestamp": now * 1000,
            # as the webhook says it: the job trims and lower-cases it
            "traits": {"email": "Ann@Example.com"},
        },
        {
            "event_id": "stripe:pi_3Ab",
            "event_type": "purchase",
            "customer_id": "c-ann",
            "timestamp": now * 1000,
            "properties": {
                "order_id": "pi_3Ab",
                "revenue": 129.99,
                "currency": "EUR",
                "cart_id": "cart-7",
            },
            "context": {"source": "stripe"},
        },
    ]


def test_stripe_tampered_wrong_secret_expired_and_unsigned_requests_are_refused(
    broker, topics
) -> None:
    now = int(time.time())
    body = session_event({"metadata": {"customer_id": "c-ann"}}, now)
    tampered = body.replace(b"12999", b"1")
    with collector(broker, topics) as c:

        def post(payload: bytes, sig: str | None):
            h = {"Stripe-Signature": sig} if sig is not None else {}
            r = c.request("POST", "/v1/webhooks/stripe", payload, h)
            return r.status, r.json()["error"]

        assert post(tampered, stripe_signed(body)) == (401, "bad_signature")
        assert post(body, stripe_signed(body, secret="whsec_other_0000")) == (401, "bad_signature")
        assert post(body, stripe_signed(body, t=now - 600)) == (400, "expired")
        assert post(body, None) == (401, "missing_signature")
        assert post(body, "t=abc,v1=zz") == (401, "bad_signature")
        metrics = c.request("GET", "/metrics").body.decode()
    assert read(broker, topics["events"]) == []
    assert (
        'inboxflow_collector_rejections_total{reason="expired",route="/v1/webhooks/stripe"} 1.0'
        in metrics
    )


def test_a_stripe_payment_without_a_known_customer_goes_to_the_dead_letter_topic(
    broker, topics
) -> None:
    body = session_event({"customer": None, "customer_details": {}}, int(time.time()))
    with collector(broker, topics) as c:
        r = c.request(
            "POST", "/v1/webhooks/stripe", body, {"Stripe-Signature": stripe_signed(body)}
        )
    assert (r.status, r.json()) == (202, {"accepted": 0, "dead_lettered": 1})
    assert read(broker, topics["events"]) == []
    [dead] = read(broker, topics["dlq"], 1)
    assert dead["reason"] == "unmapped_customer"
    assert dead["payload"] == body.decode() and dead["payload_truncated"] is False
    assert dead["customer_id"] is None


def test_an_unmapped_stripe_type_is_acknowledged_as_ignored(broker, topics) -> None:
    body = json.dumps(
        {"id": "evt_2", "type": "customer.created", "created": int(time.time()), "data": {}}
    ).encode()
    with collector(broker, topics) as c:
        r = c.request(
            "POST", "/v1/webhooks/stripe", body, {"Stripe-Signature": stripe_signed(body)}
        )
    assert r.status == 200 and "customer.created" in r.json()["ignored"]
    assert read(broker, topics["events"]) == []


def shopify_order(updated_at: str) -> bytes:
    return json.dumps(
        {
            "id": 820982911946154508,
            "email": "jon@example.com",
            "created_at": updated_at,
            "updated_at": updated_at,
            "currency": "USD",
            "total_price": "199.00",
            "customer": {"id": 115310627314723954, "email": "jon@example.com", "first_name": "Jon"},
            "line_items": [
                {"product_id": 632910392, "title": "IPod Nano", "quantity": 2, "price": "99.50"}
            ],
            "checkout_token": "ck-1",
            "customer_locale": "de-AT",
        }
    ).encode()


def iso(seconds_ago: float) -> str:
    t = time.gmtime(time.time() - seconds_ago)
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", t)


def test_a_shopify_order_becomes_identify_and_purchase_and_a_redelivery_is_a_duplicate(
    broker, topics
) -> None:
    at = iso(60)
    body = shopify_order(at)
    h = {
        "X-Shopify-Hmac-Sha256": shopify_signed(body),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }
    with collector(broker, topics) as c:
        first = c.request("POST", "/v1/webhooks/shopify", body, h)
        again = c.request("POST", "/v1/webhooks/shopify", body, h)
        tampered = c.request("POST", "/v1/webhooks/shopify", body.replace(b"199.00", b"1.00"), h)
        old = shopify_order(iso(3 * 86400))
        expired = c.request(
            "POST", "/v1/webhooks/shopify", old, {**h, "X-Shopify-Hmac-Sha256": shopify_signed(old)}
        )
    assert (first.status, first.json()) == (202, {"accepted": 2, "dead_lettered": 0})
    assert (again.status, again.json()) == (200, {"duplicate": True})
    assert (tampered.status, tampered.json()["error"]) == (401, "bad_signature")
    assert (expired.status, expired.json()["error"]) == (400, "expired")
    identify, purchase = read(broker, topics["events"])
    assert identify["event_type"] == "identify" and identify["customer_id"] == "115310627314723954"
    assert identify["traits"]["email"] == "jon@example.com"
    assert identify["traits"]["locale"] == "de-AT"
    assert purchase == {
        "event_id": "shopify:order:820982911946154508",
        "event_type": "purchase",
        "customer_id": "115310627314723954",
        "timestamp": at,
        "properties": {
            "order_id": "820982911946154508",
            "revenue": 199.0,
            "currency": "USD",
            "cart_id": "ck-1",
            "items": [
                {"product_id": "632910392", "quantity": 2, "price": 99.5, "name": "IPod Nano"}
            ],
        },
        "context": {"source": "shopify", "locale": "de-AT"},
    }


def test_a_shopify_checkout_update_becomes_one_checkout_start_snapshot(broker, topics) -> None:
    at = iso(30)
    body = json.dumps(
        {
            "token": "ck-2",
            "email": "jon@example.com",
            "updated_at": at,
            "currency": "EUR",
            "total_price": "30.00",
            "customer": {"id": 42},
            "completed_at": None,
            "line_items": [
                {"product_id": 1, "title": "Mug", "quantity": 1, "price": "10.00"},
                {"variant_id": 7, "title": "Tea", "quantity": 2, "price": "10.00"},
            ],
        }
    ).encode()
    h = {"X-Shopify-Hmac-Sha256": shopify_signed(body), "X-Shopify-Topic": "checkouts/update"}
    with collector(broker, topics) as c:
        r = c.request("POST", "/v1/webhooks/shopify", body, h)
    assert (r.status, r.json()) == (202, {"accepted": 2, "dead_lettered": 0})
    _, checkout = read(broker, topics["events"])
    assert checkout["event_type"] == "checkout_start"
    assert checkout["event_id"] == f"shopify:checkout:ck-2:{at}"
    assert checkout["properties"] == {
        "cart_id": "ck-2",
        "value": 30.0,
        "currency": "EUR",
        "items": [
            {"product_id": "1", "quantity": 1, "price": 10.0, "name": "Mug"},
            {"product_id": "7", "quantity": 2, "price": 10.0, "name": "Tea"},
        ],
    }


def test_a_provider_without_a_secret_is_not_served(broker, topics) -> None:
    with running_collector(settings(broker.bootstrap, topics)) as c:
        r = c.request("POST", "/v1/webhooks/shopify", b"{}", {"X-Shopify-Topic": "orders/create"})
    assert (r.status, r.json()["error"]) == (404, "not_configured")
