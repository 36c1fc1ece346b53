"""The pure parts of the job's metrics and logs: the latency window and its gauges, labelled
counters (what Prometheus gets as labels), the customer function's labelled counts for a
known story, the Prometheus text parser, and JSON log records (no personal data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from job.config import ConfigError, load_config
from job.prometheus import by_label, parse, port_range, reporter_jars, total
from tests import factories as f
from tests.harness import FakeGroup
from udfs import logs
from udfs.core.batch import EVENT, TIMER, Batch, Result
from udfs.core.contract import Kind
from udfs.core.customer import LABELED, CustomerCore
from udfs.core.journey import decode_state
from udfs.flink.metrics import LabeledCounters, LatencyGauges, LatencyWindow, percentile

# --- latency window -----------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert [percentile(ordered, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert [percentile([7], q) for q in (50, 99)] == [7, 7]
    assert [percentile([1, 2, 3], q) for q in (50, 95)] == [2, 3]


def test_window_summary_over_batches_in_any_order() -> None:
    window = LatencyWindow(span_ms=60_000, max_samples=1000)
    assert window.summary(0) == {"p50": 0, "p95": 0, "p99": 0, "max": 0, "count": 0}
    window.add(1000, list(range(100, 0, -1)))  # 100..1, unsorted
    window.add(2000, [1000])
    assert window.summary(2000) == {"p50": 51, "p95": 96, "p99": 100, "max": 1000, "count": 101}
    assert window.total == 101


def test_window_slides_with_the_wall_clock() -> None:
    window = LatencyWindow(span_ms=10_000, max_samples=1000)
    window.add(0, [500, 600])
    window.add(5_000, [5])
    assert window.summary(9_999)["count"] == 3
    # a batch leaves once it is span_ms old
    assert window.summary(10_000) == {"p50": 5, "p95": 5, "p99": 5, "max": 5, "count": 1}
    assert window.summary(15_000)["count"] == 0
    assert window.total == 3


def test_window_keeps_the_newest_samples_when_full() -> None:
    window = LatencyWindow(span_ms=60_000, max_samples=5)
    window.add(0, [100, 101, 102])
    window.add(1, [1, 2, 3, 4])  # 7 samples: the two oldest go
    assert window.summary(1) == {"p50": 3, "p95": 102, "p99": 102, "max": 102, "count": 5}
    window.add(2, [9, 9, 9, 9, 9, 9])  # more than the cap in one batch
    assert window.summary(2) == {"p50": 9, "p95": 9, "p99": 9, "max": 9, "count": 5}


def test_latency_gauges_are_recomputed_at_most_every_interval_unless_forced() -> None:
    group = FakeGroup()
    gauges = LatencyGauges(group, "event_latency", LatencyWindow(span_ms=60_000), every_ms=1000)
    names = sorted("/".join(k) for k in group.registry)
    assert names == [
        "event_latency_count",
        "event_latency_max_ms",
        "event_latency_p50_ms",
        "event_latency_p95_ms",
        "event_latency_p99_ms",
    ]
    gauges.publish(0, [10, 20, 30])
    assert group.value("event_latency_count") == 3
    assert group.value("event_latency_p50_ms") == 20
    gauges.publish(500, [40])  # within the interval: gathered, not yet published
    assert group.value("event_latency_count") == 3
    gauges.publish(600, [], force=True)
    assert (group.value("event_latency_count"), group.value("event_latency_max_ms")) == (4, 40)
    gauges.publish(61_000, [])  # the window emptied: published as zeros once
    assert (group.value("event_latency_count"), group.value("event_latency_p99_ms")) == (0, 0)


# --- labelled counters ----------------------------------------------------------------------


def test_labeled_counters_become_key_value_groups_and_push_only_deltas() -> None:
    group = FakeGroup()
    values: dict[str, dict] = {"events": {}, "requests": {}}
    counters = LabeledCounters(
        group, {"events": ("event_type",), "requests": ("campaign", "step")}, values
    )
    values["events"]["cart_add"] = 2
    values["requests"][("abandoned_cart", 1)] = 1
    counters.push()
    counters.push()  # nothing changed: no call into the JVM
    values["events"]["cart_add"] = 5
    values["events"]["purchase"] = 1
    counters.push()
    assert {k: (v.count, v.calls) for k, v in group.registry.items()} == {
        ("event_type=cart_add", "events"): (5, 2),
        ("event_type=purchase", "events"): (1, 1),
        ("campaign=abandoned_cart", "step=1", "requests"): (1, 1),
    }


# --- the customer function's counts for a known story ------------------------------------------


@pytest.fixture
def core() -> CustomerCore:
    return f.customer_core(store_shards=0)


def feed(
    core: CustomerCore,
    states: dict,
    text: str,
    key: str,
    now: int,
    watermark: int = f.MIN_WATERMARK,
) -> Result:
    """A batch of one event (udfs.core.batch), applied to ``states`` (key -> bytes)."""
    result = Batch(core).run(
        [(EVENT, key, 0, text, now - 5)], {key: states.get(key)}, watermark, now
    )
    states.update(result.states)
    return result


def test_customer_core_counts_by_label(core: CustomerCore) -> None:
    states: dict = {}
    now = f.T0 + 30 * f.HOUR
    story = [
        ("A", f.raw(f.identify("A", f.T0, email="a@example.com"))),
        ("A", f.raw(f.cart_add("A", f.T0 + f.MINUTE, cart_id="ca"))),
        ("B", f.raw(f.cart_add("B", f.T0, cart_id="cb"))),  # never identified: no e-mail
        ("C", f.raw(f.identify("C", f.T0, email="c@example.com"))),
        ("C", f.raw(f.cart_add("C", f.T0, cart_id="cc"))),
        ("C", f.raw(f.purchase("C", f.T0 + 10 * f.MINUTE, cart_id="cc"))),  # cancels C's journey
        ("A", f.raw(f.cart_add("A", f.T0 + f.MINUTE, cart_id="ca", event_id="dup"))),
        ("A", f.raw(f.cart_add("A", f.T0 + f.MINUTE, cart_id="ca", event_id="dup"))),  # duplicate
        ("A", "not json"),
        ("A", f.teleport("A", "x")),
    ]
    for key, text in story:
        feed(core, states, text, key, now)
    # A's and B's step 1 are due at T0 + 1h: their timers fire (at the wall clock `now`)
    requests = []
    for key in ("A", "B"):
        due = decode_state(states[key]).run_of("abandoned_cart").due_at
        step = Batch(core).run([(TIMER, key, due, None, 0)], {key: states[key]}, due, now)
        states.update(step.states)
        requests += [o for o in step.outputs if o[0] == Kind.REQUEST]
    assert len(requests) == 1
    assert core.labeled == {
        "events": {"identify": 2, "cart_add": 5, "purchase": 1},
        "invalid": {"not_json": 1, "unknown_event_type": 1},
        "requests": {("abandoned_cart", 1): 1},
        "deferred": {},
        "skipped": {"no_email": 1},
        "cancelled": {"purchased": 1},
    }
    assert set(core.labeled) == set(LABELED)
    assert (core.counts["duplicate"], core.counts["late"]) == (1, 0)
    # reminder lateness: the wall clock at emit minus the due time of A's step 1
    assert core.lateness == [now - (f.T0 + f.MINUTE + f.HOUR)]


# --- Prometheus text format ---------------------------------------------------------------------

EXPOSITION = (
    "# HELP flink_taskmanager_job_task_operator_inboxflow_event_type_events events\n"
    "# TYPE flink_taskmanager_job_task_operator_inboxflow_event_type_events gauge\n"
    "flink_taskmanager_job_task_operator_inboxflow_event_type_events"
    '{event_type="cart_add",subtask_index="0",} 3.0\n'
    "flink_taskmanager_job_task_operator_inboxflow_event_type_events"
    '{event_type="cart_add",subtask_index="1",} 2.0\n'
    "flink_taskmanager_job_task_operator_inboxflow_event_type_events"
    '{event_type="purchase",subtask_index="1",} 0.0\n'
    "flink_taskmanager_job_task_operator_inboxflow_campaign_step_requests"
    '{campaign="a\\"b",step="2",} 1.0\n'
    'flink_jobmanager_job_numRestarts{job_id="j1",job_name="inboxflow",} 0.0\n'
)


def test_prometheus_text_is_parsed_and_summed_over_subtasks() -> None:
    samples = parse(EXPOSITION)
    assert len(samples) == 5
    assert by_label(samples, "inboxflow_event_type_events", "event_type") == {"cart_add": 5}
    assert by_label(samples, "inboxflow_campaign_step_requests", "campaign", "step") == {
        ('a"b', "2"): 1
    }
    assert total(samples, "flink_jobmanager_job_numRestarts", job_id="j1") == 0
    assert total(samples, "inboxflow_event_type_events", subtask_index="0") == 3


def test_port_ranges_and_reporter_jars() -> None:
    assert port_range("9249-9252") == [9249, 9250, 9251, 9252]
    assert port_range("9249, 9300-9301") == [9249, 9300, 9301]
    from job.main import flink_settings

    jars = reporter_jars(flink_settings())
    assert [j.name for j in jars] == ["flink-metrics-prometheus-2.0.2.jar"]
    assert reporter_jars({"parallelism.default": "2"}) == []


# --- structured logs ----------------------------------------------------------------------------


def _record(message: str, *args, level: int = logging.WARNING, **extra) -> logging.LogRecord:
    record = logging.LogRecord("inboxflow", level, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_log_record_has_the_allowed_fields_and_no_personal_data() -> None:
    record = _record(
        "invalid event",
        **logs.fields(
            customer_id="c-1",
            event_id="e-9",
            campaign="abandoned_cart",
            step=1,
            reason="schema_violation",
            path="$.properties.price",
            email="ann@example.com",
            first_name="Ann",
            payload='{"secret": 1}',
            to="x@y.io",
        ),
    )
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert set(out) == {
        "time",
        "level",
        "logger",
        "message",
        "customer_id",
        "event_id",
        "campaign",
        "step",
        "reason",
        "path",
    }
    assert (out["level"], out["logger"], out["message"], out["step"]) == (
        "WARNING",
        "inboxflow",
        "invalid event",
        1,
    )
    assert out["time"].endswith("Z") and len(out["time"]) == 24
    for secret in ("ann@example.com", "Ann", "secret", "x@y.io"):
        assert secret not in line


def test_email_addresses_are_masked_wherever_they_appear() -> None:
    record = _record(
        "store insert failed: %s",
        "row of bob.smith+x@mail.example.org refused",
        **logs.fields(customer_id="carol@example.com", reason="r"),
    )
    out = json.loads(logs.JsonFormatter().format(record))
    assert out["message"] == "store insert failed: row of <email> refused"
    assert out["customer_id"] == "<email>"
    text = logs.TextFormatter().format(record)
    assert "@" not in text and text.endswith("customer_id=<email> reason=r")


def test_log_records_never_raise_on_unencodable_ids_or_exceptions() -> None:
    try:
        raise KeyError("dave@example.com")
    except KeyError:
        import sys

        exc_info = sys.exc_info()
    record = _record("processing failed", **logs.fields(customer_id="\ud800x"))
    record.exc_info = exc_info
    out = json.loads(logs.JsonFormatter().format(record))
    assert out["customer_id"] == "\ud800x" and out["message"] == "processing failed (KeyError)"
    assert "dave" not in logs.JsonFormatter().format(record)
    logs.TextFormatter().format(record).encode()  # encodable


def test_configure_writes_json_lines_at_the_configured_level(tmp_path: Path) -> None:
    path = logs.log_path(str(tmp_path / "flink-u-taskexecutor-0-h.log"), "json")
    assert path == tmp_path / "flink-u-taskexecutor-0-h.inboxflow.jsonl"
    assert logs.log_path(None, "json") is None
    logger = logs.configure("WARNING", "json", path)
    try:
        logger.info("not written")
        logger.warning("invalid event", extra=logs.fields(customer_id="c", reason="not_json"))
        logs.configure("WARNING", "json", path)  # idempotent: one handler
        logger.error("again")
        for handler in logger.handlers:
            handler.flush()
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [(r["level"], r["message"], r.get("reason")) for r in lines] == [
            ("WARNING", "invalid event", "not_json"),
            ("ERROR", "again", None),
        ]
    finally:
        logs.configure("INFO", "text", None)


def test_logging_config_is_validated() -> None:
    cfg = load_config(env={})
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "json")
    with pytest.raises(ConfigError, match="logging.level: expected one of DEBUG, INFO"):
        load_config(env={}, overrides={"logging": {"level": "verbose"}})
    with pytest.raises(ConfigError, match="logging.format: expected one of json, text"):
        load_config(env={}, overrides={"logging": {"format": "xml"}})
    with pytest.raises(ConfigError, match="unknown key logging.file"):
        load_config(env={}, overrides={"logging": {"file": "x"}})
