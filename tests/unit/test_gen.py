"""The synthetic event stream: determinism, ordering, mix, malformed records and the CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from job.config import ENV_BOOTSTRAP
from job.dev import gen
from job.dev.gen import DEFAULT_START_MS, MAX_OUT_OF_ORDER_MS, GenRecord, generate, generate_live
from tests.factories import EVENT_TYPES, HOUR, ROOT

START = DEFAULT_START_MS  # 2026-01-05T08:00:00Z
ENVELOPE = ("event_id", "event_type", "customer_id", "timestamp", "context", "properties")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)")
CUSTOMER_ID = re.compile(r"c-\d{5}")

# The small fixed stream most tests look at.
SEED, CUSTOMERS, EVENTS, MALFORMED = 7, 40, 1500, 0.01


def parse_ts(value: Any) -> int:
    if isinstance(value, int):
        return value
    assert RFC3339.fullmatch(value), value
    dt = datetime.fromisoformat(value)
    return round(dt.timestamp() * 1000)


def well_formed(record: GenRecord) -> dict[str, Any] | None:
    """The decoded event if it is one the job must accept, else None. Independent of the
    generator's own malformed kinds: it checks what a validator would check."""
    try:
        event = json.loads(record.value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(event, dict) or any(k not in event for k in ENVELOPE):
        return None
    if event["event_type"] not in EVENT_TYPES or not isinstance(event["customer_id"], str):
        return None
    if not isinstance(event["timestamp"], int) and not (
        isinstance(event["timestamp"], str) and RFC3339.fullmatch(event["timestamp"])
    ):
        return None
    props = event["properties"]
    for key in ("price", "revenue", "value"):
        if key in props and not (isinstance(props[key], (int, float)) and props[key] >= 0):
            return None
    if "quantity" in props and not (isinstance(props["quantity"], int) and props["quantity"] >= 1):
        return None
    if "currency" in props and props["currency"] != "EUR":
        return None
    return event


@pytest.fixture(scope="module")
def stream() -> list[GenRecord]:
    return list(generate(SEED, CUSTOMERS, EVENTS, START, malformed_ratio=MALFORMED))


@pytest.fixture(scope="module")
def events(stream: list[GenRecord]) -> list[tuple[GenRecord, dict[str, Any]]]:
    out = []
    for record in stream:
        event = well_formed(record)
        if event is not None:
            out.append((record, event))
    return out


def test_same_seed_gives_same_bytes_and_other_seed_differs(stream: list[GenRecord]) -> None:
    again = list(generate(SEED, CUSTOMERS, EVENTS, START, malformed_ratio=MALFORMED))
    assert again == stream
    other = list(generate(SEED + 1, CUSTOMERS, EVENTS, START, malformed_ratio=MALFORMED))
    assert [r.value for r in other] != [r.value for r in stream]


def test_stream_does_not_depend_on_hash_randomization(stream: list[GenRecord]) -> None:
    code = (
        "import hashlib, sys; from job.dev.gen import generate; "
        f"rs = generate({SEED}, {CUSTOMERS}, {EVENTS}, {START}, malformed_ratio={MALFORMED}); "
        "sys.stdout.write(hashlib.sha256(b''.join(r.value + b'|' for r in rs)).hexdigest())"
    )
    expected = hashlib.sha256(b"".join(r.value + b"|" for r in stream)).hexdigest()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=ROOT,
        )
        assert out.stdout == expected


def test_exact_count_and_exact_mix_for_the_fixed_seed(
    stream: list[GenRecord], events: list
) -> None:
    assert len(stream) == EVENTS
    mix = Counter(event["event_type"] for _, event in events)
    assert mix == {
        "product_view": 726,
        "page_view": 486,
        "cart_add": 129,
        "checkout_start": 64,
        "identify": 32,
        "purchase": 27,
        "cart_remove": 19,
        "unsubscribe": 1,
    }
    assert EVENTS - len(events) == 16  # malformed


def test_each_customer_is_strictly_time_ordered_and_overall_jitter_is_bounded(events: list) -> None:
    last: dict[str, int] = {}
    highest = 0
    behind = 0
    for record, event in events:
        t = record.event_time_ms
        assert t is not None
        assert t > last.get(event["customer_id"], 0), event["event_id"]
        last[event["customer_id"]] = t
        assert t > highest - MAX_OUT_OF_ORDER_MS, event["event_id"]
        behind += t < highest
        highest = max(highest, t)
    assert behind > 0  # some jitter really is present


def test_every_well_formed_event_has_the_envelope_and_its_timestamp_is_the_event_time(
    events: list,
) -> None:
    ids = set()
    for record, event in events:
        assert record.key == event["customer_id"]
        assert CUSTOMER_ID.fullmatch(event["customer_id"])
        assert re.fullmatch(rf"e-{SEED}-\d+", event["event_id"])
        ids.add(event["event_id"])
        assert parse_ts(event["timestamp"]) == record.event_time_ms
        assert isinstance(event["context"], dict) and isinstance(event["properties"], dict)
        assert ("traits" in event) == (event["event_type"] == "identify")
        assert b"\n" not in record.value
    assert len(ids) == len(events)
    formats = Counter(type(event["timestamp"]).__name__ for _, event in events)
    assert formats["int"] > 100 and formats["str"] > 100
    offsets = {
        event["timestamp"][-6:] for _, event in events if isinstance(event["timestamp"], str)
    }
    assert "+01:00" in offsets and "-05:00" in offsets


def test_event_time_spans_start_to_more_than_a_day(events: list) -> None:
    times = [record.event_time_ms for record, _ in events]
    assert START <= min(times) < START + HOUR
    assert max(times) - START > 24 * HOUR


def test_carts_purchases_and_identities_are_consistent(events: list) -> None:
    cart: dict[str, dict[str, int]] = defaultdict(dict)  # cart_id -> product -> quantity
    price: dict[str, float] = {}
    identified: set[str] = set()
    purchased: set[str] = set()
    for _, event in events:
        cid, kind, props = event["customer_id"], event["event_type"], event["properties"]
        if "cart_id" in props:
            assert re.fullmatch(rf"cart-{cid}-\d+", props["cart_id"])
            assert props["cart_id"] not in purchased  # a bought cart is never touched again
        if kind == "cart_add":
            lines = cart[props["cart_id"]]
            lines[props["product_id"]] = lines.get(props["product_id"], 0) + props["quantity"]
            price[props["product_id"]] = props["price"]
        elif kind == "cart_remove":
            assert cart[props["cart_id"]].pop(props["product_id"]) == props["quantity"]
        elif kind == "identify":
            assert event["traits"]["email"].endswith((".com", ".org", ".net"))
            assert set(event["traits"]) >= {"email", "first_name", "locale", "timezone"}
            identified.add(cid)
        elif kind == "purchase":
            assert cid in identified
            lines = cart[props["cart_id"]]
            assert {i["product_id"]: i["quantity"] for i in props["items"]} == lines
            assert props["revenue"] == round(sum(price[p] * q for p, q in lines.items()), 2)
            assert props["order_id"].startswith(f"o-{cid}-")
            purchased.add(props["cart_id"])
        elif kind == "unsubscribe":
            assert cid in identified
    carts_with_items = {c for c in cart if c in purchased or cart[c]}
    assert len(purchased) == 27
    assert 0.2 < len(purchased) / len(carts_with_items) < 0.5
    carting = {c.split("-", 1)[1].rsplit("-", 1)[0] for c in carts_with_items}
    assert carting - identified  # some customers with a cart never identify: no email


def test_abandoned_carts_stay_silent_long_enough_for_both_reminders(events: list) -> None:
    last_cart_activity: dict[str, int] = {}
    quiet_1h = quiet_24h = 0
    for record, event in events:
        cid, t = event["customer_id"], record.event_time_ms
        if event["event_type"] in ("cart_add", "cart_remove", "checkout_start"):
            if cid in last_cart_activity:
                gap = t - last_cart_activity[cid]
                quiet_1h += gap >= HOUR
                quiet_24h += gap >= 24 * HOUR
            last_cart_activity[cid] = t
        elif event["event_type"] == "purchase":
            last_cart_activity.pop(cid, None)
    assert quiet_1h >= 10 and quiet_24h >= 5


def test_malformed_ratio_is_respected_and_zero_means_none() -> None:
    records = list(generate(3, 200, 20_000, START, malformed_ratio=0.02))
    bad = [r for r in records if well_formed(r) is None]
    assert 320 <= len(bad) <= 480
    clean = list(generate(3, 200, 3000, START, malformed_ratio=0.0))
    assert all(well_formed(r) is not None for r in clean)
    kinds = set()
    for r in bad:
        try:
            doc = json.loads(r.value.decode("utf-8"))
        except UnicodeDecodeError:
            kinds.add("not_utf8")
            continue
        except ValueError:
            kinds.add("not_json")
            continue
        if not isinstance(doc, dict):
            kinds.add("not_object")
        elif "customer_id" not in doc:
            assert r.key is None
            kinds.add("missing_customer_id")
        elif doc.get("properties", {}).get("price", 0) < 0:
            kinds.add("negative_price")
        elif doc["event_type"] not in EVENT_TYPES:
            kinds.add("unknown_event_type")
    assert kinds == {
        "not_utf8",
        "not_json",
        "not_object",
        "missing_customer_id",
        "negative_price",
        "unknown_event_type",
    }


def test_the_script_product_and_other_tricky_names_appear(events: list) -> None:
    names = {e["properties"].get("name") for _, e in events if e["event_type"] == "product_view"}
    assert '<script>alert("pwned")</script> Mug' in names
    assert "Salt & Pepper Mill Set" in names
    assert 'The "Weekender" Duffel Bag' in names


def test_catalog_has_200_unique_products_with_image_urls() -> None:
    assert len(gen.CATALOG) == 200
    assert len({p.product_id for p in gen.CATALOG}) == 200
    assert gen.CATALOG[0].product_id == "p-0001" and gen.CATALOG[-1].product_id == "p-0200"
    assert all(
        p.image_url == f"https://cdn.example.com/img/{p.product_id}.jpg" for p in gen.CATALOG
    )
    assert all(p.price > 0 for p in gen.CATALOG)


def test_live_stream_has_the_same_events_stamped_by_the_clock() -> None:
    ticks = iter(range(1_800_000_000_000, 1_800_000_000_000 + 10_000))
    live = list(generate_live(SEED, CUSTOMERS, 300, malformed_ratio=0.0, clock=lambda: next(ticks)))
    fixed = list(generate(SEED, CUSTOMERS, 300, START, malformed_ratio=0.0))
    assert [r.event_time_ms for r in live] == list(range(1_800_000_000_000, 1_800_000_000_300))
    for a, b in zip(live, fixed, strict=True):
        ea, eb = json.loads(a.value), json.loads(b.value)
        assert parse_ts(ea.pop("timestamp")) == a.event_time_ms
        eb.pop("timestamp")
        assert ea == eb


def test_live_malformed_records_carry_the_clock_time_too() -> None:
    live = list(generate_live(3, 200, 3000, malformed_ratio=0.05, clock=lambda: 1_800_000_000_000))
    bad = [r for r in live if well_formed(r) is None]
    assert len(bad) > 100
    assert {r.event_time_ms for r in live} == {1_800_000_000_000, None}
    for r in bad:
        try:
            doc = json.loads(r.value)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("timestamp"), int):
            assert doc["timestamp"] == 1_800_000_000_000


def test_format_timestamp_is_exact() -> None:
    assert gen.format_timestamp(START + 123, 60) == "2026-01-05T09:00:00.123+01:00"
    assert gen.format_timestamp(START, 0) == "2026-01-05T08:00:00.000Z"
    assert gen.format_timestamp(START + 999, 330) == "2026-01-05T13:30:00.999+05:30"
    assert gen.format_timestamp(START + 1, -300) == "2026-01-05T03:00:00.001-05:00"


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="inboxflow")
    gen.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_writes_the_same_stream_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    code = _cli(
        [
            "gen",
            "--seed",
            "7",
            "--customers",
            "40",
            "--events",
            "500",
            "--malformed-ratio",
            "0.01",
            "--start",
            "2026-01-05T09:00:00+01:00",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    expected = [r.value for r in generate(7, 40, 500, START, malformed_ratio=0.01)]
    assert out.read_bytes() == b"".join(v + b"\n" for v in expected)
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "records": 500}


def test_cli_start_accepts_epoch_ms_and_rejects_naive_or_bad_times() -> None:
    assert gen.parse_start("1767600000000") == START
    assert gen.parse_start("2026-01-05T08:00:00Z") == START
    for bad in ("2026-01-05T08:00:00", "yesterday"):
        with pytest.raises(argparse.ArgumentTypeError):
            gen.parse_start(bad)


def test_cli_without_a_target_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)
    assert _cli(["gen", "--events", "5"]) == 2
    assert "--out FILE or --bootstrap" in capsys.readouterr().err
