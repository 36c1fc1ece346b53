"""One scripted story through the real topology with the SHIPPED campaigns and guards
(conf/campaigns.yaml, conf/job.yaml ``guards``), bounded, at parallelism 1 and 2.

Every expected email request and outcome below is written out by hand from the rules (the
campaigns file, the guards, the ``udfs.core.journey`` docstring), never computed by the
engine. The input is in event-time order, so no event is ever behind the watermark; the end
of the bounded input fires every pending timer (docs/DESIGN.md#end-of-input), so every
journey runs to its end and every step of it is listed.

Ranks (priority, highest first): post_purchase 50, welcome 40, abandoned_cart 30,
browse_abandonment 10. Every identify with an email enters ``welcome``: step 1 at once
(transactional, so never held back by quiet hours, the cap or an unsubscribe), step 2 three
days later (marketing). Quiet hours 21:00-08:00 in the customer's zone (UTC unless the
identify trait ``timezone`` says otherwise); at most 2 marketing emails in any 24 h.

The customers (all times UTC; J2 = 2026-01-02, J5 = 2026-01-05, ...):

* A (Europe/Berlin, CET = UTC+1) views a trail runner and a jacket from J5 19:00 (enters
  browse_abandonment), adds the runner to cart-A at 19:10 (that ends browse_abandonment,
  exit cart_add). Cart step 1 is due at 20:10 UTC = 21:10 Berlin: quiet hours, deferred to
  08:00 Berlin = J6 07:00 UTC (10 h 50 min, within stale_after 24 h), sent then; step 2 at
  J6 19:10 UTC = 20:10 Berlin goes out on time; welcome 2 at J8 18:00.
* B signs up J5 10:00 (welcome 1 at once), views an espresso maker, a milk frother (both
  kitchen) and a yoga mat (sports), buys the espresso maker at 11:00: welcome 2 and the
  browse journey end (exit_purchase); the thank-you (post_purchase 1) lists the order; the
  purchase is redelivered with the same event id (a duplicate, no second thank-you); seven
  days later the cross-sell shows the viewed, not bought kitchen product: the milk frother.
* C signs up J5 12:00, views a lamp, a bookshelf and a pillow from 13:00 and leaves:
  browse_abandonment at 15:00 shows the three, newest first.
* D signs up J5 09:00, unsubscribes from all marketing at 09:20 (welcome 2 cancelled:
  unsubscribed), then views a scarf at 09:30: the browse step due 11:30 is suppressed
  (unsubscribed); D's order at 12:00 still gets its thank-you (transactional), and its
  cross-sell (marketing) is suppressed (unsubscribed).
* E signs up J5 14:00, hard-bounces at 14:05, adds coffee beans at 14:10: the cart step
  due 15:10 is suppressed (hard_bounce), and so is welcome 2 (a hard bounce suppresses
  every category).
* F signs up J2 10:00; welcome 2 (J5 10:00) and a browse step (view at 09:00, due 11:00)
  are 2 marketing emails; the cart step 1 due at 13:00 (cart_add at 12:00) is the third
  within 24 h: deferred by the frequency cap to J6 10:00 exactly (when the 10:00 send
  leaves the window), sent then; step 2 at J6 12:00 is the 2nd in its window.
* G signs up J2 15:00; welcome 2 and cart step 1 (cart_add J5 14:00) are both due at J5
  15:00: welcome (higher priority) goes, the cart step collides and waits collision_gap
  (30 min) to 15:30; its step 2 due J6 14:00 is the third in 24 h (15:00, 15:30): deferred
  to J6 15:00 by the cap.
* H signs up J5 16:00, unsubscribes from the welcome campaign only at 16:10 (welcome 2
  cancelled: campaign_unsubscribed), views a kettle at 16:20: browse_abandonment sent at
  18:20 (only welcome was unsubscribed); complains of spam J6 09:00, buys the kettle J6
  10:00: the purchase is credited to the browse email (recovered), the thank-you goes out,
  the cross-sell is suppressed (spam_complaint).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from tests.factories import query_cli, run_cli
from tests.integration.conftest import run_bounded

# --------------------------------------------------------------------------- the story


def utc(text: str) -> int:
    """Epoch ms of a UTC wall time, ``2026-01-05T10:00``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


_seq = iter(range(1, 10_000))


def event(
    kind: str,
    customer: str,
    at: str,
    properties: dict | None = None,
    traits: dict | None = None,
    event_id: str | None = None,
) -> dict:
    return {
        "event_id": event_id or f"story-{next(_seq)}",
        "event_type": kind,
        "customer_id": customer,
        "timestamp": utc(at),
        "context": {},
        "properties": properties or {},
        "traits": traits or {},
    }


def identify(customer: str, at: str, name: str, **traits: str) -> dict:
    return event(
        "identify",
        customer,
        at,
        traits={"email": f"{name.lower()}@example.com", "first_name": name, **traits},
    )


def view(customer: str, at: str, pid: str, name: str, category: str, price: float) -> dict:
    props = {"product_id": pid, "name": name, "category": category, "price": price}
    return event("product_view", customer, at, {**props, "currency": "EUR"})


def cart_add(
    customer: str, at: str, cart: str, pid: str, name: str, category: str, price: float, qty=1
) -> dict:
    props = {"product_id": pid, "name": name, "category": category, "price": price}
    return event(
        "cart_add", customer, at, {**props, "quantity": qty, "currency": "EUR", "cart_id": cart}
    )


def purchase(
    customer: str, at: str, order: str, pid: str, name: str, category: str, price: float, **kw
) -> dict:
    line = {"product_id": pid, "name": name, "category": category, "price": price, "quantity": 1}
    props = {"order_id": order, "revenue": price, "currency": "EUR", "items": [line]}
    return event("purchase", customer, at, props, **kw)


B_ORDER = purchase(
    "B", "2026-01-05T11:00", "o-B1", "espresso", "Espresso Maker", "kitchen", 149.0,
    event_id="b-order-1",
)  # fmt: skip

STORY = [
    # F and G signed up three days before the story's busy day
    identify("F", "2026-01-02T10:00", "Fay"),
    identify("G", "2026-01-02T15:00", "Gus"),
    # J5
    identify("D", "2026-01-05T09:00", "Dee"),
    view("F", "2026-01-05T09:00", "stove", "Camping Stove", "outdoor", 59.0),
    event("unsubscribe", "D", "2026-01-05T09:20"),
    view("D", "2026-01-05T09:30", "scarf", "Wool Scarf", "accessories", 35.0),
    identify("B", "2026-01-05T10:00", "Bob"),
    view("B", "2026-01-05T10:30", "espresso", "Espresso Maker", "kitchen", 149.0),
    view("B", "2026-01-05T10:35", "frother", "Milk Frother", "kitchen", 39.0),
    view("B", "2026-01-05T10:40", "yoga", "Yoga Mat", "sports", 25.0),
    B_ORDER,
    B_ORDER,  # redelivered: the same event id
    purchase("D", "2026-01-05T12:00", "o-D1", "gloves", "Leather Gloves", "accessories", 42.0),
    cart_add("F", "2026-01-05T12:00", "cart-F", "tent", "Tent", "outdoor", 199.0),
    identify("C", "2026-01-05T12:00", "Cy"),
    view("C", "2026-01-05T13:00", "lamp", "Desk Lamp", "home", 45.0),
    view("C", "2026-01-05T13:05", "shelf", "Bookshelf", "home", 210.0),
    view("C", "2026-01-05T13:10", "pillow", "Throw Pillow", "home", 19.9),
    identify("E", "2026-01-05T14:00", "Eve"),
    cart_add("G", "2026-01-05T14:00", "cart-G", "bottle", "Water Bottle", "sports", 12.0),
    event("hard_bounce", "E", "2026-01-05T14:05", {"email": "eve@example.com", "code": "5.1.1"}),
    cart_add("E", "2026-01-05T14:10", "cart-E", "beans", "Coffee Beans", "kitchen", 14.5, 2),
    identify("H", "2026-01-05T16:00", "Hal"),
    event("unsubscribe", "H", "2026-01-05T16:10", {"campaign": "welcome"}),
    view("H", "2026-01-05T16:20", "kettle", "Tea Kettle", "kitchen", 30.0),
    identify("A", "2026-01-05T18:00", "Ann", timezone="Europe/Berlin"),
    view("A", "2026-01-05T19:00", "runner", "Trail Runner", "shoes", 89.9),
    view("A", "2026-01-05T19:05", "jacket", "Rain Jacket", "outdoor", 120.0),
    cart_add("A", "2026-01-05T19:10", "cart-A", "runner", "Trail Runner", "shoes", 89.9),
    # J6
    event("spam_complaint", "H", "2026-01-06T09:00"),
    purchase("H", "2026-01-06T10:00", "o-H1", "kettle", "Tea Kettle", "kitchen", 30.0),
]


def test_the_story_is_in_event_time_order():
    """So no event is behind the watermark (no ``late`` outcome, whatever the timing)."""
    times = [e["timestamp"] for e in STORY]
    assert times == sorted(times)


# --------------------------------------------------------------------------- expectations


def rid(campaign: str, customer: str, key: str | None, anchor: str, step: int) -> str:
    """The documented idempotency key: sha256 of campaign, customer, cart (or the journey's
    key), entry time and step, joined by U+001F, first 32 hex digits."""
    raw = f"{campaign}\x1f{customer}\x1f{key or ''}\x1f{utc(anchor)}\x1f{step}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


NAMES = dict(A="Ann", B="Bob", C="Cy", D="Dee", E="Eve", F="Fay", G="Gus", H="Hal")
SUBJECTS = {
    ("welcome", 1): "Welcome, {}! We're glad you're here",
    ("welcome", 2): "{}, here's what's new in our shop",
    ("browse_abandonment", 1): "{}, still thinking about these?",
    ("abandoned_cart", 1): "{}, you left something in your cart",
    ("abandoned_cart", 2): "Still thinking it over, {}? Your cart won't wait forever",
    ("post_purchase", 1): "Thank you for your order, {}!",
    ("post_purchase", 2): "{}, you might also like these",
}
CART_URL = "https://shop.example.com/cart?{}&utm_source=inboxflow&utm_medium=email"


def request(
    customer: str,
    campaign: str,
    step: int,
    anchor: str,
    due: str,
    key: str | None = None,
    items: tuple = (),
    value: float = 0.0,
    currency: str = "EUR",
) -> tuple:
    """The expected projection of one email request (see :func:`projection`): ``anchor``
    the journey's entry (cart: last cart activity), ``due`` the time it went out, ``items``
    (product id, name, price, quantity, category)."""
    cart = key if campaign == "abandoned_cart" else None
    first = f"cart_id={cart}" if cart else f"customer_id={customer}"
    return (
        customer,
        campaign,
        step,
        rid(campaign, customer, key, anchor, step),
        f"{NAMES[customer].lower()}@example.com",
        SUBJECTS[campaign, step].format(NAMES[customer]),
        due + ":00.000Z",  # trigger_event_time
        utc(anchor),  # metadata.armed_at_ms
        utc(due),  # metadata.due_at_ms
        cart,
        "cart_abandoned" if campaign == "abandoned_cart" else campaign,
        f"{campaign}_{step}",
        currency,
        value,
        items,
        CART_URL.format(first) + f"&utm_campaign={campaign}&utm_content=step{step}",
    )


RUNNER = ("runner", "Trail Runner", 89.9, 1, "shoes")
TENT = ("tent", "Tent", 199.0, 1, "outdoor")
BOTTLE = ("bottle", "Water Bottle", 12.0, 1, "sports")
ESPRESSO = ("espresso", "Espresso Maker", 149.0, 1, "kitchen")
FROTHER = ("frother", "Milk Frother", 39.0, 1, "kitchen")
GLOVES = ("gloves", "Leather Gloves", 42.0, 1, "accessories")
KETTLE = ("kettle", "Tea Kettle", 30.0, 1, "kitchen")
STOVE = ("stove", "Camping Stove", 59.0, 1, "outdoor")
C_VIEWED = (  # newest view first
    ("pillow", "Throw Pillow", 19.9, 1, "home"),
    ("shelf", "Bookshelf", 210.0, 1, "home"),
    ("lamp", "Desk Lamp", 45.0, 1, "home"),
)
J5 = "2026-01-05T"
J6 = "2026-01-06T"

# welcome steps show nothing and carry no currency of their own: USD (render.DEFAULT_CURRENCY)
EXPECTED_REQUESTS = [
    # A: the cart step due 20:10 UTC (21:10 Berlin) waited for 08:00 Berlin = 07:00 UTC
    request("A", "welcome", 1, J5 + "18:00", J5 + "18:00", currency="USD"),
    request("A", "abandoned_cart", 1, J5 + "19:10", J6 + "07:00", "cart-A", (RUNNER,), 89.9),
    request("A", "abandoned_cart", 2, J5 + "19:10", J6 + "19:10", "cart-A", (RUNNER,), 89.9),
    request("A", "welcome", 2, J5 + "18:00", "2026-01-08T18:00", currency="USD"),
    # B: thank-you with the order, cross-sell a week later with the viewed kitchen product
    request("B", "welcome", 1, J5 + "10:00", J5 + "10:00", currency="USD"),
    request("B", "post_purchase", 1, J5 + "11:00", J5 + "11:00", "o-B1", (ESPRESSO,), 149.0),
    request("B", "post_purchase", 2, J5 + "11:00", "2026-01-12T11:00", "o-B1", (FROTHER,), 39.0),
    # C: browse abandonment two hours after the first view
    request("C", "welcome", 1, J5 + "12:00", J5 + "12:00", currency="USD"),
    request("C", "browse_abandonment", 1, J5 + "13:00", J5 + "15:00", None, C_VIEWED, 274.9),
    request("C", "welcome", 2, J5 + "12:00", "2026-01-08T12:00", currency="USD"),
    # D: only the transactional steps
    request("D", "welcome", 1, J5 + "09:00", J5 + "09:00", currency="USD"),
    request("D", "post_purchase", 1, J5 + "12:00", J5 + "12:00", "o-D1", (GLOVES,), 42.0),
    # E: only what went out before the bounce
    request("E", "welcome", 1, J5 + "14:00", J5 + "14:00", currency="USD"),
    # F: the third marketing email within 24 h waited for the cap
    request("F", "welcome", 1, "2026-01-02T10:00", "2026-01-02T10:00", currency="USD"),
    request("F", "welcome", 2, "2026-01-02T10:00", J5 + "10:00", currency="USD"),
    request("F", "browse_abandonment", 1, J5 + "09:00", J5 + "11:00", None, (STOVE,), 59.0),
    request("F", "abandoned_cart", 1, J5 + "12:00", J6 + "10:00", "cart-F", (TENT,), 199.0),
    request("F", "abandoned_cart", 2, J5 + "12:00", J6 + "12:00", "cart-F", (TENT,), 199.0),
    # G: collision gap, then the cap
    request("G", "welcome", 1, "2026-01-02T15:00", "2026-01-02T15:00", currency="USD"),
    request("G", "welcome", 2, "2026-01-02T15:00", J5 + "15:00", currency="USD"),
    request("G", "abandoned_cart", 1, J5 + "14:00", J5 + "15:30", "cart-G", (BOTTLE,), 12.0),
    request("G", "abandoned_cart", 2, J5 + "14:00", J6 + "15:00", "cart-G", (BOTTLE,), 12.0),
    # H: unsubscribed from welcome only; the thank-you despite the spam complaint
    request("H", "welcome", 1, J5 + "16:00", J5 + "16:00", currency="USD"),
    request("H", "browse_abandonment", 1, J5 + "16:20", J5 + "18:20", None, (KETTLE,), 30.0),
    request("H", "post_purchase", 1, J6 + "10:00", J6 + "10:00", "o-H1", (KETTLE,), 30.0),
]

# (customer, campaign, step) -> text the email's plain-text part holds, and does not hold
TEXTS = {
    ("A", "welcome", 1): (["Hi Ann,", "Welcome, and thanks for signing up!"], []),
    ("A", "abandoned_cart", 1): (
        ["Hi Ann,", "- Trail Runner\n  1 x €89.90 = €89.90\n", "Total: €89.90"],
        ["Rain Jacket"],
    ),
    ("B", "post_purchase", 1): (
        ["Hi Bob,", "- Espresso Maker\n  1 x €149.00 = €149.00\n", "Total: €149.00"],
        ["Milk Frother", "Yoga Mat"],
    ),
    ("B", "post_purchase", 2): (
        ["Picked for you:\n- Milk Frother\n  €39.00\n"],
        ["Espresso Maker", "Yoga Mat"],
    ),
    ("C", "browse_abandonment", 1): (
        [
            "What you looked at:\n- Throw Pillow\n  €19.90\n",
            "\n- Bookshelf\n  €210.00\n",
            "\n- Desk Lamp\n  €45.00\n",
        ],
        [],
    ),
    ("D", "post_purchase", 1): (["- Leather Gloves\n  1 x €42.00 = €42.00\n"], []),
    ("F", "abandoned_cart", 1): (["- Tent\n  1 x €199.00 = €199.00\n"], ["Stove"]),
    ("F", "browse_abandonment", 1): (["- Camping Stove\n  €59.00\n"], ["Tent"]),
    ("G", "welcome", 2): (["Hi Gus,", "here's a quick look at what's new"], ["10% off"]),
    ("H", "browse_abandonment", 1): (["- Tea Kettle\n  €30.00\n"], []),
}


def about(campaign: str, key) -> dict:
    """What an outcome says about its journey: the cart id of a cart journey, else the
    journey's key (post_purchase: the order id)."""
    if campaign == "abandoned_cart":
        return {"cart_id": key, "campaign": campaign}
    return {"cart_id": None, "key": key, "campaign": campaign}


def sent(customer: str, campaign: str, step: int, anchor: str, at: str, key=None) -> dict:
    return {
        "kind": "sent",
        "customer_id": customer,
        "event_time": utc(at),
        "step": step,
        "request_id": rid(campaign, customer, key, anchor, step),
        **about(campaign, key),
    }


def completed(customer: str, campaign: str, at: str, key=None) -> dict:
    return {
        "kind": "completed",
        "customer_id": customer,
        "event_time": utc(at),
        **about(campaign, key),
    }


def cancelled(customer: str, campaign: str, step: int, at: str, reason: str) -> dict:
    return {
        "kind": "cancelled",
        "customer_id": customer,
        "event_time": utc(at),
        "reason": reason,
        "step": step,
        **about(campaign, None),
    }


def abandoned(customer: str, at: str, cart: str, value: float) -> dict:
    return {
        "kind": "abandoned",
        "customer_id": customer,
        "event_time": utc(at),
        "cart_id": cart,
        "value": value,
    }


def deferred(
    customer: str, campaign: str, step: int, anchor: str, at: str, key, reason: str, until: str
) -> dict:
    return {
        "kind": "deferred",
        "customer_id": customer,
        "event_time": utc(at),
        "step": step,
        "request_id": rid(campaign, customer, key, anchor, step),
        "reason": reason,
        **about(campaign, key),
        "until": utc(until),
    }


def suppressed(
    customer: str, campaign: str, step: int, anchor: str, at: str, key, reason: str
) -> dict:
    return {
        "kind": "skipped",
        "customer_id": customer,
        "event_time": utc(at),
        "step": step,
        "request_id": rid(campaign, customer, key, anchor, step),
        "reason": reason,
        **about(campaign, key),
        "status": "suppressed",
    }


EXPECTED_OUTCOMES = [
    # A
    sent("A", "welcome", 1, J5 + "18:00", J5 + "18:00"),
    cancelled("A", "browse_abandonment", 1, J5 + "19:10", "exit_cart_add"),
    # once per cart, though a deferred step 1 is decided twice (A, F, G)
    abandoned("A", J5 + "20:10", "cart-A", 89.9),
    deferred(
        "A", "abandoned_cart", 1, J5 + "19:10", J5 + "20:10", "cart-A", "quiet_hours", J6 + "07:00"
    ),
    sent("A", "abandoned_cart", 1, J5 + "19:10", J6 + "07:00", "cart-A"),
    sent("A", "abandoned_cart", 2, J5 + "19:10", J6 + "19:10", "cart-A"),
    completed("A", "abandoned_cart", J6 + "19:10", "cart-A"),
    sent("A", "welcome", 2, J5 + "18:00", "2026-01-08T18:00"),
    completed("A", "welcome", "2026-01-08T18:00"),
    # B
    sent("B", "welcome", 1, J5 + "10:00", J5 + "10:00"),
    cancelled("B", "welcome", 2, J5 + "11:00", "exit_purchase"),
    cancelled("B", "browse_abandonment", 1, J5 + "11:00", "exit_purchase"),
    {
        "kind": "duplicate",
        "customer_id": "B",
        "event_time": utc(J5 + "11:00"),
        "event_id": "b-order-1",
        "reason": "event id already processed",
    },
    sent("B", "post_purchase", 1, J5 + "11:00", J5 + "11:00", "o-B1"),
    sent("B", "post_purchase", 2, J5 + "11:00", "2026-01-12T11:00", "o-B1"),
    completed("B", "post_purchase", "2026-01-12T11:00", "o-B1"),
    # C
    sent("C", "welcome", 1, J5 + "12:00", J5 + "12:00"),
    sent("C", "browse_abandonment", 1, J5 + "13:00", J5 + "15:00"),
    completed("C", "browse_abandonment", J5 + "15:00"),
    sent("C", "welcome", 2, J5 + "12:00", "2026-01-08T12:00"),
    completed("C", "welcome", "2026-01-08T12:00"),
    # D
    sent("D", "welcome", 1, J5 + "09:00", J5 + "09:00"),
    cancelled("D", "welcome", 2, J5 + "09:20", "unsubscribed"),
    suppressed("D", "browse_abandonment", 1, J5 + "09:30", J5 + "11:30", None, "unsubscribed"),
    sent("D", "post_purchase", 1, J5 + "12:00", J5 + "12:00", "o-D1"),
    suppressed("D", "post_purchase", 2, J5 + "12:00", "2026-01-12T12:00", "o-D1", "unsubscribed"),
    # E
    sent("E", "welcome", 1, J5 + "14:00", J5 + "14:00"),
    abandoned("E", J5 + "15:10", "cart-E", 29.0),
    suppressed("E", "abandoned_cart", 1, J5 + "14:10", J5 + "15:10", "cart-E", "hard_bounce"),
    suppressed("E", "welcome", 2, J5 + "14:00", "2026-01-08T14:00", None, "hard_bounce"),
    # F
    sent("F", "welcome", 1, "2026-01-02T10:00", "2026-01-02T10:00"),
    sent("F", "welcome", 2, "2026-01-02T10:00", J5 + "10:00"),
    completed("F", "welcome", J5 + "10:00"),
    sent("F", "browse_abandonment", 1, J5 + "09:00", J5 + "11:00"),
    completed("F", "browse_abandonment", J5 + "11:00"),
    abandoned("F", J5 + "13:00", "cart-F", 199.0),
    deferred(
        "F",
        "abandoned_cart",
        1,
        J5 + "12:00",
        J5 + "13:00",
        "cart-F",
        "frequency_cap",
        J6 + "10:00",
    ),
    sent("F", "abandoned_cart", 1, J5 + "12:00", J6 + "10:00", "cart-F"),
    sent("F", "abandoned_cart", 2, J5 + "12:00", J6 + "12:00", "cart-F"),
    completed("F", "abandoned_cart", J6 + "12:00", "cart-F"),
    # G
    sent("G", "welcome", 1, "2026-01-02T15:00", "2026-01-02T15:00"),
    sent("G", "welcome", 2, "2026-01-02T15:00", J5 + "15:00"),
    completed("G", "welcome", J5 + "15:00"),
    abandoned("G", J5 + "15:00", "cart-G", 12.0),
    deferred(
        "G", "abandoned_cart", 1, J5 + "14:00", J5 + "15:00", "cart-G", "collision", J5 + "15:30"
    ),
    sent("G", "abandoned_cart", 1, J5 + "14:00", J5 + "15:30", "cart-G"),
    deferred(
        "G",
        "abandoned_cart",
        2,
        J5 + "14:00",
        J6 + "14:00",
        "cart-G",
        "frequency_cap",
        J6 + "15:00",
    ),
    sent("G", "abandoned_cart", 2, J5 + "14:00", J6 + "15:00", "cart-G"),
    completed("G", "abandoned_cart", J6 + "15:00", "cart-G"),
    # H
    sent("H", "welcome", 1, J5 + "16:00", J5 + "16:00"),
    cancelled("H", "welcome", 2, J5 + "16:10", "campaign_unsubscribed"),
    sent("H", "browse_abandonment", 1, J5 + "16:20", J5 + "18:20"),
    completed("H", "browse_abandonment", J5 + "18:20"),
    {
        "kind": "recovered",
        "customer_id": "H",
        "event_time": utc(J6 + "10:00"),
        "step": 1,
        "request_id": rid("browse_abandonment", "H", None, J5 + "16:20", 1),
        "cart_id": None,
        "value": 30.0,
    },
    sent("H", "post_purchase", 1, J6 + "10:00", J6 + "10:00", "o-H1"),
    suppressed("H", "post_purchase", 2, J6 + "10:00", "2026-01-13T10:00", "o-H1", "spam_complaint"),
]


# --------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module", params=[1, 2], ids=["parallelism-1", "parallelism-2"])
def outputs(request):
    # the shipped conf/job.yaml and conf/campaigns.yaml; ClickHouse off
    return run_bounded([json.dumps(e) for e in STORY], request.param)


def projection(key: str | None, req: dict) -> tuple:
    assert key == req["customer_id"]
    meta = req["metadata"]
    items = tuple(
        (i["product_id"], i["name"], i["price"], i["quantity"], i["category"])
        for i in meta["items"]
    )
    return (
        req["customer_id"],
        req["campaign"],
        req["step"],
        req["request_id"],
        req["to"],
        req["subject"],
        req["trigger_event_time"],
        meta["armed_at_ms"],
        meta["due_at_ms"],
        meta["cart_id"],
        meta["reason"],
        meta["template"],
        meta["currency"],
        meta["cart_value"],
        items,
        meta["cart_url"],
    )


def _sorted(records: list) -> list:
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


def test_exactly_the_expected_email_requests(outputs):
    got = [projection(key, req) for key, req in outputs["requests"]]
    assert _sorted(got) == _sorted(EXPECTED_REQUESTS)


def test_the_emails_show_the_right_products(outputs):
    by_step = {(r["customer_id"], r["campaign"], r["step"]): r for _, r in outputs["requests"]}
    for where, (present, absent) in TEXTS.items():
        text = by_step[where]["text"]
        for snippet in present:
            assert snippet in text, (where, snippet)
        for snippet in absent:
            assert snippet not in text, (where, snippet)


def test_exactly_the_expected_outcomes(outputs):
    got = [value for key, value in outputs["outcomes"]]
    assert all(key == value["customer_id"] for key, value in outputs["outcomes"])
    assert _sorted(got) == _sorted(EXPECTED_OUTCOMES)


def test_no_event_went_to_the_dlq(outputs):
    assert outputs["dlq"] == []


# --------------------------------------------------------------------------- the store
#
# The same story at parallelism 2 with the ClickHouse writer on (embedded chdb in a tmp
# directory, as tests/integration/test_store_pipeline.py runs it: the job's writer hosts the
# engine, and every migration and query runs in a CLI process of its own, so this process
# never opens the path). The campaign views (conf/clickhouse/007_campaign_views.sql) must
# equal figures computed below from the literal EXPECTED_OUTCOMES alone.


def final_decisions(outcomes: list[dict]) -> dict[str, dict]:
    """request_id -> the email_requests row the step ends with, from the outcomes: every
    ``sent``, ``skipped`` and ``deferred`` outcome is a row of its request, the last one (in
    event time) wins, and a row carries the number of deferrals before it (006)."""
    final: dict[str, dict] = {}
    deferrals: dict[str, int] = defaultdict(int)
    decisions = [o for o in outcomes if o["kind"] in ("sent", "skipped", "deferred")]
    for o in sorted(decisions, key=lambda o: o["event_time"]):  # stable: list order on ties
        rid = o["request_id"]
        status = o["status"] if o["kind"] == "skipped" else o["kind"]
        final[rid] = {
            "request_id": rid,
            "campaign": o["campaign"],
            "step": o["step"],
            "customer_id": o["customer_id"],
            "status": status,
            "reason": "" if status == "sent" else o["reason"],
            "deferrals": deferrals[rid],
        }
        deferrals[rid] += o["kind"] == "deferred"
    return final


def campaign_figures(outcomes: list[dict]) -> dict[str, list[dict]]:
    """The three campaign views, from the outcomes (see 007_campaign_views.sql)."""
    final = final_decisions(outcomes)
    ever_deferred = {o["request_id"] for o in outcomes if o["kind"] == "deferred"}
    counts = ("sent", "deferred", "waiting", "suppressed", "skipped", "recoveries")
    summary: dict[str, dict] = defaultdict(
        lambda: dict.fromkeys(counts, 0) | {"revenue_recovered": 0.0}
    )
    decisions: dict[tuple, int] = defaultdict(int)
    suppressions: dict[tuple, int] = defaultdict(int)
    for rid, row in final.items():
        figures = summary[row["campaign"]]
        figures["sent"] += row["status"] == "sent"
        figures["deferred"] += rid in ever_deferred
        figures["waiting"] += row["status"] == "deferred"
        figures["suppressed"] += row["status"] == "suppressed"
        figures["skipped"] += row["status"] == "skipped"
        decisions[row["campaign"], row["step"], row["status"], row["reason"]] += 1
        if row["status"] in ("suppressed", "skipped"):
            suppressions[row["campaign"], row["reason"]] += 1
    # a recovery counts for the campaign of the request it credits (the last reminder sent)
    for o in outcomes:
        if o["kind"] == "recovered":
            reminder = final.get(o["request_id"])
            figures = summary["" if reminder is None else reminder["campaign"]]
            figures["recoveries"] += 1
            figures["revenue_recovered"] += o["value"]
    return {
        "campaign_summary": [{"campaign": c, **summary[c]} for c in sorted(summary)],
        "campaign_decisions": [
            dict(zip(("campaign", "step", "status", "reason", "requests"), (*k, n), strict=True))
            for k, n in sorted(decisions.items())
        ],
        "campaign_suppressions": [
            dict(zip(("campaign", "reason", "requests"), (*k, n), strict=True))
            for k, n in sorted(suppressions.items())
        ],
    }


@pytest.fixture(scope="module")
def stored_story(tmp_path_factory):
    dsn = "chdb://" + str(tmp_path_factory.mktemp("chdb-story") / "clickhouse")
    run_cli(dsn, "db", "migrate")
    outputs = run_bounded(
        [json.dumps(e) for e in STORY],
        2,
        store=True,
        overrides={"clickhouse": {"enabled": True, "dsn": dsn}},
    )
    return dsn, outputs


REQUEST_ROWS_SQL = """
SELECT request_id, campaign, step, customer_id, status, reason, deferrals, count() AS copies
FROM email_requests FINAL GROUP BY ALL ORDER BY request_id"""


def test_the_campaign_views_match_the_expected_outcomes(stored_story):
    dsn, outputs = stored_story
    # the writer changes nothing the job emits
    assert outputs["dlq"] == []
    assert _sorted([v for _, v in outputs["outcomes"]]) == _sorted(EXPECTED_OUTCOMES)

    want = campaign_figures(EXPECTED_OUTCOMES)
    # a sanity anchor for the computation: the whole story, in numbers
    assert want["campaign_summary"] == [
        {"campaign": "abandoned_cart", "sent": 6, "deferred": 4, "waiting": 0, "suppressed": 1,
         "skipped": 0, "recoveries": 0, "revenue_recovered": 0.0},
        {"campaign": "browse_abandonment", "sent": 3, "deferred": 0, "waiting": 0,
         "suppressed": 1, "skipped": 0, "recoveries": 1, "revenue_recovered": 30.0},
        {"campaign": "post_purchase", "sent": 4, "deferred": 0, "waiting": 0, "suppressed": 2,
         "skipped": 0, "recoveries": 0, "revenue_recovered": 0.0},
        {"campaign": "welcome", "sent": 12, "deferred": 0, "waiting": 0, "suppressed": 1,
         "skipped": 0, "recoveries": 0, "revenue_recovered": 0.0},
    ]  # fmt: skip
    for view, rows in want.items():
        assert query_cli(dsn, f"SELECT * FROM {view}") == rows, view

    # every decision is one row, the final one of its request
    got = query_cli(dsn, REQUEST_ROWS_SQL)
    assert [r.pop("copies") for r in got] == [1] * len(got)
    assert got == sorted(final_decisions(EXPECTED_OUTCOMES).values(), key=lambda r: r["request_id"])
    by_rid = {r["request_id"]: r for r in got}
    # A's cart step 1: deferred by quiet hours, then sent
    a_cart_1 = by_rid[rid("abandoned_cart", "A", "cart-A", J5 + "19:10", 1)]
    assert (a_cart_1["status"], a_cart_1["reason"], a_cart_1["deferrals"]) == ("sent", "", 1)
    # the steps suppressed for good keep their reason
    still_suppressed = {
        rid("browse_abandonment", "D", None, J5 + "09:30", 1): "unsubscribed",
        rid("post_purchase", "D", "o-D1", J5 + "12:00", 2): "unsubscribed",
        rid("abandoned_cart", "E", "cart-E", J5 + "14:10", 1): "hard_bounce",
        rid("welcome", "E", None, J5 + "14:00", 2): "hard_bounce",
        rid("post_purchase", "H", "o-H1", J6 + "10:00", 2): "spam_complaint",
    }
    assert {
        r["request_id"]: r["reason"] for r in got if r["status"] == "suppressed"
    } == still_suppressed
