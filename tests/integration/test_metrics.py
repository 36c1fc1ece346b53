"""The job's metrics through Flink's Prometheus reporter, scraped over HTTP while the real
Kafka job runs on the local mini-cluster (shipped flink-conf.yaml: the reporter is loaded
by ``job.main.create_env``), and its JSON logs. Exact counts for a known input."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import produce
from job.ops import free_port
from job.prometheus import by_label, scrape, total
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.factories import (
    HOUR,
    MINUTE,
    T0,
    cart_add,
    cart_only,
    identify,
    page_view,
    purchase,
    raw,
    teleport,
)
from udfs.clock import wall_ms

WAIT_S = 120  # job start-up included; a loaded 2-core machine is slow


@pytest.fixture(scope="module")
def broker():
    with TansuBroker() as b:
        yield b


def story(tag: str) -> tuple[list, list, list, dict]:
    """(phase 1, phase 2, phase 3 records, ids): every record stamped with the wall clock in
    Kafka (the start of the end-to-end latency), event times months before."""
    a, b, c, clock, late = (f"{tag}-{n}" for n in ("A", "B", "C", "clock", "late"))

    def rec(key, text):
        return key, text.encode(), wall_ms()

    phase1 = [
        rec(a, raw(identify(a, T0, email="ann@example.com", first_name="Ann"))),
        rec(a, raw(cart_add(a, T0, cart_id="cart-a"))),
        rec(b, raw(cart_add(b, T0, cart_id="cart-b"))),  # never identified: no e-mail
        rec(c, raw(identify(c, T0, email="cy@example.com", first_name="Cy"))),
        rec(c, raw(cart_add(c, T0, cart_id="cart-c"))),
        rec(c, raw(purchase(c, T0 + 10 * MINUTE, cart_id="cart-c"))),  # cancels C's journey
        rec(a, raw(cart_add(a, T0 + MINUTE, cart_id="cart-a", event_id=f"{tag}-dup"))),
        rec(a, raw(cart_add(a, T0 + MINUTE, cart_id="cart-a", event_id=f"{tag}-dup"))),
        rec(None, "not json at all"),
        rec(a, teleport(a, f"{tag}-x1")),
        rec(
            None, json.dumps({"event_id": f"{tag}-x3", "event_type": "page_view", "timestamp": T0})
        ),
    ]
    # the watermark passes T0 + 1h: A's step 1 is sent, B's skipped (no e-mail)
    phase2 = [rec(clock, raw(page_view(clock, T0 + 2 * HOUR)))]
    # behind the watermark: late
    phase3 = [rec(late, raw(page_view(late, T0)))]
    return phase1, phase2, phase3, {"A": a, "B": b, "C": c}


# The job's own metrics for the story, summed over subtasks (and TaskManagers)
EXPECTED = {
    "events": {"identify": 2, "cart_add": 5, "purchase": 1, "page_view": 2},
    "invalid": {"not_json": 1, "unknown_event_type": 1, "missing_customer_id": 1},
    "requests": {("abandoned_cart", "1"): 1},
    "skipped": {"no_email": 1},
    "cancelled": {"purchased": 1},
    "late": 1,
    "duplicates": 1,
    "reminder_lateness_count": 1,
}
EVENTS = 13


def play(broker: TansuBroker, topics: dict, tag: str, alive) -> dict:
    """Produces the story phase by phase, each once the job has acted on the one before;
    returns the customer ids."""
    phase1, phase2, phase3, ids = story(tag)
    reader = OutputReader(broker.bootstrap, [topics["requests"], topics["outcomes"]])
    try:
        produce(broker.bootstrap, topics["events"], phase1)
        reader.wait_for(
            lambda r: any(o.value["kind"] == "cancelled" for o in r.of(topics["outcomes"])),
            "C's cancellation",
            WAIT_S,
            alive,
        )
        produce(broker.bootstrap, topics["events"], phase2)
        reader.wait_for(lambda r: len(r.of(topics["requests"])) == 1, "A's reminder", WAIT_S, alive)
        produce(broker.bootstrap, topics["events"], phase3)
        reader.wait_for(
            lambda r: any(o.value["kind"] == "late" for o in r.of(topics["outcomes"])),
            "the late outcome",
            WAIT_S,
            alive,
        )
    finally:
        reader.close()
    return ids


def wait_for_metrics(urls, job_id: str, expected: dict, timeout_s: float) -> tuple:
    """Scrape (``urls()``: the endpoints to read, all summed) until the labelled counters
    equal ``expected`` (they are pushed from the task thread every 50 ms, the latency gauges
    every second); returns (samples, got)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = [
            s for url in urls() for s in scrape(url) if s.labels.get("job_id") in (None, job_id)
        ]
        got = {
            "events": by_label(samples, "inboxflow_event_type_events", "event_type"),
            "invalid": by_label(samples, "inboxflow_reason_invalid", "reason"),
            "requests": by_label(samples, "inboxflow_campaign_step_requests", "campaign", "step"),
            "skipped": by_label(samples, "inboxflow_reason_skipped", "reason"),
            "cancelled": by_label(samples, "inboxflow_reason_cancelled", "reason"),
            "late": total(samples, "inboxflow_late"),
            "duplicates": total(samples, "inboxflow_duplicates"),
            "reminder_lateness_count": total(samples, "inboxflow_reminder_lateness_count"),
        }
        if got == expected or time.monotonic() > deadline:
            return samples, got
        time.sleep(0.5)


def check_latency(samples: list) -> None:
    """Both subtasks of the customer function export the latency gauges; the busiest one's
    percentiles are ordered; the reminder's lateness is its age since its due time."""
    counts = {
        s.labels["subtask_index"]: s.value
        for s in samples
        if s.name.endswith("inboxflow_event_latency_count")
    }
    assert set(counts) == {"0", "1"}
    assert 1 <= sum(counts.values()) <= EVENTS  # the events within the 60 s window
    busiest = max(counts, key=counts.get)

    def stat(name: str) -> float:
        (value,) = [
            s.value
            for s in samples
            if s.name.endswith(f"inboxflow_{name}") and s.labels.get("subtask_index") == busiest
        ]
        return value

    p50, p95, p99, top = (stat(f"event_latency_{q}_ms") for q in ("p50", "p95", "p99", "max"))
    assert 0 <= p50 <= p95 <= p99 <= top < WAIT_S * 3 * 1000
    # the reminder went out months after its due time (event time T0 + 1h01m)
    (late_ms,) = [
        s.value
        for s in samples
        if s.name.endswith("inboxflow_reminder_lateness_max_ms") and s.value > 0
    ]
    assert abs(late_ms - (wall_ms() - (T0 + MINUTE + HOUR))) < 10 * 60 * 1000


def check_json_logs(paths: list[Path], tag: str, ids: dict) -> None:
    """The invalid events of the story in the JSON log files, with ids and reason only."""
    text = "".join(path.read_text() for path in paths if path.is_file())
    lines = [json.loads(line) for line in text.splitlines() if tag in line]
    invalid = sorted(
        (r["reason"], r.get("customer_id"), r.get("event_id"))
        for r in lines
        if r["message"] == "invalid event"
    )
    assert invalid == [
        ("missing_customer_id", None, f"{tag}-x3"),
        ("unknown_event_type", ids["A"], f"{tag}-x1"),
    ]
    assert all(r["logger"] == "inboxflow" and r["level"] == "WARNING" for r in lines)
    assert not [line for line in text.splitlines() if tag in line and "@" in line]


@pytest.mark.slow
def test_prometheus_endpoint_reports_exact_job_metrics(broker: TansuBroker, tmp_path: Path) -> None:
    tag = f"m{uuid.uuid4().hex[:8]}"
    cfg, topics = job_on_fresh_topics(
        broker, tag, 2, {"watermarks": {"idleness": "1s"}, **cart_only()}
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with running_job(
        cfg, tmp_path / "checkpoints", flink_overrides={"metrics.reporter.prom.port": str(port)}
    ) as job:
        job_id = str(job.client.get_job_id())
        ids = play(broker, topics, tag, job)
        samples, got = wait_for_metrics(lambda: [url], job_id, EXPECTED, 30)
        assert got == EXPECTED
        job()

    # the customer function's flat counters and Flink's own restart count, same endpoint
    assert total(samples, "events_valid") == 10
    assert total(samples, "events_invalid") == 3
    assert total(samples, "flink_jobmanager_job_numRestarts", job_id=job_id) == 0
    check_latency(samples)

    # JSON logs of the Python functions, next to the mini-cluster's log file
    from pyflink.java_gateway import get_gateway

    from udfs.logs import log_path

    check_json_logs([log_path(get_gateway().jvm.System.getProperty("log.file"), "json")], tag, ids)
