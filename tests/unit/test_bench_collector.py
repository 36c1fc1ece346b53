"""The bench's collector row (``bench/collector.py``): latency summaries, the load generator's
HTTP/1.1 response parser on canned bytes, the request builder (valid events, unique ids,
framing), the row's order, summary and table; and one small run end to end against a real
broker and a real ``inboxflow collect`` child process."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench import collector
from bench.run import MEASUREMENTS, Plan, _collector_runs, format_table, parse_args, summarize_runs
from tests.factories import SCHEMA_DIR
from udfs.clock import wall_ms
from udfs.core.validation import EventValidator, Invalid

NOW = 1_764_633_600_000  # 2025-12-02T00:00:00Z


# --------------------------------------------------------------------------- latencies


def test_latency_summary_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100 ms, unordered
    s = collector.latency_summary(values)
    assert (s["count"], s["p50"], s["p90"], s["p99"], s["max"]) == (100, 50.0, 90.0, 99.0, 100.0)
    assert s["mean"] == pytest.approx(50.5)
    one = collector.latency_summary([7.5])
    assert one["p50"] == one["p99"] == one["max"] == 7.5
    empty = collector.latency_summary([])
    assert empty["count"] == 0 and empty["p50"] is None and empty["mean"] is None


def test_spread_is_median_min_max_of_what_is_present() -> None:
    assert collector.spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert collector.spread([None]) == {"median": None, "min": None, "max": None}


# --------------------------------------------------------------------------- HTTP parsing


def read_all(data: bytes, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    async def go() -> list[tuple[int, dict[str, str], bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [await collector.read_response(reader) for _ in range(count)]

    return asyncio.run(go())


UVICORN_202 = (
    b"HTTP/1.1 202 Accepted\r\n"
    b"date: Tue, 02 Dec 2026 03:00:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"content-length: 14\r\n"
    b"content-type: application/json\r\n"
    b"\r\n"
    b'{"accepted":1}'
)


def test_parse_head_gives_status_and_lower_case_headers() -> None:
    status, headers = collector.parse_head(UVICORN_202.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert status == 202
    assert headers["content-length"] == "14" and headers["server"] == "uvicorn"
    assert collector.parse_head(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 10")[1] == {
        "retry-after": "10"
    }
    bad_heads = (b"SPDY/3 200 OK\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nnope\r\n")
    for bad in bad_heads:
        with pytest.raises(collector.ProtocolError):
            collector.parse_head(bad)


def test_read_response_frames_pipelined_answers_by_content_length() -> None:
    refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}"
    got = read_all(UVICORN_202 + refused + UVICORN_202, 3)
    assert [(status, body) for status, _, body in got] == [
        (202, b'{"accepted":1}'),
        (429, b"{}"),
        (202, b'{"accepted":1}'),
    ]
    assert got[1][1]["retry-after"] == "1"
    [(status, _, body)] = read_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", 1)
    assert (status, body) == (204, b"")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "the server closed the connection"),
        (b"HTTP/1.1 202 Accepted\r\ncontent-le", "inside a response head"),
        (b"HTTP/1.1 202 Accepted\r\ncontent-length: 14\r\n\r\n{", "inside a response body"),
        (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\r\n{}", "without"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "chunked"),
    ],
)
def test_read_response_refuses_what_it_cannot_frame(data: bytes, error: str) -> None:
    with pytest.raises(collector.ProtocolError, match=error) as raised:
        read_all(data, 1)
    assert isinstance(raised.value, collector.ConnectionClosed) == (data == b"")


# --------------------------------------------------------------------------- requests


def split_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


def test_a_request_is_a_keep_alive_post_with_the_write_key_and_its_length() -> None:
    line, headers, body = split_request(collector.request(b'{"a":1}', key="k-12345678"))
    assert line == "POST /v1/events HTTP/1.1"
    assert headers["authorization"] == "Bearer k-12345678"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body) and body == b'{"a":1}'
    assert "connection" not in headers  # HTTP/1.1: keep-alive by default


def test_every_built_event_passes_the_jobs_validator() -> None:
    validator = EventValidator(SCHEMA_DIR)
    types = Counter()
    for shape in collector.SHAPES:
        _, _, body = split_request(collector.request(collector.body(shape, 0, "bt", NOW)))
        doc = json.loads(body)
        events = doc["batch"] if shape == "batch" else [doc]
        assert len(events) == collector.event_count(shape)
        for e in events:
            result = validator.validate(json.dumps(e), NOW)
            assert not isinstance(result, Invalid), result
            assert e["timestamp"] == NOW
            types[e["event_type"]] += 1
    assert set(types) == {"cart_add", "page_view"}
    assert collector.event_count("batch") == 100


def test_a_pool_numbers_events_uniquely_over_customers_and_refills_on_the_spot() -> None:
    pool = collector.Pool("batch", "bt")
    pool.fill(12)
    ids, customers = [], set()
    for _ in range(15):  # 3 more than were built
        _, _, body = split_request(pool.take())
        for e in json.loads(body)["batch"]:
            ids.append(e["event_id"])
            customers.add(e["customer_id"])
    assert len(ids) == len(set(ids)) == 1500
    assert len(customers) == collector.CUSTOMERS
    assert pool.built_late == 3 and len(pool) == 0
    single = collector.Pool("single", "bt")
    single.fill(2)
    first = json.loads(split_request(single.take())[2])
    assert abs(first["timestamp"] - wall_ms()) < 60_000  # stamped when built: now


def test_the_accepted_body_is_what_the_collector_answers() -> None:
    from starlette.responses import JSONResponse

    for n in (1, 100):
        assert collector.accepted_body(n) == JSONResponse({"accepted": n}).body


def test_the_config_changes_only_the_broker_the_topic_and_the_rate_limits(tmp_path: Path) -> None:
    import yaml

    from job.collector.app import Settings
    from job.config import load_config

    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(collector.collector_config("127.0.0.1:1", "bench.t")))
    cfg = load_config(path, env={}, check_template_files=False)
    shipped = load_config(env={}, check_template_files=False)
    s = Settings.from_config(cfg, {"INBOXFLOW_WRITE_KEYS": f"bench={collector.WRITE_KEY}"})
    assert (s.bootstrap, s.events_topic, s.key_rate, s.ip_rate) == (
        "127.0.0.1:1",
        "bench.t",
        (0, 0),
        (0, 0),
    )
    assert s.write_keys == {collector.WRITE_KEY: "bench"}
    assert cfg.collector.max_batch == shipped.collector.max_batch
    assert cfg.limits == shipped.limits and cfg.kafka.topics.dlq == shipped.kafka.topics.dlq


# --------------------------------------------------------------------------- checks, summary


def run_result(shape: str, rate: float, **changes: Any) -> dict[str, Any]:
    per = collector.event_count(shape)
    result = {
        "shape": shape,
        "connections": 16,
        "planned_seconds": 10,
        "requests": int(rate * 10),
        "events": int(rate * 10 * per),
        "requests_per_s": rate,
        "events_per_s": rate * per,
        "latency_ms": {"p50": 5.0, "p99": 20.0},
        "statuses": {"202": int(rate * 12)},
        "transport_errors": 0,
        "accepted_mismatches": 0,
        "accepted_total": int(rate * 12 * per),
        "records_in_topic": int(rate * 12 * per),
        "pool": {"built_late": 0},
    }
    return {**result, **changes}


def test_a_run_with_any_other_answer_or_a_count_that_differs_has_problems() -> None:
    assert collector.run_problems(run_result("single", 100)) == []
    bad = run_result("single", 100, statuses={"202": 1000, "503": 2, "400": 1})
    assert collector.run_problems(bad) == ["3 answers other than 202 (1 x 400, 2 x 503)"]
    lost = run_result("single", 100, records_in_topic=1199)
    assert collector.run_problems(lost) == [
        "the topic holds 1,199 records, the collector answered 202 for 1,200 events"
    ]
    assert collector.run_problems(run_result("single", 100, transport_errors=1)) == [
        "1 transport errors"
    ]


def test_the_floor_moves_as_many_events_as_the_rounds_larger_run() -> None:
    assert collector.floor_events([{"events": 30_000}, {"events": 250_000}]) == 250_000
    assert collector.floor_events([{"error": "exit code 1"}]) == collector.FLOOR_MIN_EVENTS


def test_summary_and_table_give_medians_ranges_and_the_ratio_to_the_floor() -> None:
    results = {
        "collector-single": [run_result("single", r) for r in (1000, 1200, 1100)],
        "collector-batch": [
            run_result("batch", 200),
            run_result("batch", 250, statuses={"202": 3000, "503": 1}, error="1 answers ..."),
            run_result("batch", 300),
        ],
        "collector-floor": [
            {"events": 300_000, "events_per_s": e, "records_in_topic": 300_000}
            for e in (100_000.0, 200_000.0, 150_000.0)
        ],
    }
    s = collector.summarize(results)
    single, batch = s["collector-single"], s["collector-batch"]
    assert single["requests_per_s"] == {"median": 1100, "min": 1000, "max": 1200}
    assert (batch["runs"], batch["failed"], batch["non_202"]) == (2, 1, 1)
    assert batch["events_per_s"] == {"median": 25_000, "min": 20_000, "max": 30_000}
    # run i against floor run i; the failed batch run has no pair
    assert single["vs_floor"]["pairs"] == pytest.approx([0.01, 0.006, 1100 / 150_000])
    assert batch["vs_floor"]["pairs"] == pytest.approx([0.2, 0.2])
    assert s["collector-floor"]["events_per_s"]["median"] == 150_000
    table = "\n".join(collector.format_lines(s, cores=2))
    assert "collector, single event, 16 connections, 10 s, 2 cores" in table
    assert "1,100 req/s (1,000–1,200)" in table and "p99 20.0 ms" in table
    assert "1 runs FAILED" in table and "produce floor" in table
    assert "0.7 % of the produce floor's events/s (runs in pairs: 1.0 %, 0.6 %, 0.7 %)" in table
    assert "20.0 % of the produce floor's events/s (runs in pairs: 20.0 %, 20.0 %)" in table


def test_a_row_whose_every_run_failed_says_so() -> None:
    failed = {"error": "exit code 1", "log": "x"}
    s = collector.summarize({"collector-single": [failed], "collector-floor": [failed]})
    lines = collector.format_lines(s, cores=2)
    assert lines == [
        "collector, single event, 2 cores  FAILED (every run: exit code 1)",
        "produce floor  FAILED (every run)",
    ]


# --------------------------------------------------------------------------- bench.run wiring


def plan(runs: int, **changes: Any) -> Plan:
    base = {
        "events": 10_200,
        "runs": runs,
        "rate": 1000,
        "live_seconds": 10,
        "clock_seconds": 5,
        "measurements": ("collector",),
        "quick": False,
    }
    return Plan(**{**base, **changes})


def test_collector_is_a_measurement_of_the_default_bench() -> None:
    assert "collector" in MEASUREMENTS
    assert "collector" in parse_args([]).only.split(",")
    args = parse_args(["--only", "collector", "--collector-seconds", "1"])
    assert args.collector_seconds == 1 and args.collector_connections is None
    with pytest.raises(SystemExit):
        parse_args(["--collector-connections", "0"])


def test_rounds_alternate_the_shapes_and_end_with_the_floor(tmp_path: Path, capsys) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_run(spec: dict, name: str, work_root: Path, timeout: float) -> dict:
        calls.append((name, spec))
        assert timeout > 0
        if spec["kind"] == "collector":
            rate = {"single": 2000.0, "batch": 250.0}[spec["shape"]]
            return run_result(spec["shape"], rate)
        return {"events": spec["events"], "events_per_s": 1e5, "records_in_topic": spec["events"]}

    runs = list(_collector_runs(plan(2, quick=True), "b:1", tmp_path, run=fake_run))
    assert [name for _, name, _ in runs] == [
        "collector-single-1",
        "collector-batch-1",
        "collector-floor-1",
        "collector-single-2",
        "collector-batch-2",
        "collector-floor-2",
    ]
    specs = dict(calls)
    assert specs["collector-single-1"]["seconds"] == collector.SECONDS_QUICK
    assert specs["collector-single-1"]["connections"] == collector.CONNECTIONS
    assert specs["collector-batch-2"]["shape"] == "batch"
    assert specs["collector-floor-1"]["events"] == 250_000  # the round's batch run
    assert len({spec["topic"] for spec in specs.values()}) == 6  # a fresh topic per run
    results: dict[str, list[dict]] = {}
    for group, _, result in runs:
        results.setdefault(group, []).append(result)
    p = plan(2, quick=True, collector_seconds=3, collector_connections=16)
    table = format_table(p, summarize_runs(p, results), "2026-12-02")
    assert "collector, batch of 100, 16 connections" in table
    assert "collector-floor-2 ..." in capsys.readouterr().out


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_the_row_end_to_end_against_a_real_broker_and_collector(tmp_path: Path) -> None:
    """Both shapes and the floor, tiny: 1 s measured, 2 connections, 1 run. Every answer is
    202, the topic holds exactly the accepted events, the latencies are ordered."""
    from job.dev.broker import TansuBroker

    results: dict[str, list[dict]] = {}
    with TansuBroker() as broker:
        for shape in collector.SHAPES:
            name = f"t-{shape}"
            spec = collector.shape_spec(broker.bootstrap, shape, name, 1, 2, warmup_s=0.5)
            result = collector.child_shape({**spec, "work_dir": str(tmp_path / name)})
            assert "error" not in result, result
            assert set(result["statuses"]) == {"202"}
            assert result["transport_errors"] == result["accepted_mismatches"] == 0
            assert result["accepted_total"] > result["events"] > 0
            assert result["records_in_topic"] == result["accepted_total"]
            assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
            assert result["connections"] == 2 and result["reconnects"] == 0
            results[f"collector-{shape}"] = [result]
        spec = collector.floor_spec(broker.bootstrap, "t-floor", 5_000)
        floor = collector.child_floor({**spec, "work_dir": str(tmp_path / "floor")})
        assert "error" not in floor, floor
        assert floor["records_in_topic"] == 5_000
        results["collector-floor"] = [floor]
    summary = collector.summarize(results)
    assert summary["collector-batch"]["vs_floor"]["ratio"] > 0
    assert len(collector.format_lines(summary)) == 5
