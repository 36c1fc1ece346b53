"""What the job does with webhook events: a Stripe payment reported twice (a redelivery
through another collector process, whose replay cache has not seen it, and the
PaymentIntent's own event) is one purchase; it ends the customer's open cart journey, so no
reminder goes out. The events are the collector's mapping (``job.collector.webhooks``) and
the job's own core, validator included."""

from __future__ import annotations

from job.collector.webhooks import StripeWebhooks
from tests.factories import HOUR, MINUTE, T0, cart_add, customer_core, identify, raw
from udfs.core import contract
from udfs.core.batch import EVENT, TIMER, Batch
from udfs.core.contract import Kind
from udfs.core.customer import CustomerCore

WATERMARK = T0 - HOUR


def run(core: CustomerCore, blob: bytes | None, entry: tuple, now: int):
    key = entry[1]
    result = Batch(core).run([entry], {key: blob}, WATERMARK, now)
    states = dict(result.states)
    return result, states.get(key, blob)


def outcomes(result) -> list[dict]:
    return [contract.decode_outcome(o).value for o in result.outputs if o[0] == Kind.OUTCOME]


def requests(result) -> list:
    return [o for o in result.outputs if o[0] == Kind.REQUEST]


def stripe_event(kind: str, obj: dict, created_s: int, evt: str) -> dict:
    return {"id": evt, "type": kind, "created": created_s, "data": {"object": obj}}


def test_a_payment_reported_three_times_is_one_purchase_and_cancels_the_reminder() -> None:
    core = customer_core()
    blob = None
    for event in (
        identify("c-ann", T0, email="ann@example.com", first_name="Ann"),
        cart_add("c-ann", T0, "p1", 40.0, 1, "cart-7", name="Lamp"),
    ):
        _, blob = run(core, blob, (EVENT, "c-ann", event["timestamp"], raw(event), -1), T0)
    paid_s = (T0 + 10 * MINUTE) // 1000
    stripe = StripeWebhooks("whsec_story_0001")
    session = stripe.map(
        stripe_event(
            "checkout.session.completed",
            {
                "id": "cs_1",
                "amount_total": 4000,
                "currency": "eur",
                "payment_intent": "pi_1",
                "payment_status": "paid",
                "customer_details": {"email": "ann@example.com"},
                "metadata": {"customer_id": "c-ann", "cart_id": "cart-7"},
            },
            paid_s,
            "evt_session",
        )
    )
    intent = stripe.map(
        stripe_event(
            "payment_intent.succeeded",
            {
                "id": "pi_1",
                "amount_received": 4000,
                "currency": "eur",
                "metadata": {"customer_id": "c-ann", "cart_id": "cart-7"},
            },
            paid_s + 2,
            "evt_intent",
        )
    )
    purchase_id = "stripe:pi_1"
    assert [e["event_id"] for e in session.events] == ["stripe:identify:pi_1", purchase_id]
    assert [e["event_id"] for e in intent.events] == [purchase_id]

    kinds: list[tuple[str, str | None]] = []
    deliveries = [session.events, session.events, intent.events]  # redelivery, then the twin
    for delivery in deliveries:
        for event in delivery:
            result, blob = run(
                core, blob, (EVENT, "c-ann", paid_s * 1000, raw(event), -1), paid_s * 1000
            )
            kinds += [(o["kind"], o.get("event_id")) for o in outcomes(result)]
    # the first purchase cancels the cart's reminder; every later copy is a duplicate
    assert kinds == [
        ("cancelled", None),
        ("duplicate", "stripe:identify:pi_1"),
        ("duplicate", purchase_id),
        ("duplicate", purchase_id),
    ]

    # the reminder's due time passes: nothing is sent
    result, blob = run(core, blob, (TIMER, "c-ann", T0 + HOUR, None, 0), T0 + 2 * HOUR)
    assert requests(result) == []
