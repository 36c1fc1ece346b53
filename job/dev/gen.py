"""Synthetic, deterministic customer event stream and the ``inboxflow gen`` subcommand.

The stream simulates shoppers of a small web shop. Every customer lives through sessions:
a landing page view, product views over a ~200 product catalog, sometimes cart_add /
cart_remove, and then either checkout_start + purchase (~35% of carts) or abandonment
followed by hours of silence, so abandoned-cart reminders at +1 h and +24 h become due in
event time. Most customers identify themselves (email, name, locale, timezone), some never
do (no email to remind), ~2% unsubscribe. A small ratio of malformed records (not JSON,
not UTF-8, missing ids, unknown type, negative price, ...) is sprinkled in.

Invariants of :func:`generate`:

* the same arguments give the same records, byte for byte;
* each customer's events are strictly increasing in event time;
* records are in event-time order overall except for a jitter of less than
  ``MAX_OUT_OF_ORDER_MS``: every record's event time is above the largest earlier one
  minus that bound;
* exactly ``events`` records are produced, malformed ones included;
* a record's value never contains a newline, so values can be written one per line.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from job.config import ENV_BOOTSTRAP
from udfs.clock import wall_ms

DEFAULT_START_MS = 1_767_600_000_000  # 2026-01-05T08:00:00Z: fixed for reproducible runs
DEFAULT_SEED = 42
DEFAULT_CUSTOMERS = 3000
DEFAULT_EVENTS = 100_000
# Global mean gap between consecutive records: 100,000 events span ~42 h of event time,
# long enough for +1 h and +24 h reminders of carts abandoned early in the stream.
DEFAULT_MEAN_GAP_MS = 1500
MAX_OUT_OF_ORDER_MS = 2000
CURRENCY = "EUR"

_HOUR = 3_600_000
_MIN_SESSION_GAP_MS = 30 * 60_000
# Events in an average session, measured on the default stream (used to calibrate the gap
# between a customer's sessions so that the global rate matches mean_gap_ms).
_EVENTS_PER_SESSION = 5.4
# Mean extra silence after a session that abandoned a cart (see _session_gap), also used
# for that calibration.
_ABANDON_PAUSE_MS = 0.2 * (0.75 * 25 + 0.25 * 10.75) * 3_600_000
# Shares of visits: adding to cart (no open cart), engaging with an open cart, and buying.
_ADD_TO_CART = 0.45
_RETURN_ENGAGE = 0.4
_BUY_NEW = 0.2
_BUY_RETURNING = 0.3
# Think time between two events of one session; the minimum exceeds MAX_OUT_OF_ORDER_MS.
_MIN_THINK_MS = 3000
_MEAN_EXTRA_THINK_MS = 40_000


class GenRecord(NamedTuple):
    """One record to send: Kafka key, value bytes, and the event time the value encodes
    (None when the value has no readable timestamp)."""

    key: str | None
    value: bytes
    event_time_ms: int | None


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float
    image_url: str
    url: str


# --------------------------------------------------------------------------- catalog

# a table: one category per line
# fmt: off
_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float]]] = {
    "Shoes": (("Trail", "Leather", "Canvas", "Suede", "Running"),
        ("Sneakers", "Boots", "Loafers", "Sandals"), (39, 189)),
    "Outerwear": (("Merino", "Down", "Waxed", "Rain", "Fleece"),
        ("Jacket", "Parka", "Vest", "Coat"), (59, 299)),
    "Kitchen": (("Cast Iron", "Copper", "Bamboo", "Ceramic", "Steel"),
        ("Skillet", "Kettle", "Board", "Bowl Set", "Whisk"), (9, 149)),
    "Books": (("Illustrated", "Pocket", "Collected", "Annotated"),
        ("Atlas", "Cookbook", "Field Guide", "Poems"), (8, 49)),
    "Garden": (("Galvanised", "Oak", "Terracotta", "Folding"),
        ("Planter", "Trowel", "Bench", "Watering Can"), (12, 179)),
    "Beauty": (("Rose", "Cedar", "Citrus", "Lavender"),
        ("Soap", "Face Oil", "Candle", "Hand Cream"), (6, 59)),
    "Electronics": (("Wireless", "Compact", "Portable", "Smart"),
        ("Speaker", "Headphones", "Lamp", "Charger"), (19, 249)),
    "Toys": (("Wooden", "Magnetic", "Plush", "Retro"),
        ("Train Set", "Puzzle", "Bear", "Blocks"), (7, 89)),
}
# fmt: on

# Names that exercise escaping and encoding in templates; placed among the most popular
# products so that even a short stream contains them.
_SPECIAL_PRODUCTS: dict[int, tuple[str, str]] = {
    2: ("Salt & Pepper Mill Set", "Kitchen"),
    4: ('The "Weekender" Duffel Bag', "Outerwear"),
    6: ("Children's Rain Boots", "Shoes"),
    8: ('<script>alert("pwned")</script> Mug', "Kitchen"),
    10: ("Crème Brûlée Torch Kit", "Kitchen"),
    13: ("Ærø Wool Blanket — 150×200 cm", "Outerwear"),
}

CATALOG_SIZE = 200


def build_catalog(size: int = CATALOG_SIZE) -> tuple[Product, ...]:
    """The shop's products, p-0001..p-NNNN; independent of the stream seed so that product
    ids, names and prices are the same in every run. Lower ids are more popular."""
    rng = random.Random(20260105)
    categories = sorted(_CATEGORIES)
    products = []
    for i in range(size):
        pid = f"p-{i + 1:04d}"
        if i in _SPECIAL_PRODUCTS:
            name, category = _SPECIAL_PRODUCTS[i]
        else:
            category = categories[i % len(categories)]
            adjectives, nouns, _ = _CATEGORIES[category]
            name = f"{rng.choice(adjectives)} {rng.choice(nouns)}"
            if rng.random() < 0.3:
                name += f" {rng.choice(('Mini', 'XL', 'No. 2', 'Classic', 'Pro'))}"
        low, high = _CATEGORIES[category][2]
        price = round(rng.uniform(low, high), 0) - 0.01  # shop prices end in .99
        products.append(
            Product(
                product_id=pid,
                name=name,
                category=category,
                price=round(price, 2),
                image_url=f"https://cdn.example.com/img/{pid}.jpg",
                url=f"https://shop.example.com/p/{pid}",
            )
        )
    return tuple(products)


CATALOG = build_catalog()


def catalog_record(product: Product) -> dict[str, Any]:
    """``product`` as a catalog record (conf/schemas/catalog/product.json), with the price
    and currency the generated events carry."""
    return {
        "product_id": product.product_id,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "currency": CURRENCY,
        "image_url": product.image_url,
        "url": product.url,
    }


def catalog_jsonl(products: Iterable[Product] = CATALOG) -> str:
    """The catalog file of ``products``, one record per line: what ``conf/catalog.jsonl``
    holds (``inboxflow gen --catalog --out conf/catalog.jsonl`` writes it)."""
    return "".join(_ENCODER.encode(catalog_record(p)) + "\n" for p in products)


# Zipf-like popularity by rank.
_POPULARITY = tuple(1.0 / (rank + 1) ** 0.8 for rank in range(CATALOG_SIZE))
_CUM_POPULARITY = tuple(itertools.accumulate(_POPULARITY))

# --------------------------------------------------------------------------- customers

_FIRST_NAMES = (
    ("Anna", "anna"),
    ("Ben", "ben"),
    ("Chloé", "chloe"),
    ("David", "david"),
    ("Émile", "emile"),
    ("Fatima", "fatima"),
    ("Giulia", "giulia"),
    ("Hiroshi", "hiroshi"),
    ("Ingrid", "ingrid"),
    ("José", "jose"),
    ("Kai", "kai"),
    ("Łukasz", "lukasz"),
    ("Maya", "maya"),
    ("Noah", "noah"),
    ("Olivia", "olivia"),
    ("Priya", "priya"),
    ("Quentin", "quentin"),
    ("Rosa", "rosa"),
    ("Søren", "soren"),
    ("Tom", "tom"),
    ("Uma", "uma"),
    ("Vera", "vera"),
    ("Zoë", "zoe"),
    ("O'Brien", "obrien"),
)
_LAST_NAMES = (
    ("Müller", "mueller"),
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Rossi", "rossi"),
    ("Nowak", "nowak"),
    ("Dubois", "dubois"),
    ("Jansen", "jansen"),
    ("Tanaka", "tanaka"),
    ("Patel", "patel"),
    ("Johansson", "johansson"),
    ("Silva", "silva"),
    ("Kowalski", "kowalski"),
)
# (locale, IANA timezone, UTC offset in minutes in January)
_LOCALES = (
    ("en-GB", "Europe/London", 0),
    ("de-DE", "Europe/Berlin", 60),
    ("fr-FR", "Europe/Paris", 60),
    ("es-ES", "Europe/Madrid", 60),
    ("nl-NL", "Europe/Amsterdam", 60),
    ("en-US", "America/New_York", -300),
    ("pt-BR", "America/Sao_Paulo", -180),
    ("en-IN", "Asia/Kolkata", 330),
    ("en-AU", "Australia/Sydney", 660),
)
_LOCALE_WEIGHTS = (16, 22, 12, 8, 6, 18, 6, 6, 6)
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
_LANDING_PAGES = (
    ("/", "Home"),
    ("/sale", "Winter Sale"),
    ("/new", "New In"),
    ("/blog/gift-guide", "Gift Guide"),
    ("/c/kitchen", "Kitchen"),
    ("/c/shoes", "Shoes"),
    ("/search?q=wool", "Search: wool"),
)
_REFERRERS = ("https://www.google.com/", "https://duckduckgo.com/", "https://news.example.org/", "")
_CAMPAIGNS = (
    {"source": "newsletter", "medium": "email", "name": "winter-sale"},
    {"source": "instagram", "medium": "social", "name": "new-in"},
    {"source": "google", "medium": "cpc", "name": "brand"},
)


@dataclass(frozen=True)
class Customer:
    """Fixed traits of one simulated customer (drawn once, from the stream seed)."""

    customer_id: str
    first_name: str
    last_name: str
    email: str
    locale: str
    timezone: str
    utc_offset_min: int
    user_agent: str
    identifies: bool  # False: never sends identify, so has no email
    identify_session: int  # session in which the first identify is sent
    unsubscribes: bool
    epoch_ms_share: float  # share of this customer's events stamped as epoch ms


def _make_customer(index: int, rng: random.Random) -> Customer:
    first, first_slug = rng.choice(_FIRST_NAMES)
    last, last_slug = rng.choice(_LAST_NAMES)
    locale, tz, offset = rng.choices(_LOCALES, weights=_LOCALE_WEIGHTS)[0]
    identifies = rng.random() < 0.85
    return Customer(
        customer_id=f"c-{index:05d}",
        first_name=first,
        last_name=last,
        email=f"{first_slug}.{last_slug}.{index}@"
        f"{rng.choice(('example.com', 'example.org', 'example.net'))}",
        locale=locale,
        timezone=tz,
        utc_offset_min=offset,
        user_agent=rng.choice(_USER_AGENTS),
        identifies=identifies,
        identify_session=rng.choice((0, 0, 0, 1, 2)),
        unsubscribes=identifies and rng.random() < 0.025,
        epoch_ms_share=rng.choice((0.0, 0.3, 0.3, 1.0)),
    )


@dataclass
class _Action:
    """A planned event: its type, payload sections and the think time before it."""

    gap_ms: int
    event_type: str
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any] | None = None


@dataclass
class _CustomerSim:
    """Mutable simulation state of one customer (cart lines, counters, planned actions)."""

    customer: Customer
    session: int = 0
    cart_number: int = 1
    cart: dict[str, tuple[Product, int]] = field(default_factory=dict)
    orders: int = 0
    identified: bool = False
    unsubscribed: bool = False
    pending: list[_Action] = field(default_factory=list)  # reversed: pop() gives the next
    next_time: int = 0
    abandoned: bool = False

    @property
    def cart_id(self) -> str:
        return f"cart-{self.customer.customer_id}-{self.cart_number}"


# --------------------------------------------------------------------------- sessions


def _pick_product(rng: random.Random) -> Product:
    return rng.choices(CATALOG, cum_weights=_CUM_POPULARITY)[0]


def _item(product: Product, quantity: int) -> dict[str, Any]:
    return {
        "product_id": product.product_id,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "currency": CURRENCY,
        "quantity": quantity,
        "image_url": product.image_url,
    }


def _cart_value(sim: _CustomerSim) -> float:
    return round(sum(p.price * q for p, q in sim.cart.values()), 2)


def _think(rng: random.Random) -> int:
    return _MIN_THINK_MS + int(rng.expovariate(1 / _MEAN_EXTRA_THINK_MS))


def _plan_session(sim: _CustomerSim, rng: random.Random) -> list[_Action]:
    """Plan one visit and apply its effect on the simulated cart/profile right away (the
    actions are emitted in this order afterwards, so the state matches what was sent)."""
    c = sim.customer
    session_id = f"s-{c.customer_id}-{sim.session}"
    base_ctx: dict[str, Any] = {
        "session_id": session_id,
        "user_agent": c.user_agent,
        "locale": c.locale,
    }
    if rng.random() < 0.3:
        base_ctx["campaign"] = dict(rng.choice(_CAMPAIGNS))
    actions: list[_Action] = []

    def page(path: str, title: str, referrer: str = "") -> dict[str, Any]:
        url = f"https://shop.example.com{path}"
        return {
            **base_ctx,
            "page": {"url": url, "path": path, "title": title, "referrer": referrer},
        }

    def add(
        event_type: str,
        properties: dict[str, Any],
        context: dict[str, Any],
        traits: dict[str, Any] | None = None,
    ) -> None:
        actions.append(_Action(_think(rng), event_type, properties, context, traits))

    def identify() -> None:
        sim.identified = True
        traits = {
            "email": c.email,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "locale": c.locale,
            "timezone": c.timezone,
            "consent": {"email_marketing": True},
        }
        add("identify", {}, page("/account", "Your account"), traits)

    path, title = rng.choice(_LANDING_PAGES)
    referrer = rng.choice(_REFERRERS)
    add(
        "page_view",
        {
            "url": f"https://shop.example.com{path}",
            "path": path,
            "title": title,
            "referrer": referrer,
        },
        page(path, title, referrer),
    )
    wants_identify = c.identifies and not sim.identified and sim.session >= c.identify_session
    if wants_identify and rng.random() < 0.5:
        identify()

    viewed: list[Product] = []
    for _ in range(1 + min(int(rng.expovariate(1 / 2.2)), 12)):
        if rng.random() < 0.25:
            p_path, p_title = rng.choice(_LANDING_PAGES)
            add(
                "page_view",
                {"url": f"https://shop.example.com{p_path}", "path": p_path, "title": p_title},
                page(p_path, p_title),
            )
        product = _pick_product(rng)
        viewed.append(product)
        add(
            "product_view",
            catalog_record(product),  # a view carries what the catalog knows
            page(f"/p/{product.product_id}", product.name),
        )

    # A returning customer with a cart left over from an earlier visit engages with it only
    # sometimes; otherwise the visit has no cart activity and the reminders stay due.
    returning_cart = bool(sim.cart)
    engaged = rng.random() < (_RETURN_ENGAGE if returning_cart else _ADD_TO_CART)
    sim.abandoned = False
    if engaged:
        if not returning_cart or rng.random() < 0.5:
            for product in rng.sample(viewed, k=min(len(viewed), rng.choice((1, 1, 1, 2, 3)))):
                quantity = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
                held = sim.cart.get(product.product_id, (product, 0))[1]
                sim.cart[product.product_id] = (product, held + quantity)
                add(
                    "cart_add",
                    {**_item(product, quantity), "cart_id": sim.cart_id},
                    page(f"/p/{product.product_id}", product.name),
                )
        if rng.random() < 0.12:
            product, quantity = sim.cart.pop(rng.choice(sorted(sim.cart)))
            add(
                "cart_remove",
                {"cart_id": sim.cart_id, "product_id": product.product_id, "quantity": quantity},
                page("/cart", "Your cart"),
            )
    if engaged and sim.cart:
        # Only customers who identify can check out (checkout asks for the email).
        buy = c.identifies and rng.random() < (_BUY_RETURNING if returning_cart else _BUY_NEW)
        if buy:
            if not sim.identified:
                identify()
            items = [_item(p, q) for p, q in sim.cart.values()]
            value = _cart_value(sim)
            add(
                "checkout_start",
                {"cart_id": sim.cart_id, "value": value, "currency": CURRENCY, "items": items},
                page("/checkout", "Checkout"),
            )
            sim.orders += 1
            add(
                "purchase",
                {
                    "order_id": f"o-{c.customer_id}-{sim.orders}",
                    "cart_id": sim.cart_id,
                    "revenue": value,
                    "currency": CURRENCY,
                    "items": items,
                },
                page("/checkout/thank-you", "Thank you"),
            )
            sim.cart.clear()
            sim.cart_number += 1
        else:
            if rng.random() < 0.4:
                add(
                    "checkout_start",
                    {
                        "cart_id": sim.cart_id,
                        "value": _cart_value(sim),
                        "currency": CURRENCY,
                        "items": [_item(p, q) for p, q in sim.cart.values()],
                    },
                    page("/checkout", "Checkout"),
                )
            sim.abandoned = True
    if wants_identify and not sim.identified and rng.random() < 0.6:
        identify()
    if (
        c.unsubscribes
        and sim.identified
        and not sim.unsubscribed
        and sim.session >= 1
        and rng.random() < 0.5
    ):
        sim.unsubscribed = True
        add(
            "unsubscribe",
            {"list": "marketing", "reason": "too many emails"},
            page("/account/email-preferences", "Email preferences"),
        )
    sim.session += 1
    actions.reverse()
    return actions


def _session_gap(sim: _CustomerSim, cycle_ms: float, rng: random.Random) -> int:
    """Event-time gap between the end of a visit and the next one."""
    gap = max(_MIN_SESSION_GAP_MS, int(rng.expovariate(1 / cycle_ms)))
    if sim.abandoned:
        # Mostly stay away past both reminders (+1 h, +24 h); some come back in between.
        if rng.random() < 0.75:
            return 25 * _HOUR + gap
        return rng.randint(90 * 60_000, 20 * _HOUR)
    return gap


# --------------------------------------------------------------------------- malformed

_MALFORMED_KINDS = (
    "not_json",
    "not_utf8",
    "not_object",
    "missing_customer_id",
    "missing_event_id",
    "unknown_event_type",
    "bad_timestamp",
    "negative_price",
    "bad_quantity",
    "bad_currency",
)


def _malformed(n: int, seed: int, t: int, customers: int, rng: random.Random) -> GenRecord:
    """A record the job must send to the DLQ; never changes any customer's simulated state."""
    kind = rng.choice(_MALFORMED_KINDS)
    cid = f"c-{rng.randrange(customers):05d}"
    product = _pick_product(rng)
    event: dict[str, Any] = {
        "event_id": f"e-{seed}-{n}",
        "event_type": "cart_add",
        "customer_id": cid,
        "timestamp": t,
        "properties": {**_item(product, 1), "cart_id": f"cart-{cid}-1"},
    }
    event_time: int | None = t
    if kind == "not_json":
        text = _ENCODER.encode(event)  # cut as text: a cut inside a UTF-8 sequence is not_utf8
        return GenRecord(
            cid if rng.random() < 0.5 else None, text[: len(text) // 2].encode("utf-8"), None
        )
    if kind == "not_utf8":
        return GenRecord(cid, b'{"event_id": "\xff\xfe", "event_type": "page_view"}', None)
    if kind == "not_object":
        return GenRecord(cid, _dumps(["page_view", cid, t]), None)
    if kind == "missing_customer_id":
        del event["customer_id"]
        return GenRecord(None, _dumps(event), t)
    if kind == "missing_event_id":
        del event["event_id"]
    elif kind == "unknown_event_type":
        event["event_type"] = "wishlist_teleport"
    elif kind == "bad_timestamp":
        event["timestamp"] = "next tuesday"
        event_time = None
    elif kind == "negative_price":
        event["properties"]["price"] = -product.price
    elif kind == "bad_quantity":
        event["properties"]["quantity"] = "two"
    elif kind == "bad_currency":
        event["properties"]["currency"] = "EURO"
    return GenRecord(cid, _dumps(event), event_time)


# --------------------------------------------------------------------------- stream


# ensure_ascii=False: names travel as real UTF-8, as browsers send them. The encoder
# escapes control characters, so the output never contains a raw newline.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TZ_CACHE: dict[int, timezone] = {}


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


def format_timestamp(event_time_ms: int, utc_offset_min: int) -> str:
    """RFC 3339 with milliseconds in the given UTC offset ("Z" for offset 0)."""
    if utc_offset_min == 0:
        return (_EPOCH + timedelta(milliseconds=event_time_ms)).isoformat(timespec="milliseconds")[
            :-6
        ] + "Z"
    tz = _TZ_CACHE.get(utc_offset_min)
    if tz is None:
        tz = _TZ_CACHE[utc_offset_min] = timezone(timedelta(minutes=utc_offset_min))
    # integer timedelta arithmetic: exact, unlike fromtimestamp(ms / 1000)
    return (
        (_EPOCH + timedelta(milliseconds=event_time_ms))
        .astimezone(tz)
        .isoformat(timespec="milliseconds")
    )


class _Planned(NamedTuple):
    """A well-formed event before serialization (so live mode can stamp it at send time)."""

    customer: Customer
    action: _Action
    event_id: str
    event_time_ms: int
    epoch_format: bool


def _simulate(
    seed: int,
    customers: int,
    events: int,
    start_ms: int,
    malformed_ratio: float,
    mean_gap_ms: float,
    clock: Callable[[], int] | None = None,
) -> Iterator[_Planned | GenRecord]:
    """Well-formed events still to be serialized, and finished malformed records (stamped
    with ``clock()`` when given, else with the latest simulated time)."""
    if customers < 1 or events < 0:
        raise ValueError(f"need customers >= 1 and events >= 0, got {customers} and {events}")
    if not 0 <= malformed_ratio <= 1:
        raise ValueError(f"malformed_ratio must be within [0, 1], got {malformed_ratio}")
    if mean_gap_ms <= 0:
        raise ValueError(f"mean_gap_ms must be > 0, got {mean_gap_ms}")
    rng = random.Random(seed)
    # Each customer emits about one event per customers * mean_gap_ms, so the whole stream
    # has the requested mean gap; sessions take part of that cycle, idling the rest.
    cycle_ms = max(
        float(_MIN_SESSION_GAP_MS),
        customers * mean_gap_ms * _EVENTS_PER_SESSION - _ABANDON_PAUSE_MS,
    )
    sims = [_CustomerSim(_make_customer(i, rng)) for i in range(customers)]
    heap: list[tuple[int, int]] = []
    for i, sim in enumerate(sims):
        sim.next_time = start_ms + int(rng.random() * cycle_ms)
        heap.append((sim.next_time, i))
    heapq.heapify(heap)
    last_time = start_ms
    for n in range(events):
        if malformed_ratio and rng.random() < malformed_ratio:
            yield _malformed(n, seed, clock() if clock else last_time, customers, rng)
            continue
        emit_key, i = heapq.heappop(heap)
        sim = sims[i]
        if not sim.pending:
            sim.pending = _plan_session(sim, rng)
        action = sim.pending.pop()
        t = sim.next_time
        last_time = t
        yield _Planned(
            sim.customer, action, f"e-{seed}-{n}", t, rng.random() < sim.customer.epoch_ms_share
        )
        if sim.pending:
            sim.next_time = t + sim.pending[-1].gap_ms
        else:
            gap = _session_gap(sim, cycle_ms, rng)
            sim.next_time = t + gap
        # Emit order key = event time + jitter, never below the key just popped, so the heap
        # yields keys in order: out-of-orderness stays under MAX_OUT_OF_ORDER_MS and the
        # customer's own events (one heap entry at a time) stay in order.
        jitter = rng.randrange(MAX_OUT_OF_ORDER_MS)
        heapq.heappush(heap, (max(sim.next_time + jitter, emit_key), i))


def _serialize(p: _Planned, stamp_ms: int) -> GenRecord:
    c = p.customer
    a = p.action
    event: dict[str, Any] = {
        "event_id": p.event_id,
        "event_type": a.event_type,
        "customer_id": c.customer_id,
        "timestamp": stamp_ms if p.epoch_format else format_timestamp(stamp_ms, c.utc_offset_min),
        "context": a.context,
        "properties": a.properties,
    }
    if a.traits is not None:
        event["traits"] = a.traits
    return GenRecord(c.customer_id, _dumps(event), stamp_ms)


def generate(
    seed: int,
    customers: int,
    events: int,
    start_ms: int,
    malformed_ratio: float = 0.005,
    mean_gap_ms: float = DEFAULT_MEAN_GAP_MS,
) -> Iterator[GenRecord]:
    """The deterministic event stream (see the module docstring for its invariants).

    Customers are ``c-00000`` .. ``c-{customers-1:05d}``. ``mean_gap_ms`` is the approximate
    mean event-time gap between consecutive records (the span is about
    ``events * mean_gap_ms``; with few customers, visits are at least 30 min apart and the
    span grows beyond that)."""
    for item in _simulate(seed, customers, events, start_ms, malformed_ratio, mean_gap_ms):
        yield item if isinstance(item, GenRecord) else _serialize(item, item.event_time_ms)


def generate_live(
    seed: int,
    customers: int,
    events: int,
    malformed_ratio: float = 0.005,
    mean_gap_ms: float = DEFAULT_MEAN_GAP_MS,
    clock: Callable[[], int] = wall_ms,
) -> Iterator[GenRecord]:
    """The same sequence of events as :func:`generate`, but each well-formed event is stamped
    with ``clock()`` when it is pulled from the iterator (for latency measurements: pull it
    right before sending); malformed records that carry a time carry ``clock()`` too."""
    for item in _simulate(seed, customers, events, 0, malformed_ratio, mean_gap_ms, clock):
        yield item if isinstance(item, GenRecord) else _serialize(item, clock())


# --------------------------------------------------------------------------- CLI


def parse_start(text: str) -> int:
    """Epoch ms from digits, or from an ISO 8601 / RFC 3339 instant that carries an offset."""
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not epoch ms nor ISO 8601: {text!r}") from exc
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset (e.g. Z or +01:00): {text!r}")
    return int(dt.timestamp() * 1000)


def register(subparsers: Any) -> None:
    """Add the ``gen`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "gen",
        help="generate a synthetic customer event stream to Kafka or a JSONL file",
        description="Deterministic synthetic shop events (sessions, carts, purchases, "
        "abandonment, malformed records). Writes one event per line to --out, or produces "
        "to --topic at --bootstrap; prints a JSON summary (with per-partition end offsets "
        "for Kafka) on stdout.",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    p.add_argument(
        "--start",
        type=parse_start,
        default=DEFAULT_START_MS,
        help="event time of the stream start: epoch ms or ISO 8601 with offset "
        "(default 2026-01-05T08:00:00Z)",
    )
    p.add_argument(
        "--mean-gap-ms",
        type=float,
        default=DEFAULT_MEAN_GAP_MS,
        help="mean event-time gap between consecutive records",
    )
    p.add_argument("--rate", type=float, default=0.0, help="records per second, 0 = unpaced")
    p.add_argument("--malformed-ratio", type=float, default=0.005)
    p.add_argument(
        "--live", action="store_true", help="stamp each event with the wall clock when it is sent"
    )
    p.add_argument("--out", help="write values one per line to this file ('-' = stdout)")
    p.add_argument(
        "--catalog",
        action="store_true",
        help="write the product catalog the events are drawn from instead, one record per "
        "line, to --out (default stdout): `inboxflow gen --catalog --out conf/catalog.jsonl`",
    )
    p.add_argument(
        "--bootstrap",
        default=os.environ.get(ENV_BOOTSTRAP),
        help=f"Kafka bootstrap HOST:PORT (default ${ENV_BOOTSTRAP})",
    )
    p.add_argument("--topic", default="events")
    p.add_argument(
        "--partitions",
        type=int,
        help="create the topic with this many partitions if it does not exist",
    )
    p.add_argument(
        "--kafka-timestamp",
        choices=("now", "event"),
        default="now",
        help="Kafka record timestamp: producer clock (default; differs from event "
        "time on purpose) or the event time",
    )
    p.set_defaults(func=run)


def _records(args: argparse.Namespace) -> Iterator[GenRecord]:
    if args.live:
        return generate_live(
            args.seed, args.customers, args.events, args.malformed_ratio, args.mean_gap_ms
        )
    return generate(
        args.seed, args.customers, args.events, args.start, args.malformed_ratio, args.mean_gap_ms
    )


def _paced(records: Iterable[GenRecord], rate: float) -> Iterator[GenRecord]:
    """Yield ``rate`` records per second; sleeps *before* pulling the next record, so a live
    record is stamped when it is actually written."""
    iterator = iter(records)
    started = time.monotonic()
    index = 0
    while True:
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            yield next(iterator)
        except StopIteration:
            return
        index += 1


def run(args: argparse.Namespace) -> int:
    """Entry point of ``inboxflow gen``; returns the process exit code."""
    if args.customers < 1 or args.events < 0 or args.rate < 0 or not 0 <= args.malformed_ratio <= 1:
        print(
            "gen: need --customers >= 1, --events >= 0, --rate >= 0, 0 <= --malformed-ratio <= 1",
            file=sys.stderr,
        )
        return 2
    if getattr(args, "catalog", False):
        text = catalog_jsonl()
        if args.out and args.out != "-":
            with open(args.out, "w", encoding="utf-8") as file:
                file.write(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.out:
        records = _records(args)
        if args.rate:
            records = _paced(records, args.rate)
        count = 0
        with contextlib.ExitStack() as stack:
            out = (
                sys.stdout.buffer if args.out == "-" else stack.enter_context(open(args.out, "wb"))
            )
            for record in records:
                out.write(record.value + b"\n")
                count += 1
            out.flush()
        summary: dict[str, Any] = {"records": count, "out": args.out}
    elif args.bootstrap:
        from job.dev import kafka_io

        if args.partitions:
            kafka_io.create_topics(args.bootstrap, {args.topic: args.partitions})
        use_event_time = args.kafka_timestamp == "event"
        deliveries = kafka_io.produce(
            args.bootstrap,
            args.topic,
            ((r.key, r.value, r.event_time_ms if use_event_time else None) for r in _records(args)),
            rate=args.rate or None,
        )
        ends = kafka_io.end_offsets_from_deliveries(deliveries)
        summary = {
            "records": len(deliveries),
            "topic": args.topic,
            "bootstrap": args.bootstrap,
            "end_offsets": {str(p): o for p, o in sorted(ends.items())},
        }
    else:
        print(
            f"gen: give --out FILE or --bootstrap HOST:PORT (or set {ENV_BOOTSTRAP})",
            file=sys.stderr,
        )
        return 2
    # the summary goes to stderr when stdout carries the events
    print(json.dumps(summary, sort_keys=True), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0
