"""The collector's promise with the broker gone: no 202 for a record the topic does not hold.

Clients post events without pause while the (persistent, S3-backed) Tansu broker is killed
and started again on the same port. Every event answered 202 must be in the topic after the
restart; while the broker is down the collector answers 503 with Retry-After and /healthz
says unavailable; after the restart it accepts again.

The broker is killed (SIGKILL), not stopped: Tansu 0.6 with S3 storage, stopped with SIGTERM
while produce requests keep arriving, lost records it had acknowledged before the stop
(measured: 1,158 acknowledged, 0 readable after the restart; docs/DESIGN.md#collector).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics
from tests.collector_harness import running_collector, settings
from udfs.clock import wall_ms

pytestmark = pytest.mark.slow

CLIENTS = 3


@pytest.fixture(scope="module")
def s3_broker() -> Iterator[TansuBroker]:
    with TansuBroker(storage="s3") as b:
        yield b


def test_nothing_is_acknowledged_that_the_broker_did_not_store(s3_broker) -> None:
    b = s3_broker
    run = uuid.uuid4().hex[:8]
    topics = {"events": f"down-{run}.events", "dlq": f"down-{run}.dlq"}
    create_topics(b.bootstrap, {topics["events"]: 2, topics["dlq"]: 1})
    answers: dict[str, tuple[int, str | None]] = {}  # event id -> (status, Retry-After)
    phase = {"name": "up"}
    statuses_by_phase: dict[str, list[int]] = {"up": [], "down": [], "again": []}
    stop = threading.Event()
    lock = threading.Lock()

    s = settings(b.bootstrap, topics, produce_timeout_s=2.0, key_rate=(0, 0), ip_rate=(0, 0))
    with running_collector(s) as c:

        def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                eid = f"e-{n}-{i}"
                body = json.dumps(
                    {
                        "event_id": eid,
                        "event_type": "page_view",
                        "customer_id": f"c-{n}",
                        "timestamp": wall_ms(),
                        "properties": {"url": "https://shop.example.com/"},
                    }
                )
                at = phase["name"]
                try:
                    r = c.events(body)
                    status, retry = r.status, r.headers.get("retry-after")
                except OSError:
                    status, retry = 0, None
                with lock:
                    answers[eid] = (status, retry)
                    statuses_by_phase[at].append(status)
                if status != 202:
                    time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            time.sleep(2)
            phase["name"] = "down"
            b.halt(kill=True)
            time.sleep(1.0)
            health_down = c.request("GET", "/healthz")
            time.sleep(5)
            phase["name"] = "again"
            b.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    recovered = statuses_by_phase["again"][-5:]
                if len(recovered) == 5 and all(x == 202 for x in recovered):
                    break
                time.sleep(0.2)
            health_up = c.request("GET", "/healthz")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)

    accepted = {eid for eid, (status, _) in answers.items() if status == 202}
    refused = {eid: retry for eid, (status, retry) in answers.items() if status == 503}
    stored = consume(b.bootstrap, topics["events"], idle_timeout_s=10, max_wait_s=90)
    stored_ids = {json.loads(r.value)["event_id"] for r in stored}

    # (a request of the up phase may still be waiting when the broker dies)
    assert set(statuses_by_phase["up"][:-CLIENTS]) == {202}
    assert 503 in statuses_by_phase["down"], statuses_by_phase["down"]
    assert set(statuses_by_phase["down"]) <= {202, 503}  # 202: acknowledged just before
    assert all(retry is not None and int(retry) >= 1 for retry in refused.values())
    assert health_down.status == 503 and health_up.status == 200
    assert statuses_by_phase["again"][-5:] == [202] * 5
    missing = accepted - stored_ids
    assert not missing, f"{len(missing)} events answered 202 are not in the topic"
    assert len(accepted) > 20
    # a 503'd event may or may not be in the topic (acknowledged after the answer): the
    # client retries with the same event id and the job drops the copy
