"""A marketing step deferred by quiet hours, end to end: the real job (unbounded Kafka source
and sinks, a real Tansu broker) with the SHIPPED campaigns and guards, where every Kafka
record time is far from the event's own ``timestamp``.

The story (UTC; customer N has no ``timezone`` trait, so quiet hours 21:00-08:00 are read in
the default zone, UTC):

* J5 21:00 N signs up: welcome 1 is transactional and goes out at once, quiet hours or not;
* J5 21:30 N views a night lamp: browse_abandonment is entered, its step (marketing) due
  two hours later at 23:30, inside the quiet hours: deferred to J6 08:00 (8 h 30 min, within
  its stale_after of 12 h), then sent at 08:00 with the lamp.
* Two "clock" events of another customer move the watermark: to J6 06:00 (the deferral is
  decided, nothing is sent yet), then past J6 08:00 (the step goes out, due at 08:00).

The Kafka record times run backwards, at midday (not quiet) in March: had the job read
Kafka time as event time, the step would have been due at a midday hour and sent at once,
and the clock events (stamped earlier than N's) would never have moved the watermark past
it. Welcome 2 (J8 21:00) is never due: the source is unbounded, so nothing fires early
(docs/DESIGN.md#end-of-input). Expected values are written by hand from the rules.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, produce
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from udfs.clock import wall_ms

ROOT = Path(__file__).resolve().parents[2]
EMAIL_REQUEST_SCHEMA = ROOT / "conf" / "schemas" / "email_request.json"

WAIT_FOR_JOB_S = 120  # job start-up included; a loaded machine is slow
QUIET_S = 5  # nothing new for this long = the outputs have settled


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def rid(campaign: str, customer: str, key: str | None, anchor: str, step: int) -> str:
    """The documented request id: sha256 of campaign, customer, key, entry, step."""
    raw = f"{campaign}\x1f{customer}\x1f{key or ''}\x1f{utc(anchor)}\x1f{step}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


N, CLOCK = "night-owl", "clock"
# Kafka record times: midday in March, one hour earlier for every record produced
KAFKA_T0 = utc("2026-03-10T12:00")


def record(n: int, kind: str, customer: str, at: str, **sections: dict) -> tuple:
    event = {
        "event_id": f"deferred-{n}",
        "event_type": kind,
        "customer_id": customer,
        "timestamp": utc(at),
        "context": {},
        "properties": sections.get("properties", {}),
        "traits": sections.get("traits", {}),
    }
    return customer, json.dumps(event).encode(), KAFKA_T0 - n * 3_600_000


LAMP = {
    "product_id": "lamp",
    "name": "Night Lamp",
    "category": "home",
    "price": 24.5,
    "currency": "EUR",
}
NIA = {"email": "nia@example.com", "first_name": "Nia"}
PHASE_1 = [
    record(0, "identify", N, "2026-01-05T21:00", traits=NIA),
    record(1, "product_view", N, "2026-01-05T21:30", properties=LAMP),
]
PAGE = {"url": "https://shop.example.com/"}
PHASE_2 = [record(2, "page_view", CLOCK, "2026-01-06T06:00", properties=PAGE)]
PHASE_3 = [record(3, "page_view", CLOCK, "2026-01-06T08:00:10", properties=PAGE)]

WELCOME_RID = rid("welcome", N, None, "2026-01-05T21:00", 1)
BROWSE_RID = rid("browse_abandonment", N, None, "2026-01-05T21:30", 1)
WELCOME_SENT = {
    "kind": "sent",
    "customer_id": N,
    "event_time": utc("2026-01-05T21:00"),
    "step": 1,
    "request_id": WELCOME_RID,
    "cart_id": None,
    "key": None,
    "campaign": "welcome",
}
DEFERRED = {
    "kind": "deferred",
    "customer_id": N,
    "event_time": utc("2026-01-05T23:30"),  # when the step was due
    "step": 1,
    "request_id": BROWSE_RID,
    "reason": "quiet_hours",
    "cart_id": None,
    "key": None,
    "campaign": "browse_abandonment",
    "until": utc("2026-01-06T08:00"),
}
BROWSE_SENT = {
    "kind": "sent",
    "customer_id": N,
    "event_time": utc("2026-01-06T08:00"),
    "step": 1,
    "request_id": BROWSE_RID,
    "cart_id": None,
    "key": None,
    "campaign": "browse_abandonment",
}
BROWSE_COMPLETED = {
    "kind": "completed",
    "customer_id": N,
    "event_time": utc("2026-01-06T08:00"),
    "cart_id": None,
    "key": None,
    "campaign": "browse_abandonment",
}
CART_URL = (
    "https://shop.example.com/cart?customer_id=night-owl&utm_source=inboxflow&utm_medium=email"
    "&utm_campaign={}&utm_content=step1"
)
# (request_id, campaign, step, customer, to, subject, trigger_event_time, armed_at_ms,
#  due_at_ms, cart_id, reason, template, currency, cart_value, items, cart_url)
WELCOME_REQUEST = (
    WELCOME_RID,
    "welcome",
    1,
    N,
    "nia@example.com",
    "Welcome, Nia! We're glad you're here",
    "2026-01-05T21:00:00.000Z",
    utc("2026-01-05T21:00"),
    utc("2026-01-05T21:00"),
    None,
    "welcome",
    "welcome_1",
    "USD",
    0.0,
    [],
    CART_URL.format("welcome"),
)
BROWSE_REQUEST = (
    BROWSE_RID,
    "browse_abandonment",
    1,
    N,
    "nia@example.com",
    "Nia, still thinking about these?",
    "2026-01-06T08:00:00.000Z",  # the end of the quiet hours, in event time
    utc("2026-01-05T21:30"),
    utc("2026-01-06T08:00"),
    None,
    "browse_abandonment",
    "browse_abandonment_1",
    "EUR",
    24.5,
    [("lamp", "Night Lamp", 24.5, 1, "home")],
    CART_URL.format("browse_abandonment"),
)


def projection(value: dict) -> tuple:
    meta = value["metadata"]
    return (
        value["request_id"],
        value["campaign"],
        value["step"],
        value["customer_id"],
        value["to"],
        value["subject"],
        value["trigger_event_time"],
        meta["armed_at_ms"],
        meta["due_at_ms"],
        meta["cart_id"],
        meta["reason"],
        meta["template"],
        meta["currency"],
        meta["cart_value"],
        [
            (i["product_id"], i["name"], i["price"], i["quantity"], i["category"])
            for i in meta["items"]
        ],
        meta["cart_url"],
    )


@pytest.mark.slow
def test_quiet_hours_defer_a_step_in_event_time_not_kafka_time(
    broker: TansuBroker, tmp_path: Path
) -> None:
    # the shipped conf/job.yaml (guards included) and conf/campaigns.yaml, on fresh topics
    cfg, topics = job_on_fresh_topics(broker, f"deferred-{uuid.uuid4().hex[:8]}", 1, {})
    assert cfg.guards.quiet_hours.start == "21:00" and cfg.guards.quiet_hours.end == "08:00"
    events, dlq, requests, outcomes = (topics[t] for t in ("events", "dlq", "requests", "outcomes"))
    reader = OutputReader(broker.bootstrap, [requests, dlq, outcomes])

    def values(topic: str) -> list[dict]:
        return [r.value for r in reader.of(topic)]

    started_ms = wall_ms()
    try:
        with running_job(cfg, tmp_path / "checkpoints", parallelism=1) as job:
            # phase 1: the watermark reaches J5 21:29:55; welcome 1 goes out (the view at
            # 21:30 fires it), the browse step (due 23:30) is not decided yet
            produce(broker.bootstrap, events, PHASE_1)
            reader.wait_for(lambda r: r.of(requests), "welcome 1", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)
            assert [r.value["campaign"] for r in reader.of(requests)] == ["welcome"]
            assert values(outcomes) == [WELCOME_SENT]

            # phase 2: the watermark reaches J6 05:59:55: the step due at 23:30 falls in the
            # quiet hours and waits for 08:00; nothing more is sent
            produce(broker.bootstrap, events, PHASE_2)
            reader.wait_for(lambda r: len(r.of(outcomes)) >= 2, "the deferral", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)
            assert values(outcomes) == [WELCOME_SENT, DEFERRED]
            assert len(reader.of(requests)) == 1

            # phase 3: the watermark passes J6 08:00: the step goes out, due at 08:00
            produce(broker.bootstrap, events, PHASE_3)
            reader.wait_for(lambda r: len(r.of(requests)) >= 2, "the step", WAIT_FOR_JOB_S, job)
            reader.drain(QUIET_S, job)  # welcome 2 (J8 21:00) or a second copy would show
            assert job.restarts() == 0
    finally:
        reader.close()
    finished_ms = wall_ms()

    assert [projection(r.value) for r in reader.of(requests)] == [WELCOME_REQUEST, BROWSE_REQUEST]
    assert all(r.key == N for r in reader.of(requests) + reader.of(outcomes))
    assert values(outcomes) == [WELCOME_SENT, DEFERRED, BROWSE_SENT, BROWSE_COMPLETED]
    assert reader.of(dlq) == []
    browse = reader.of(requests)[1].value
    assert "- Night Lamp\n  €24.50\n" in browse["text"] and "Night Lamp" in browse["html"]
    jsonschema.Draft202012Validator(json.loads(EMAIL_REQUEST_SCHEMA.read_text())).validate(browse)
    # output records carry the time they were produced, not event time nor input Kafka time
    for r in reader.records:
        assert started_ms <= r.timestamp_ms <= finished_ms, r.topic

    # the premise: every input record kept its Kafka time, hours to months off its event time
    sent = PHASE_1 + PHASE_2 + PHASE_3
    stored = consume(broker.bootstrap, events, until_count=len(sent), max_wait_s=30)
    assert [(r.value, r.timestamp_ms) for r in stored] == [(v, ts) for _, v, ts in sent]
    for r in stored:
        assert abs(r.timestamp_ms - json.loads(r.value)["timestamp"]) > 60 * 86_400_000
