"""Shared time constants and event factories for every test layer."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# 2026-01-05T08:00:00Z: a fixed instant, never the wall clock.
T0 = 1_767_600_000_000

_ids = itertools.count(1)


def ev(
    event_type: str,
    customer_id: str,
    ts: int,
    *,
    event_id: str | None = None,
    properties: dict | None = None,
    traits: dict | None = None,
) -> dict:
    """A normalized (validated) event, as the validator hands it to the customer function."""
    return {
        "event_id": event_id or f"e{next(_ids)}",
        "event_type": event_type,
        "customer_id": customer_id,
        "timestamp": ts,
        "context": {},
        "properties": properties or {},
        "traits": traits or {},
    }


def identify(
    cid: str,
    ts: int,
    email: str | None = "alice@example.com",
    first_name: str | None = "Alice",
    **kw,
) -> dict:
    traits = {k: v for k, v in {"email": email, "first_name": first_name}.items() if v}
    return ev("identify", cid, ts, traits=traits, **kw)


def cart_add(
    cid: str,
    ts: int,
    product_id: str = "p1",
    price: float = 10.0,
    quantity: int = 1,
    cart_id: str | None = "cart-1",
    name: str | None = "Mug",
    **kw,
) -> dict:
    props = {
        "product_id": product_id,
        "price": price,
        "quantity": quantity,
        "currency": "EUR",
        "name": name,
        "category": "kitchen",
    }
    if cart_id is not None:
        props["cart_id"] = cart_id
    return ev("cart_add", cid, ts, properties=props, **kw)


def cart_remove(cid: str, ts: int, product_id: str = "p1", **kw) -> dict:
    return ev("cart_remove", cid, ts, properties={"product_id": product_id}, **kw)


def purchase(
    cid: str,
    ts: int,
    cart_id: str | None = "cart-1",
    revenue: float = 10.0,
    order_id: str = "o1",
    **kw,
) -> dict:
    props = {"order_id": order_id, "revenue": revenue, "currency": "EUR"}
    if cart_id is not None:
        props["cart_id"] = cart_id
    return ev("purchase", cid, ts, properties=props, **kw)


def page_view(cid: str, ts: int, **kw) -> dict:
    return ev("page_view", cid, ts, properties={"url": "https://shop.example.com/"}, **kw)


def unsubscribe(cid: str, ts: int, **kw) -> dict:
    return ev("unsubscribe", cid, ts, **kw)


def raw(event: dict, iso: bool = False) -> str:
    """The wire form of a normalized event (epoch-ms timestamp, or RFC 3339 with offset)."""
    out = dict(event)
    if iso:
        from datetime import datetime, timedelta, timezone

        tz = timezone(timedelta(hours=1))
        out["timestamp"] = datetime.fromtimestamp(event["timestamp"] / 1000, tz).isoformat(
            timespec="milliseconds"
        )
    return json.dumps(out)


ROOT = Path(__file__).resolve().parent.parent


def run_cli(dsn: str, *args: str) -> str:
    """Standard output of ``inboxflow ARGS --dsn DSN``, which must succeed, in a process of
    its own: chdb lets one process open a path, and the test process must not hold it."""
    done = subprocess.run(
        [sys.executable, "-m", "job.cli", *args, "--dsn", dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def query_cli(dsn: str, sql: str) -> list[dict]:
    """Rows of ``sql`` through the analyst CLI (`inboxflow query --format json`)."""
    return json.loads(run_cli(dsn, "query", sql, "--format", "json"))
