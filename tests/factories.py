"""The one home of what tests build: time constants, events (normalized and on the wire),
Kafka records and keys, deliberately malformed records, journey logic and customer cores,
ClickHouse rows, and the analyst CLI through which a test reads the store. Fixtures live in
the ``conftest.py`` files; everything here is a plain constant, function or class, imported
from ``tests.factories``."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from udfs.clock import MAX_WATERMARK as MAX_WATERMARK

if TYPE_CHECKING:
    from udfs.core.customer import CoreSettings, CustomerCore
    from udfs.core.journey import CustomerLogic, JourneySettings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "conf" / "schemas"
EMAIL_REQUEST_SCHEMA = SCHEMA_DIR / "email_request.json"

# --------------------------------------------------------------------------- time

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# 2026-01-05T08:00:00Z: a fixed instant, never the wall clock.
T0 = 1_767_600_000_000
# Flink's watermark before any watermark arrived (the final one: udfs.clock.MAX_WATERMARK)
MIN_WATERMARK = -(2**63)

# --------------------------------------------------------------------------- events

CAMPAIGN = "abandoned_cart"  # conf/campaigns.yaml
# every event type conf/schemas/ defines (the envelope and email_request are not events)
EVENT_TYPES = frozenset(
    {
        "page_view",
        "product_view",
        "cart_add",
        "cart_remove",
        "checkout_start",
        "purchase",
        "identify",
        "unsubscribe",
        "hard_bounce",
        "spam_complaint",
    }
)

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


def checkout_start(cid: str, ts: int, cart_id: str | None = "cart-1", **kw) -> dict:
    return ev("checkout_start", cid, ts, properties={"cart_id": cart_id} if cart_id else {}, **kw)


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


# --------------------------------------------------------------------------- the wire


def raw(event: dict, iso: bool = False) -> str:
    """The wire form of a normalized event (epoch-ms timestamp, or RFC 3339 with offset)."""
    out = dict(event)
    if iso:
        tz = timezone(timedelta(hours=1))
        out["timestamp"] = datetime.fromtimestamp(event["timestamp"] / 1000, tz).isoformat(
            timespec="milliseconds"
        )
    return json.dumps(out)


def teleport(customer_id: str, event_id: str, ts: int = T0) -> str:
    """A well-formed record of an event type no schema defines (DLQ: unknown_event_type)."""
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "teleport",
            "customer_id": customer_id,
            "timestamp": ts,
        }
    )


def negative_price(customer_id: str, event_id: str, ts: int = T0) -> str:
    """A cart_add whose price is below zero (DLQ: schema_violation at $.properties.price)."""
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "cart_add",
            "customer_id": customer_id,
            "timestamp": ts,
            "properties": {"product_id": "p1", "price": -3},
        }
    )


def kafka_record(event: dict, kafka_ms: int | None = None) -> tuple[str, bytes, int | None]:
    """(key, value, record time) of ``event`` as a producer sends it: keyed by its customer;
    ``kafka_ms`` None lets the producer stamp the record."""
    return event["customer_id"], raw(event).encode(), kafka_ms


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def keys_by_partition(partitions: int, per_partition: int, prefix: str) -> list[list[str]]:
    """Customer ids that Kafka's default partitioner puts on each partition."""
    found: list[list[str]] = [[] for _ in range(partitions)]
    n = 0
    while any(len(keys) < per_partition for keys in found):
        key = f"{prefix}{n}"
        slot = found[partition_of(key, partitions)]
        if len(slot) < per_partition:
            slot.append(key)
        n += 1
    return found


# --------------------------------------------------------------------------- journey and core


# The tests of the cart journey alone (written before issue 14) run the shipped
# abandoned_cart campaign with the other campaigns off and no frequency cap or quiet hours:
# their stories assert every email and outcome, and these would add to them. The campaign
# tests (tests/*/test_campaign*.py) run the shipped campaigns and guards as they are.
OTHER_CAMPAIGNS = ("browse_abandonment", "welcome", "post_purchase")
NO_GUARDS: dict[str, Any] = {"frequency_cap": 0, "quiet_hours": {"start": "", "end": ""}}


def cart_only(abandon_after: int | None = None, steps: list[Any] | None = None) -> dict[str, Any]:
    """``load_config`` overrides: only the cart campaign, no guards but dedup; optionally
    its step 1 ``abandon_after`` (a duration string) and the ``after`` of later steps."""
    cart: dict[str, Any] = {}
    if abandon_after is not None or steps is not None:
        if steps is None:
            steps = [{"after": "24h"}]  # the shipped step 2
        schedule = [
            {"after": abandon_after or "1h", "template": "abandoned_cart_1", "show": "cart"}
        ]
        schedule += [{"template": "abandoned_cart_2", "show": "cart", **s} for s in steps or []]
        cart["steps"] = schedule
    campaigns: dict[str, Any] = {name: {"enabled": False} for name in OTHER_CAMPAIGNS}
    if cart:
        campaigns[CAMPAIGN] = cart
    return {"campaigns": campaigns, "guards": NO_GUARDS}


def write_campaigns(path: Path, overrides: dict[str, Any]) -> Path:
    """The shipped ``conf/campaigns.yaml`` with ``overrides`` (campaign name -> keys)
    merged over it, as a file for a job config's ``campaigns_file``."""
    import yaml

    from job.config import _merge

    data = yaml.safe_load((ROOT / "conf" / "campaigns.yaml").read_text())
    data["campaigns"] = _merge(data["campaigns"], overrides)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def job_yaml(data: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A job config mapping to write into ``directory``: a ``campaigns`` key (the
    overrides of :func:`cart_only`) becomes a campaigns file there, and the other files it
    names are made absolute (they resolve against the config file's directory)."""
    from job.config import with_absolute_files

    data = dict(data)
    campaigns = data.pop("campaigns", None)
    data = with_absolute_files(data)
    if campaigns is not None:
        data["campaigns_file"] = str(write_campaigns(directory / "campaigns.yaml", campaigns))
    return data


def journey_settings(
    abandon_after: int = HOUR, step_2_after: int = DAY, **settings: Any
) -> JourneySettings:
    """The cart campaign alone with two reminder steps of the shipped templates (1 h and
    1 day after the cart's last activity by default), no frequency cap or quiet hours;
    ``settings``: other :class:`JourneySettings` fields."""
    return cart_settings(
        (abandon_after, "abandoned_cart_1"), (step_2_after, "abandoned_cart_2"), **settings
    )


def cart_settings(*schedule: tuple[int, str], **settings: Any) -> JourneySettings:
    """The cart campaign alone with ``schedule`` ((offset from the last cart activity in
    ms, template) per step), no frequency cap or quiet hours."""
    from udfs.core.campaigns import ABOUT_CART, MARKETING, SHOW_CART, Campaign, Step, Trigger
    from udfs.core.journey import CART_EVENTS, JourneySettings

    cart = Campaign(
        name=CAMPAIGN,
        category=MARKETING,
        priority=30,
        about=ABOUT_CART,
        trigger=Trigger(events=tuple(sorted(CART_EVENTS))),
        steps=tuple(Step(after, template, SHOW_CART) for after, template in schedule),
        attribute_purchases=True,
    )
    return JourneySettings(campaigns=(cart,), **settings)


def customer_logic(**kw: Any) -> CustomerLogic:
    """:class:`CustomerLogic` over :func:`journey_settings` ``(**kw)``."""
    from udfs.core.journey import CustomerLogic

    return CustomerLogic(journey_settings(**kw))


def core_settings(
    store_shards: int = 2, abandon_after: str | None = None, steps: list[Any] | None = None
) -> CoreSettings:
    """What :class:`CustomerCore` and ``CustomerFunction`` are built from, as
    ``job.pipeline`` builds it from the shipped config with :func:`cart_only` overrides,
    with ``store_shards`` ClickHouse shards (0: no store rows)."""
    from job.config import load_config
    from job.pipeline import core_settings as settings_of

    overrides: dict[str, Any] = {
        "clickhouse": {"enabled": False},
        **cart_only(abandon_after, steps),
    }
    cfg = load_config(env={}, overrides=overrides)
    return replace(settings_of(cfg, store=False), store_shards=store_shards)


def customer_core(
    store_shards: int = 2, abandon_after: str | None = None, steps: list[Any] | None = None
) -> CustomerCore:
    """A :class:`CustomerCore` of :func:`core_settings`."""
    from udfs.core.customer import CustomerCore

    return CustomerCore(core_settings(store_shards, abandon_after, steps))


# --------------------------------------------------------------------------- ClickHouse rows

# 2023-11-14T22:13:20.000Z: the store tests' own instant
STORE_T0 = 1_700_000_000_000


def profile_row(customer_id: str, version: int, **overrides: Any) -> dict:
    """A ``customer_profiles`` row (times in epoch ms) whose figures grow with ``version``."""
    row = {
        "customer_id": customer_id,
        "email": f"{customer_id}@example.com",
        "first_name": "Ann",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "first_seen": STORE_T0,
        "last_seen": STORE_T0 + version * MINUTE,
        "event_counts": {"page_view": version, "cart_add": 1},
        "revenue_total": 10.0 * version,
        "order_count": version,
        "avg_order_value": 10.0,
        "last_purchase_at": None,
        "recent_products": [f"p{version}", "p0"],
        "favourite_categories": ["shoes"],
        "cart_value": 1.5 * version,
        "cart_items": version,
        "journey_status": f"step{version}",
        "emails_sent": version,
        "unsubscribed": False,
        "updated_at": STORE_T0 + version * MINUTE,
        "version": version,
    }
    row.update(overrides)
    return row


def email_row(
    request_id: str,
    customer_id: str | None = None,
    *,
    step: int = 1,
    due_at: int = STORE_T0,
    **overrides: Any,
) -> dict:
    """An ``email_requests`` row (times in epoch ms); ``customer_id`` defaults to
    ``c-REQUEST_ID``."""
    customer_id = f"c-{request_id}" if customer_id is None else customer_id
    row = {
        "request_id": request_id,
        "campaign": "cart_abandon",
        "step": step,
        "customer_id": customer_id,
        "status": "sent",
        "reason": "",
        "subject": f"Step {step}",
        "due_at": due_at,
        "emitted_at": due_at + 250,
        "cart_id": f"cart-{customer_id}",
        "cart_value": 42.5,
        "currency": "EUR",
        "product_ids": ["p1", "p2"],
        "category": "marketing",
        "deferrals": 0,
        "deferred_until": None,
    }
    row.update(overrides)
    return row


def recovery_row(
    customer_id: str,
    order_id: str,
    request_id: str,
    step: int,
    revenue: float,
    reminded_at: int = STORE_T0,
) -> dict:
    """A ``cart_recoveries`` row: bought an hour after the reminder (times in epoch ms)."""
    return {
        "customer_id": customer_id,
        "cart_id": f"cart-{customer_id}",
        "order_id": order_id,
        "reminder_step": step,
        "reminder_request_id": request_id,
        "reminded_at": reminded_at,
        "purchased_at": reminded_at + HOUR,
        "revenue": revenue,
        "currency": "EUR",
        "seconds_to_purchase": 3600.0,
    }


class Backoffs:
    """Runs ``udfs.clickhouse.writer.write_batch`` with its waits recorded instead of slept:
    ``sleeps`` (seconds) and ``retries`` ((attempt, delay in seconds, error text)) of every
    :meth:`write`."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, float, str]] = []

    def write(self, store: Any, table: str, rows: list[dict], retry: Any, rand: float) -> list:
        """``write_batch`` under ``retry``, its jitter fixed at ``rand``; the rejected rows."""
        from udfs.clickhouse.writer import write_batch

        return write_batch(
            store,
            table,
            rows,
            retry=retry,
            sleep=self.sleeps.append,
            rand=lambda: rand,
            on_retry=lambda attempt, delay, exc: self.retries.append((attempt, delay, str(exc))),
        )


# --------------------------------------------------------------------------- the analyst CLI


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
