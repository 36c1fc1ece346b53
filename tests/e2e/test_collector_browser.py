"""The demo shop (``inboxflow collect --demo``) driven in headless Chromium, end to end on the
real broker: the page's snippet sends the events through the real collector, the real job
(unbounded, in a mini-cluster) turns the abandoned cart into a reminder.

The job runs the shipped config and campaigns with abandoned_cart step 1 due
:data:`ABANDON_AFTER_S` after the cart's last activity, quiet hours off and watermarks short
(out-of-orderness 1 s, idleness 1 s, the lull rule on: in the silence after the click the
watermark follows the wall clock, so the reminder goes out about out-of-orderness + idleness
after it is due). The job is started first and is known to be up once a warm-up identify,
posted to the collector, has come out as its welcome email.

Then the browser (Debian's chromium through Playwright, as in test_preview_browser.py) opens
``/shop/``, signs in with the prefilled customer id and email, clicks "Add to cart" and
waits for the page to show the flush accepted. Asserted, all read from the broker:

* the identify and the cart_add are on the events topic with the page's customer id, the
  product, and the browser's timestamp within seconds of the click;
* the reminder for that customer is on the requests topic, to the address typed in, with the
  product's name, and the click-to-request latency (click to the record read back) is below
  the step's ``after`` + :data:`SLACK_S`: not a tight timing assertion, the figure is printed
  and attached to the report (``record_property``);
* the page raised no error and logged no console error, and the snippet refused nothing.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from tests.collector_harness import WRITE_KEY, running_collector, settings
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.e2e.test_preview_browser import CHROMIUM, CHROMIUM_ARGS
from udfs.clock import wall_ms

pytestmark = pytest.mark.slow

ABANDON_AFTER_S = 4
# the reminder may come this long after it is due (watermark 1 s + 1 s, flushes, polls, a
# busy 2-core machine) before the test calls it late
SLACK_S = 30
JOB_START_S = 90  # the mini-cluster's start and the first event through it
# One source subtask reading both partitions. At parallelism 2, a subtask whose partition
# has never held a record keeps the customer operator's input watermark at Long.MIN_VALUE, so
# a single customer, as here, gets nothing until some event lands on the other partition
# (README "Known problems").
PARALLELISM = 1
PRODUCT = "p-0002"  # the page's second card: Collected Cookbook
PRODUCT_NAME = "Collected Cookbook"
FIRST_NAME = "Grace"


def job_overrides() -> dict:
    return {
        "watermarks": {"out_of_orderness": "1s", "idleness": "1s", "idle_advance": "2m"},
        "guards": {"quiet_hours": {"start": "", "end": ""}},
        "campaigns": {
            "abandoned_cart": {
                "steps": [
                    {
                        "after": f"{ABANDON_AFTER_S}s",
                        "template": "abandoned_cart_1",
                        "show": "cart",
                    },
                    {
                        "after": "24h",
                        "template": "abandoned_cart_2",
                        "show": "cart",
                        "recommend": 3,
                    },
                ]
            }
        },
    }


def of_customer(reader: OutputReader, topic: str, customer: str) -> list[dict]:
    return [r.value for r in reader.of(topic) if r.key == customer]


def test_add_to_cart_in_the_demo_shop_becomes_a_reminder_email(
    broker: TansuBroker, tmp_path: Path, record_property
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's chromium is missing ({CHROMIUM}): `make test` installs it "
            "(apt-get install -y chromium, as root); this test does not run without it"
        )
    from playwright.sync_api import sync_playwright

    run = uuid.uuid4().hex[:8]
    cfg, topics = job_on_fresh_topics(broker, f"shop-{run}", 2, job_overrides())
    assert cfg.watermarks.idle_advance_ms > 0 and cfg.guard_settings.quiet_hours is None
    (cart,) = [c for c in cfg.campaigns if c.name == "abandoned_cart"]
    assert cart.steps[0].after_ms == ABANDON_AFTER_S * 1000
    events, requests = topics["events"], topics["requests"]
    reader = OutputReader(broker.bootstrap, [events, requests, topics["dlq"], topics["outcomes"]])
    collector = settings(broker.bootstrap, topics, demo=True)
    try:
        with (
            running_job(cfg, tmp_path / "checkpoints", parallelism=PARALLELISM) as job,
            running_collector(collector) as client,
        ):
            # the job is up once a first live event has come out of it: a warm-up identify
            # through the collector, whose welcome email (step 1 at once) is then on the topic
            warm = f"warm-{run}"
            reply = client.events(
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "identify",
                    "customer_id": warm,
                    "timestamp": wall_ms(),
                    "traits": {"email": f"{warm}@example.com"},
                },
                key=WRITE_KEY,
            )
            assert reply.status == 202, reply.body
            started = reader.wait_for(
                lambda r: bool(of_customer(r, requests, warm)),
                "the warm-up's email",
                JOB_START_S,
                job,
            )
            print(f"\njob up: the warm-up's welcome email after {started:.1f} s")

            page_errors: list[str] = []
            console: list[tuple[str, str]] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    page = browser.new_context().new_page()
                    page.on("pageerror", lambda error: page_errors.append(str(error)))
                    page.on("console", lambda m: console.append((m.type, m.text)))
                    page.goto(f"{client.url}/shop/", wait_until="load")
                    page.wait_for_selector("#grid button[data-add]")
                    assert page.inner_text("#who").startswith("Anonymous (anon-")
                    customer = page.input_value("#customer-id")
                    email = page.input_value("#email")
                    assert customer.startswith("demo-") and email == f"{customer}@example.com"
                    page.fill("#first-name", FIRST_NAME)
                    page.click("#sign-in")
                    assert page.inner_text("#who") == f"Signed in as {customer}"
                    before = wall_ms()
                    page.click(f'button[data-add="{PRODUCT}"]')
                    clicked = wall_ms()
                    clicked_mono = time.monotonic()
                    page.wait_for_function(
                        "() => { const l = [...document.querySelectorAll('#log li')]; return"
                        " l.length >= 3 && l.every(li => li.dataset.status === 'accepted'); }",
                        timeout=20_000,
                    )
                    status = page.inner_text("#flush-status")
                    assert page.get_attribute("#flush-status", "data-status") == "202"
                    assert status.startswith("202 accepted"), status
                    logged = page.eval_on_selector_all(
                        "#log li", "l => l.map(li => [li.dataset.eventType, li.dataset.status])"
                    )
                    assert logged == [
                        ["page_view", "accepted"],
                        ["identify", "accepted"],
                        ["cart_add", "accepted"],
                    ]
                    assert page.inner_text("#cart-items").startswith(f"1 × {PRODUCT_NAME}")
                    stats = page.evaluate("() => window.inboxflow.stats()")
                    assert stats["queued"] == 0 and stats["sent"] == 3, stats
                    assert stats["dropped"] == 0 and stats["retries"] == 0, stats
                finally:
                    browser.close()

            # (a) the page's events on the broker, as the browser stamped them
            reader.wait_for(
                lambda r: (
                    {"identify", "cart_add"}
                    <= {e["event_type"] for e in of_customer(r, events, customer)}
                ),
                "the page's identify and cart_add on the events topic",
                30,
                job,
            )
            mine = {e["event_type"]: e for e in of_customer(reader, events, customer)}
            identify, add = mine["identify"], mine["cart_add"]
            assert identify["traits"]["email"] == email
            assert identify["traits"]["first_name"] == FIRST_NAME
            assert add["properties"]["product_id"] == PRODUCT
            assert add["properties"]["name"] == PRODUCT_NAME
            assert add["properties"]["quantity"] == 1
            assert add["properties"]["cart_id"].startswith("cart-")
            assert add["context"]["page"]["path"] == "/shop/"
            event_ms = int(datetime.fromisoformat(add["timestamp"]).timestamp() * 1000)
            # the browser's clock is this machine's: the stamp lies between the two readings
            assert before - 1000 <= event_ms <= clicked + 1000, (before, event_ms, clicked)
            # the anonymous page view stays with the anonymous id (no merge yet)
            assert "page_view" not in mine

            # (b) the reminder
            reader.wait_for(
                lambda r: any(
                    q["campaign"] == "abandoned_cart" for q in of_customer(r, requests, customer)
                ),
                "the abandoned-cart reminder on the requests topic",
                ABANDON_AFTER_S + SLACK_S + 30,
                job,
            )
            latency_s = time.monotonic() - clicked_mono
            reader.drain(2, job)
    finally:
        reader.close()

    sent = of_customer(reader, requests, customer)
    (record,) = [
        r
        for r in reader.of(requests)
        if r.key == customer and r.value["campaign"] == "abandoned_cart"
    ]
    reminder = record.value
    assert reminder["step"] == 1 and reminder["customer_id"] == customer
    assert reminder["to"] == email
    assert reminder["subject"] == f"{FIRST_NAME}, you left something in your cart"
    assert PRODUCT_NAME in reminder["text"] and PRODUCT_NAME in reminder["html"]
    assert [i["product_id"] for i in reminder["metadata"]["items"]] == [PRODUCT]
    # the welcome email of the sign-in (step 1 at once, transactional) went out too
    assert sorted(q["campaign"] for q in sent) == ["abandoned_cart", "welcome"]
    due_ms = event_ms + ABANDON_AFTER_S * 1000
    record_property("click_to_request_s", round(latency_s, 2))
    record_property("job_start_s", round(started, 2))
    print(
        f"click -> reminder read from {requests}: {latency_s:.2f} s "
        f"(due {ABANDON_AFTER_S} s after the click; produced "
        f"{(record.timestamp_ms - due_ms) / 1000:.2f} s after due)"
    )
    assert latency_s < ABANDON_AFTER_S + SLACK_S, latency_s
    assert reader.of(topics["dlq"]) == []

    # (c) a clean page
    assert page_errors == []
    errors = [text for kind, text in console if kind == "error"]
    assert errors == [], errors
    assert [text for _, text in console if text.startswith("inboxflow:")] == []
