"""The browser snippet (job/collector/static/inboxflow.js) and the demo shop's static files.

The snippet runs in Node's ``vm`` with fakes (tests/unit/snippet/driver.js): window,
document, location, navigator with sendBeacon, a Map-backed localStorage shared between
"page loads", fetch with scripted answers, predictable UUIDs, a scripted Math.random and
fake timers on a fake clock. The driver runs every scenario once and prints what it saw;
the assertions are here. Node is part of the machine: without it these tests fail, they do
not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.factories import ROOT, SCHEMA_DIR
from udfs.core.validation import EventValidator, Invalid

STATIC = ROOT / "job" / "collector" / "static"
SNIPPET = STATIC / "inboxflow.js"
SHOP = STATIC / "shop"
DRIVER = Path(__file__).resolve().parent / "snippet" / "driver.js"
CATALOG = ROOT / "conf" / "catalog.jsonl"

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ISO_UTC_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
TEXT_PLAIN = "text/plain;charset=UTF-8"
PAGE_CONTEXT = {
    "url": "https://shop.example.com/p/p-0001?ref=mail",
    "path": "/p/p-0001",
    "title": "Demo shop",
    "referrer": "https://ref.example.com/x",
}


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "node (Node.js) is not on PATH: the snippet tests run inboxflow.js in Node's vm "
            "module. Node is part of this machine's setup; install Node.js >= 18.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    proc = subprocess.run(
        [node(), str(DRIVER)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr}"
    assert proc.stdout, f"driver printed nothing:\n{proc.stderr}"
    return json.loads(proc.stdout)


def scenario(results: dict[str, Any], name: str) -> Any:
    assert name in results, f"the driver has no scenario {name!r}"
    result = results[name]
    if isinstance(result, dict) and set(result) == {"error"}:
        pytest.fail(f"scenario {name} failed in node:\n{result['error']}", pytrace=False)
    return result


def without_timestamps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "timestamp"} for e in events]


# --- identity --------------------------------------------------------------------------------


def test_events_carry_the_anonymous_id_before_identify_and_the_customer_id_after(results):
    r = scenario(results, "identity")
    anon = r["anonymous"]["anonymous_id"]
    assert anon.startswith("anon-") and UUID.fullmatch(anon.removeprefix("anon-"))
    assert r["anonymous"]["customer_id"] is None
    assert r["after"] == {"anonymous_id": anon, "customer_id": "c-42"}
    sent = r["sent"]
    assert [e["event_id"] for e in sent] == r["returned"]
    assert [(e["event_type"], e["customer_id"]) for e in sent] == [
        ("product_view", anon),
        ("page_view", anon),
        ("identify", "c-42"),
        ("cart_add", "c-42"),
        ("cart_remove", r["afterReset"]["anonymous_id"]),
    ]
    context = {"page": PAGE_CONTEXT, "user_agent": "FakeAgent/1.0", "locale": "de-DE"}
    assert without_timestamps(sent[:4]) == [
        {
            "event_id": r["returned"][0],
            "event_type": "product_view",
            "customer_id": anon,
            "properties": {"product_id": "p-0001", "price": 31.99, "currency": "EUR"},
            "context": {**context, "anonymous_id": anon},
        },
        {
            "event_id": r["returned"][1],
            "event_type": "page_view",
            "customer_id": anon,
            "properties": {**PAGE_CONTEXT, "title": "Lavender Face Oil"},
            "context": {**context, "anonymous_id": anon},
        },
        {
            "event_id": r["returned"][2],
            "event_type": "identify",
            "customer_id": "c-42",
            "properties": {},
            "traits": {"email": "ada@example.com", "first_name": "Ada", "locale": "en"},
            "context": {**context, "anonymous_id": anon},
        },
        {
            "event_id": r["returned"][3],
            "event_type": "cart_add",
            "customer_id": "c-42",
            "properties": {"product_id": "p-0001", "price": 31.99},
            "context": {**context, "anonymous_id": anon},
        },
    ]
    for e in sent:
        assert UUID.fullmatch(e["event_id"])
        assert ISO_UTC_MS.fullmatch(e["timestamp"])


def test_identify_is_remembered_across_loads_and_reset_starts_a_new_anonymous_id(results):
    r = scenario(results, "identity")
    anon = r["anonymous"]["anonymous_id"]
    assert r["reloaded"] == {"anonymous_id": anon, "customer_id": "c-42"}
    new = r["afterReset"]["anonymous_id"]
    assert r["afterReset"]["customer_id"] is None
    assert new.startswith("anon-") and new != anon
    last = r["sent"][-1]
    assert last["customer_id"] == new
    assert last["context"]["anonymous_id"] == new
    # first-party keys: the customer id is gone, the new anonymous id is stored, queue empty
    assert r["storage"] == {"inboxflow.anonymous_id": new}


def test_the_anonymous_id_persists_across_two_loads_sharing_the_storage(results):
    r = scenario(results, "anonymousIdPersists")
    assert r["first"] == r["second"] == r["stored"]
    assert r["first"].startswith("anon-")


def test_every_event_the_snippet_sends_passes_the_jobs_validator(results):
    validator = EventValidator(SCHEMA_DIR)
    now = int(time.time() * 1000)
    sent = scenario(results, "identity")["sent"]
    for event in sent:
        result = validator.validate(json.dumps(event), now)
        assert not isinstance(result, Invalid), (event["event_type"], result)
        assert result["customer_id"] == event["customer_id"]
    assert len(sent) == 5


# --- batching --------------------------------------------------------------------------------


def test_a_batch_is_posted_as_text_plain_to_the_write_key_url_and_202_empties_the_queue(results):
    r = scenario(results, "batchPost")
    assert r["before"] == 0, "nothing is sent before flushInterval (1000 ms)"
    assert r["queuedBefore"] == r["returned"]
    assert r["request"] == {
        # the endpoint's trailing slash is dropped, the key is URL-encoded
        "url": "https://collector.example.com/v1/events?write_key=k%2F%2B%201",
        "method": "POST",
        "headers": {"Content-Type": TEXT_PLAIN},
        "keepalive": True,
        "at": 1000,
        "keys": ["batch"],
        "ids": r["returned"],
    }
    assert r["requests"] == 1
    assert r["stats"] == {"queued": 0, "sent": 3, "dropped": 0, "retries": 0, "lastStatus": 202}
    assert r["queueKey"] is None
    assert r["flushes"] == [{"status": 202, "accepted": 3, "ids": r["returned"]}]
    assert r["pending"] == [], "no timer left once the queue is empty"


def test_a_full_batch_is_sent_at_once(results):
    r = scenario(results, "maxBatch")
    assert r["afterOne"] == 0
    assert r["afterTwo"] == [{"at": 0, "ids": r["sent"]}]
    assert r["queued"] == 0


def test_only_one_request_is_in_flight(results):
    r = scenario(results, "oneInFlight")
    assert r["whileInFlight"] == [{"at": 0, "ids": [r["e1"]]}]
    assert r["afterFirst"] == [{"at": 0, "ids": [r["e1"]]}, {"at": 5000, "ids": [r["e2"]]}]
    assert r["most"] == 1
    assert r["done"]["sent"] == 2
    assert r["stats"]["queued"] == 0


# --- retries ---------------------------------------------------------------------------------


def test_503_with_retry_after_waits_and_sends_the_same_events_again(results):
    r = scenario(results, "retryAfter")
    assert r["first"] == [{"at": 1000, "ids": r["sent"]}]
    assert r["statsAfter503"] == {
        "queued": 2,
        "sent": 0,
        "dropped": 0,
        "retries": 1,
        "lastStatus": 503,
    }
    assert r["at2999"] == r["first"], "not again before Retry-After (2 s)"
    assert r["all"] == [{"at": 1000, "ids": r["sent"]}, {"at": 3000, "ids": r["sent"]}]
    assert r["stats"] == {"queued": 0, "sent": 2, "dropped": 0, "retries": 1, "lastStatus": 202}
    assert r["queueKey"] is None
    assert r["flushes"] == [
        {"status": 503, "accepted": 0, "retryIn": 2000, "ids": r["sent"]},
        {"status": 202, "accepted": 2, "ids": r["sent"]},
    ]


def test_network_errors_back_off_exponentially_with_full_jitter(results):
    r = scenario(results, "backoff")
    times = [q["at"] for q in r["failed"]]
    assert times[0] == 1000
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    caps = [min(30_000, 500 * 2**n) for n in range(len(gaps))]
    assert caps == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
    assert gaps == pytest.approx([rand * cap for rand, cap in zip(r["randoms"], caps, strict=True)])
    assert all(0 <= gap <= cap for gap, cap in zip(gaps, caps, strict=True))
    assert r["stats"] == {"queued": 1, "sent": 0, "dropped": 0, "retries": 11, "lastStatus": 0}
    assert r["recovered"] == {
        "queued": 0,
        "sent": 1,
        "dropped": 0,
        "retries": 11,
        "lastStatus": 202,
    }
    assert r["next"] == 0.5 * 500, "after a success the backoff starts again at 500 ms"


# --- refusals --------------------------------------------------------------------------------


def test_400_drops_the_invalid_events_and_never_sends_them_again(results):
    r = scenario(results, "badRequest")
    single = r["single"]
    assert single["requests"] == [{"at": 1000, "ids": [single["bad"]]}]
    assert single["queueKey"] is None
    assert single["stats"]["retries"] == 0 and single["stats"]["lastStatus"] == 400
    # the reasons, without the message
    assert single["warn"] == [
        [
            "inboxflow: 400, dropped 1 invalid event(s)",
            [{"index": 0, "reason": "schema_violation", "path": "$.properties.product_id"}],
        ]
    ]
    assert single["flushes"] == [{"status": 400, "rejected": [single["bad"]]}]


def test_400_of_a_batch_keeps_the_valid_events_it_did_not_store(results):
    """A batch is all-or-nothing: only the events the 400 names are dropped."""
    p = scenario(results, "badRequest")["partial"]
    both = [p["good"], p["invalid"]]
    assert p["afterFirst"] == {"requests": [{"at": 1000, "ids": both}], "queue": [p["good"]]}
    assert p["requests"] == [{"at": 1000, "ids": both}, {"at": 2000, "ids": [p["good"]]}]
    assert p["queueKey"] is None
    assert p["stats"] == {"queued": 0, "sent": 1, "dropped": 0, "retries": 0, "lastStatus": 202}
    assert p["warn"][0][1] == [
        {"index": 1, "reason": "bad_currency", "path": "$.properties.currency"}
    ]
    whole = scenario(results, "badRequest")["whole"]
    assert whole == {"requests": [2], "queued": 0}, "a 400 naming no event drops the batch"


def test_401_and_403_drop_the_batch_without_retrying(results):
    r = scenario(results, "unauthorized")
    for status in ("401", "403"):
        assert r[status] == {"requests": 1, "queued": 0, "error": 1, "retries": 0}


def test_413_splits_the_batch_in_halves_and_drops_a_single_event(results):
    r = scenario(results, "tooLarge")
    first, second = r["sent"]
    assert r["split"]["requests"] == [
        {"at": 1000, "ids": [first, second]},
        {"at": 1000, "ids": [first]},
        {"at": 1000, "ids": [second]},
    ]
    assert r["split"]["stats"] == {
        "queued": 0,
        "sent": 2,
        "dropped": 0,
        "retries": 0,
        "lastStatus": 202,
    }
    alone = r["alone"]
    assert alone["requests"] == [{"at": 1000, "ids": [alone["id"]]}]
    assert alone["queued"] == 0
    assert alone["error"] == [["inboxflow: 413, dropped 1 event(s): a retry cannot succeed"]]


def test_a_full_queue_drops_the_oldest_events_and_counts_them(results):
    r = scenario(results, "overflow")
    assert r["queue"] == r["sent"][2:]
    assert r["stats"] == {"queued": 3, "sent": 0, "dropped": 2, "retries": 0, "lastStatus": None}
    assert r["warn"] == 2
    assert r["requests"] == [{"at": 1000, "ids": r["sent"][2:]}]


# --- page hide -------------------------------------------------------------------------------


def test_page_hide_beacons_the_queue_and_the_next_load_sends_it_again(results):
    r = scenario(results, "beacon")
    assert r["fetchedBeforeHide"] == 0
    [beacon] = r["beacons"]
    assert beacon["url"] == "/v1/events?write_key=K-123456"
    assert beacon["type"] == "text/plain;charset=utf-8"  # Blob lower-cases its type
    assert [e["event_id"] for e in beacon["body"]["batch"]] == r["sent"]
    assert all("beacon" not in e for e in beacon["body"]["batch"])
    # kept, marked: a beacon gives no answer
    assert [e["event_id"] for e in r["queued"]] == r["sent"]
    assert [e["beacon"] for e in r["queued"]] == [True, True]
    assert r["beaconsAfterPagehide"] == 1, "pagehide after visibilitychange: not sent twice"
    # the next load sends them by fetch (the job drops the second copy by event_id)
    [resent] = r["resent"]
    assert resent == beacon["body"]
    assert r["queueKey"] is None


def test_a_refused_or_missing_beacon_leaves_the_events_queued_unmarked(results):
    r = scenario(results, "beaconRefused")
    assert r["refused"]["beacons"] == 1
    for case in ("refused", "missing"):
        [event] = r[case]["queue"]
        assert "beacon" not in event


def test_beacons_are_chunked_below_the_64_kib_limit(results):
    r = scenario(results, "beaconChunks")
    s = r["sent"]
    assert [c["ids"] for c in r["chunks"]] == [[s[0], s[1]], [s[2], s[3]], [s[4]]]
    assert all(c["bytes"] <= 60_000 for c in r["chunks"])
    assert r["marked"] == [True] * 5


def test_the_queue_survives_a_reload(results):
    r = scenario(results, "reload")
    assert r["fetchedBefore"] == 0
    assert r["queued"] == 2
    assert r["requests"] == [{"at": 1000, "ids": r["sent"]}]
    assert r["after"] == 0


# --- setup -----------------------------------------------------------------------------------


def test_without_localstorage_the_snippet_keeps_its_state_in_memory(results):
    r = scenario(results, "storageFallback")
    assert r["queued"] == 1
    assert r["user"]["anonymous_id"].startswith("anon-")
    assert r["requests"] == [{"at": 1000, "ids": [r["id"]]}]
    assert r["error"] == []
    assert scenario(results, "explicitStorage") == {"queued": 1}


def test_init_needs_a_write_key_and_takes_defaults_from_window_config(results):
    r = scenario(results, "noWriteKey")
    assert r["error"] == [["inboxflow: init() needs a writeKey"], ["inboxflow: call init() first"]]
    assert r["tracked"] is None
    assert r["requests"] == 0
    assert r["configUrl"] == ["https://c.example.com/v1/events?write_key=from-config"]


def test_without_random_uuid_the_ids_are_v4_uuids_from_get_random_values(results):
    r = scenario(results, "uuidFallback")
    assert r["id"] == "00112233-4455-4677-8899-aabbccddeeff"
    assert UUID.fullmatch(r["id"])
    assert r["anonymous"] == "anon-" + r["id"]


def test_page_cuts_its_properties_to_the_schema_limits(results):
    r = scenario(results, "truncation")
    assert r == {
        "title": 512,
        "url": PAGE_CONTEXT["url"],
        "referrer": PAGE_CONTEXT["referrer"],
    }


# --- static files ----------------------------------------------------------------------------


def test_every_static_script_passes_node_check():
    scripts = sorted(STATIC.rglob("*.js"))
    assert {p.name for p in scripts} >= {"inboxflow.js", "shop.js"}
    for path in [*scripts, DRIVER]:
        proc = subprocess.run(
            [node(), "--check", str(path)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"{path}:\n{proc.stderr}"


def test_the_shops_products_are_the_first_four_catalog_lines():
    text = (SHOP / "shop.js").read_text(encoding="utf-8")
    match = re.search(r"const PRODUCTS = (\[.*?\n  \]);", text, re.S)
    assert match, "shop.js: const PRODUCTS = [...] not found"
    products = json.loads(match.group(1))
    lines = CATALOG.read_text(encoding="utf-8").splitlines()[:4]
    assert products == [json.loads(line) for line in lines]


def test_the_shop_page_is_well_formed_and_loads_nothing_from_elsewhere():
    html = (SHOP / "index.html").read_text(encoding="utf-8")
    root = ET.fromstring(html.split("\n", 1)[1])  # well-formed (XHTML-compatible) markup
    by_id = {e.get("id"): e for e in root.iter() if e.get("id")}
    for element_id in ("customer-id", "email", "first-name", "locale", "log", "flush-status"):
        assert element_id in by_id, element_id
    for element_id in ("sign-in", "sign-out", "checkout", "buy"):
        assert by_id[element_id].tag == "button" and by_id[element_id].text, element_id
    labels = {e.get("for") for e in root.iter("label")}
    assert {"customer-id", "email", "first-name", "locale"} <= labels
    assert [o.get("value") for o in by_id["locale"].iter("option")] == ["en", "de"]
    assert by_id["first-name"].get("value") == "Ada"
    scripts = [e.get("src") for e in root.iter("script")]
    assert scripts == ["/snippet/inboxflow.js", "/shop/config.js", "/shop/shop.js"]
    assert all(e.text is None for e in root.iter("script")), "no inline scripts"
    for e in root.iter():
        for attr in ("src", "href"):
            value = e.get(attr)
            if value is not None:
                assert not re.match(r"(?i)(https?:)?//", value), (e.tag, value)
    css = (SHOP / "shop.css").read_text(encoding="utf-8")
    assert "url(" not in css and "@import" not in css
    # the catalog's image URLs go into events only: the page never loads them
    js = (SHOP / "shop.js").read_text(encoding="utf-8")
    assert not re.search(r"\b(fetch|XMLHttpRequest|Image)\b|'img'", js)
