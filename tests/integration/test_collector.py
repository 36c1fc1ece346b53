"""The collector against the real Tansu broker: what is answered 202 is in the topic, byte
for byte; refusals name the job's reasons; limits, auth, CORS, health and metrics."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics
from tests.collector_harness import WRITE_KEY, running_collector, settings
from tests.unit.malformed_corpus import CORPUS
from udfs.clock import wall_ms
from udfs.core.validation import EventValidator, Invalid


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def fresh(broker: TansuBroker) -> dict[str, str]:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    topics = {"events": f"{prefix}.events", "dlq": f"{prefix}.dlq"}
    create_topics(broker.bootstrap, {topics["events"]: 2, topics["dlq"]: 1})
    return topics


def event(i: int = 1, cid: str = "c-1", **props) -> dict:
    return {
        "event_id": f"e-{uuid.uuid4().hex[:8]}-{i}",
        "event_type": "cart_add",
        "customer_id": cid,
        "timestamp": wall_ms() - 1000,
        "properties": {"product_id": f"p-{i}", "price": 9.5, "currency": "EUR", **props},
    }


def read(broker: TansuBroker, topic: str, count: int | None = None, idle: float = 2.0):
    return consume(broker.bootstrap, topic, until_count=count, idle_timeout_s=idle, max_wait_s=30)


def test_one_event_is_acknowledged_and_in_the_topic_byte_for_byte(broker) -> None:
    topics = fresh(broker)
    e = event(cid="c-ann")
    body = json.dumps(e).encode()
    with running_collector(settings(broker.bootstrap, topics)) as c:
        r = c.events(body)
    assert (r.status, r.json()) == (202, {"accepted": 1})
    [got] = read(broker, topics["events"], 1)
    assert (got.key, got.value) == ("c-ann", body)


def test_a_batch_keeps_its_order_per_customer_and_is_keyed_by_customer(broker) -> None:
    topics = fresh(broker)
    batch = [event(i, cid=f"c-{i % 2}") for i in range(6)]
    nine = event(9, cid="c-9")
    with running_collector(settings(broker.bootstrap, topics)) as c:
        r = c.events({"batch": batch})
        bare = c.events([nine])  # a bare JSON array is not a batch: the job says not_object
        alone = c.events(nine)
    assert (r.status, r.json()) == (202, {"accepted": 6})
    assert (bare.status, bare.json()["errors"][0]["reason"]) == (400, "not_object")
    assert (alone.status, alone.json()) == (202, {"accepted": 1})
    got = read(broker, topics["events"], 7)
    by_customer: dict[str, list[str]] = {}
    for rec in got:
        value = json.loads(rec.value)
        assert rec.key == value["customer_id"]
        by_customer.setdefault(rec.key, []).append(value["event_id"])
    assert by_customer == {
        "c-0": [batch[i]["event_id"] for i in (0, 2, 4)],
        "c-1": [batch[i]["event_id"] for i in (1, 3, 5)],
        "c-9": [nine["event_id"]],
    }


def test_a_batch_with_one_invalid_event_is_refused_whole_with_the_jobs_reasons(broker) -> None:
    topics = fresh(broker)
    bad_currency = event(2, currency="EURO")
    no_customer = {k: v for k, v in event(3).items() if k != "customer_id"}
    batch = [event(1), bad_currency, no_customer, event(4)]
    with running_collector(settings(broker.bootstrap, topics)) as c:
        r = c.events({"batch": batch})
    assert r.status == 400
    errors = r.json()["errors"]
    assert [(e["index"], e["reason"], e["path"], e["event_id"]) for e in errors] == [
        (1, "bad_currency", "$.properties.currency", bad_currency["event_id"]),
        (2, "missing_customer_id", "$.customer_id", no_customer["event_id"]),
    ]
    assert read(broker, topics["events"], idle=1.0) == []


def test_every_malformed_record_gets_the_reason_and_path_of_the_jobs_validator(broker) -> None:
    """The job's own validator, built from the shipped config, at the same instant: the
    collector answers 400 exactly when it refuses, with its reason and JSON path; what it
    accepts is answered 202 (e.g. corpus timestamps that are no longer in the future)."""
    topics = fresh(broker)
    from job.config import load_config

    cfg = load_config(env={}, check_template_files=False)
    job_validator = EventValidator(
        cfg.schema_dir, cfg.limits.max_event_bytes, cfg.limits.max_future_ms
    )
    s = settings(broker.bootstrap, topics, ip_rate=(0, 0), key_rate=(0, 0))
    seen_reasons = set()
    with running_collector(s) as c:
        for case in CORPUS:
            raw = (
                case.raw
                if isinstance(case.raw, bytes)
                else case.raw.encode("utf-8", "surrogatepass")
            )
            if len(raw) > s.max_body_bytes:
                continue
            r = c.events(raw)
            expected = job_validator.validate(raw, wall_ms())
            if isinstance(expected, Invalid):
                assert r.status == 400, case.id
                [err] = r.json()["errors"]
                assert (err["reason"], err["path"], err["message"]) == (
                    expected.reason,
                    expected.path,
                    expected.message,
                ), case.id
                seen_reasons.add(err["reason"])
            else:
                assert r.status == 202, (case.id, r.body)
    # the corpus exercises (almost) every reason the validator has
    assert {
        "not_utf8",
        "not_json",
        "not_object",
        "oversize",
        "bad_currency",
        "schema_violation",
        "unpaired_surrogate",
        "bad_timestamp",
        "missing_event_id",
        "missing_customer_id",
        "unknown_event_type",
    } <= seen_reasons


def test_write_keys_bearer_basic_and_query_parameter(broker) -> None:
    topics = fresh(broker)
    body = json.dumps(event())
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    with running_collector(settings(broker.bootstrap, topics)) as c:
        assert c.events(body, key=None).status == 401
        assert c.events(body, key="not-the-key-0001").json()["error"] == "unauthorized"
        assert c.events(body, key=None, Authorization=f"Basic {basic}").status == 202
        r = c.request(
            "POST",
            f"/v1/events?write_key={WRITE_KEY}",
            json.dumps(event()),
            {"Content-Type": "text/plain;charset=UTF-8"},
        )
        assert r.status == 202
    assert len(read(broker, topics["events"], 2)) == 2


def test_body_size_batch_size_and_empty_batch_limits(broker) -> None:
    topics = fresh(broker)
    s = settings(broker.bootstrap, topics, max_body_bytes=4096, max_batch=3)
    with running_collector(s) as c:
        big = c.events(json.dumps({"batch": [event(i) for i in range(40)]}))
        assert (big.status, big.json()["error"]) == (413, "body_too_large")
        many = c.events({"batch": [event(i) for i in range(4)]})
        assert (many.status, many.json()["error"]) == (413, "too_many_events")
        empty = c.events({"batch": []})
        assert (empty.status, empty.json()["error"]) == (400, "empty_batch")
        not_list = c.events({"batch": {"a": 1}})
        assert (not_list.status, not_list.json()["error"]) == (400, "bad_batch")
    assert read(broker, topics["events"], idle=1.0) == []


def test_a_body_that_does_not_arrive_in_time_gets_408(broker) -> None:
    topics = fresh(broker)
    with running_collector(settings(broker.bootstrap, topics, body_timeout_s=1.0)) as c:
        with socket.create_connection((c.host, c.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + WRITE_KEY.encode()
                + b"\r\nContent-Length: 100\r\n\r\n{\"event"
            )
            started = time.monotonic()
            reply = sock.recv(4096)
            waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert 0.8 < waited < 5


def test_rate_limits_per_write_key_and_per_address_answer_429_with_retry_after(broker) -> None:
    topics = fresh(broker)
    # one token per 20 s: no refill can happen during the test, however slow the machine
    s = settings(broker.bootstrap, topics, key_rate=(0.05, 3), ip_rate=(0, 0))
    with running_collector(s) as c:
        statuses = [c.events(json.dumps(event(i))) for i in range(4)]
        assert [r.status for r in statuses] == [202, 202, 202, 429]
        assert 1 <= int(statuses[3].headers["retry-after"]) <= 20
        assert statuses[3].json()["error"] == "rate_limited"
        # another source has a bucket of its own (webhooks count per provider)
        assert c.request("POST", "/v1/webhooks/stripe", b"{}").status == 404
    s = settings(broker.bootstrap, topics, key_rate=(0, 0), ip_rate=(0.05, 2))
    with running_collector(s) as c:
        codes = [c.events(json.dumps(event(i))).status for i in range(3)]
        assert codes == [202, 202, 429]
    with running_collector(s) as c:
        # the address is limited before the key is checked: unknown keys count too
        codes = [c.events(json.dumps(event(i)), key="guess-0000000").status for i in range(2)]
        assert codes == [401, 401]
        assert c.events(json.dumps(event(3))).status == 429
    # the refused requests produced nothing: 3 + 2 accepted
    assert len(read(broker, topics["events"], idle=1.5)) == 5


def test_cors_preflight_allows_the_configured_origin_only(broker) -> None:
    topics = fresh(broker)
    s = settings(broker.bootstrap, topics, cors_origins=("https://shop.example.com",))
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    with running_collector(s) as c:
        ok = c.request(
            "OPTIONS", "/v1/events", None, {"Origin": "https://shop.example.com", **preflight}
        )
        other = c.request(
            "OPTIONS", "/v1/events", None, {"Origin": "https://evil.example.net", **preflight}
        )
        post = c.events(json.dumps(event()), Origin="https://shop.example.com")
    assert ok.status == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert other.status == 400 and "access-control-allow-origin" not in other.headers
    assert post.headers["access-control-allow-origin"] == "https://shop.example.com"


def test_health_metrics_and_the_snippet(broker) -> None:
    topics = fresh(broker)
    with running_collector(settings(broker.bootstrap, topics)) as c:
        assert c.request("GET", "/healthz").json() == {"status": "ok", "broker": "reachable"}
        c.events(json.dumps(event()))
        c.events(json.dumps(event(currency="??")))
        c.events(json.dumps(event()), key=None)
        metrics = c.request("GET", "/metrics").body.decode()
        snippet = c.request("GET", "/snippet/inboxflow.js")
        shop = c.request("GET", "/shop/")

    def sample(line: str) -> float:
        [value] = [x.split()[-1] for x in metrics.splitlines() if x.startswith(line + " ")]
        return float(value)

    assert sample('inboxflow_collector_requests_total{route="/v1/events",status="202"}') == 1
    assert sample('inboxflow_collector_requests_total{route="/v1/events",status="400"}') == 1
    assert sample('inboxflow_collector_requests_total{route="/v1/events",status="401"}') == 1
    assert sample(f'inboxflow_collector_records_produced_total{{topic="{topics["events"]}"}}') == 1
    assert (
        sample('inboxflow_collector_rejections_total{reason="bad_currency",route="/v1/events"}')
        == 1
    )
    assert (
        sample('inboxflow_collector_rejections_total{reason="unauthorized",route="/v1/events"}')
        == 1
    )
    assert sample('inboxflow_collector_request_duration_seconds_count{route="/v1/events"}') == 3
    assert snippet.status == 200 and b"inboxflow" in snippet.body
    assert snippet.headers["content-type"].startswith("text/javascript")
    assert shop.status == 404  # the demo shop only in demo mode


def test_refusals_are_logged_with_ids_and_reason_never_the_payload(broker, caplog) -> None:
    topics = fresh(broker)
    e = {
        "event_id": "e-log-1",
        "event_type": "identify",
        "customer_id": "c-log",
        "timestamp": wall_ms(),
        "traits": {"email": "not-an-address ann.secret@example.com", "first_name": "Annabel"},
    }
    with caplog.at_level("INFO", logger="inboxflow.collector"):
        with running_collector(settings(broker.bootstrap, topics)) as c:
            assert c.events(json.dumps(e)).status == 400
    [record] = [r for r in caplog.records if r.getMessage() == "event refused"]
    from udfs.logs import record_fields

    assert record_fields(record) == {
        "route": "/v1/events",
        "customer_id": "c-log",
        "event_id": "e-log-1",
        "reason": "schema_violation",
        "path": "$.traits.email",
    }
    text = caplog.text
    assert "ann.secret" not in text and "Annabel" not in text
