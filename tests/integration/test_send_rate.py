"""The global send rate (io.inboxflow.flink.SendRateLimiter, docs/DESIGN.md#send-rate) on the
mini-cluster: a burst of synthetic email requests fed straight into the limiter comes out
whole, in order, at the configured rate, released by timers while the input is open and by
the end-of-input drain when it has ended, with a ``deferred`` outcome for exactly the
requests that waited; waiting requests survive a failure in the checkpointed buffer;
``guards.send_rate: 0`` leaves the limiter out of the graph, a rate puts it after the
router; and the whole job with a rate sends every request in order.

Emission times: a Python map chained right after the limiter stamps each request with the
wall clock as it is emitted (the limiter does not time itself)."""

from __future__ import annotations

import json
import os
import time

import pytest

from job import flink_bridge
from job.config import load_config
from job.main import create_env
from tests.factories import T0
from tests.integration.conftest import bounded_settings
from udfs.clock import wall_ms
from udfs.core.instant import iso_ms

RATE = 10  # requests per second, parallelism 1: the bucket holds 10
BURST = 40
END = "__end__"  # the key of the row that holds the input open (never reaches the limiter)
SECOND_MS = 1000


def request(i: int) -> tuple[str, str]:
    """``(customer id, request JSON)`` of the i-th synthetic request."""
    customer = f"c-{i % 7}"
    body = {
        "request_id": f"r-{i:03d}",
        "customer_id": customer,
        "subject": "Ihr Warenkorb wartet, Jörg 🛒",
        "trigger_event_time": iso_ms(T0 + i * 1000),
    }
    return customer, json.dumps(body, ensure_ascii=False)


def hold_open(seconds: float):
    """A flat map function: passes every row on; the row keyed :data:`END` makes it sleep
    ``seconds`` (in its own task, so the limiter's timers keep firing) and is dropped."""

    def fn(row):
        if row[0] == END:
            time.sleep(seconds)
            return
        yield row

    return fn


def run_limiter(rows: list[tuple[str, str]], rate: int, open_s: float) -> dict[str, list]:
    """``rows`` from a bounded collection through the limiter at parallelism 1; with
    ``open_s`` the input stays open that long after the last row. Returns {"requests":
    [(key, json, emitted_ms)], "deferred": [(key, outcome)]} in arrival order."""
    from pyflink.common import Row, Types

    from job.pipeline import limit_send_rate
    from udfs.flink.customer_function import KEYED_JSON

    env = create_env(bounded_settings(1))
    source = [Row(k, v) for k, v in rows] + ([Row(END, "")] if open_s else [])
    stream = env.from_collection(source, type_info=KEYED_JSON)
    if open_s:
        stream = stream.flat_map(hold_open(open_s), output_type=KEYED_JSON).disable_chaining()
    limited, deferred = limit_send_rate(stream, rate)
    tagged = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()])
    stamped = limited.map(lambda r: Row("requests", r[0], r[1], wall_ms()), output_type=tagged)
    outcomes = deferred.map(lambda r: Row("deferred", r[0], r[1], 0), output_type=tagged)
    out: dict[str, list] = {"requests": [], "deferred": []}
    with stamped.union(outcomes).execute_and_collect("inboxflow-send-rate-test") as results:
        for kind, key, value, at in results:
            if kind == "requests":
                out["requests"].append((key, value, at))
            else:
                out["deferred"].append((key, json.loads(value)))
    return out


def most_in_a_second(stamps: list[int]) -> int:
    """The most stamps in any window [t, t + 1 s), t one of the stamps."""
    stamps = sorted(stamps)
    j, best = 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + SECOND_MS:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.parametrize(
    "open_s",
    [pytest.param(6.0, id="released-by-timers"), pytest.param(0.0, id="drained-at-end-of-input")],
)
def test_a_burst_leaves_whole_in_order_at_the_rate(open_s):
    rows = [request(i) for i in range(BURST)]
    out = run_limiter(rows, RATE, open_s)

    # every request, in the order it came, none dropped, none twice
    assert [(k, v) for k, v, _ in out["requests"]] == rows
    stamps = [at for _, _, at in out["requests"]]
    assert stamps == sorted(stamps)

    # deferred outcomes: exactly the requests after the first bucketful, each once
    deferred = out["deferred"]
    waited = len(deferred)
    # the burst arrives within milliseconds: the full bucket (10) passes, perhaps one or two
    # more as tokens refill, every later request waits
    assert BURST - RATE - 2 <= waited <= BURST - RATE
    first_waiting = BURST - waited
    for n, (key, outcome) in enumerate(deferred):
        i = first_waiting + n
        assert key == rows[i][0]
        assert outcome == {
            "kind": "deferred",
            "reason": "send_rate",
            "customer_id": rows[i][0],
            "request_id": f"r-{i:03d}",
            "event_time": T0 + i * 1000,
            "queued": outcome["queued"],
        }
        assert outcome["queued"] >= 1
    assert deferred[0][1]["queued"] == 1

    # the rate: never more than the bucket plus one second's worth in a second (a token
    # bucket's bound); once the bucket is spent about the rate: +1 for a token refilled at
    # the window's edge, +1 for the tokens a timer firing late (a busy machine) finds at once
    assert most_in_a_second(stamps) <= 2 * RATE + 1
    assert most_in_a_second(stamps[first_waiting:]) <= RATE + 2
    # (40 - 10) / 10 s at the least after the first request; 100 ms of slack for the wall
    # clock read in the stamping map, 1.5 s on the upper side for a loaded machine
    drain_ms = (BURST - RATE) * SECOND_MS // RATE
    span = stamps[-1] - stamps[0]
    print(f"waited {waited}, span {span} ms, most in a second {most_in_a_second(stamps)}")
    assert drain_ms - 100 <= span <= drain_ms + 1500
    if open_s:
        # released by timers while the input was still open, not by the end-of-input drain
        # (which starts only after open_s)
        assert span < open_s * SECOND_MS - SECOND_MS


def fail_once(marker: str, request_id: str):
    """A map function stamping each request like :func:`run_limiter`'s, which fails the task
    on ``request_id`` the first time (``marker`` remembers it across the restart)."""

    def fn(row):
        from pyflink.common import Row

        if json.loads(row[1])["request_id"] == request_id and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure (test_send_rate)")
        return Row("requests", row[0], row[1], wall_ms())

    return fn


def test_waiting_requests_survive_a_failure_in_the_checkpointed_buffer(tmp_path):
    """Checkpoints every 100 ms while the burst arrives (20 ms per request, so up to 30 wait);
    a task failure at the 25th release, while the end-of-input drain runs, restarts the job
    from the last checkpoint: its waiting requests come back from the limiter's state, the
    source re-reads what came after, and the collected output (exactly once under
    checkpoints) holds every request once, in order. (Checked: with the restore in
    ``initializeState`` left out, the requests that were waiting at the checkpoint are lost
    and this fails.)"""
    from pyflink.common import Row, Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from job.pipeline import limit_send_rate
    from udfs.flink.customer_function import KEYED_JSON

    rows = [request(i) for i in range(BURST)]
    marker = tmp_path / "failed-once"
    settings = {
        **bounded_settings(1),
        "execution.checkpointing.interval": "100ms",
        "execution.checkpointing.dir": (tmp_path / "checkpoints").as_uri(),
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "2",
        "restart-strategy.fixed-delay.delay": "200ms",
    }
    env = create_env(settings)
    # a source that resumes where its checkpoint was (a collection source starts over)
    numbers = env.from_source(
        NumberSequenceSource(0, BURST - 1), WatermarkStrategy.no_watermarks(), "requests"
    )
    stream = numbers.map(lambda i: (time.sleep(0.02), Row(*request(i)))[1], output_type=KEYED_JSON)
    limited, _ = limit_send_rate(stream, RATE)
    tagged = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()])
    stamped = limited.map(fail_once(str(marker), "r-024"), output_type=tagged)
    with stamped.execute_and_collect("inboxflow-send-rate-restore-test") as results:
        released = [(key, value) for _, key, value, _ in results]
    assert marker.exists(), "the injected failure never happened"
    assert released == rows


def _nodes(env) -> list[tuple[str, str, int]]:
    """(operator name, operator class, parallelism) of every node of ``env``'s stream graph."""
    graph = flink_bridge.stream_graph(env)
    nodes = []
    for node in graph.getStreamNodes().toArray():
        factory = node.getOperatorFactory()
        loader = node.getClass().getClassLoader()
        cls = factory.getStreamOperatorClass(loader).getName() if factory else ""
        nodes.append((str(node.getOperatorName()), str(cls), int(node.getParallelism())))
    return nodes


@pytest.mark.parametrize("parallelism", [1, 2])
def test_send_rate_zero_leaves_the_limiter_out_and_a_rate_puts_it_after_the_router(parallelism):
    from pyflink.common import Types

    from job.pipeline import build

    limiter = "io.inboxflow.flink.SendRateLimiter"
    for rate in (0, 25):
        cfg = load_config(
            overrides={"clickhouse": {"enabled": False}, "guards": {"send_rate": rate}}
        )
        env = create_env(bounded_settings(parallelism))
        out = build(cfg, env.from_collection(["{}"], type_info=Types.STRING()), store=False)
        for stream in (out.requests, out.dlq, out.outcomes):
            stream.map(lambda r: r, output_type=Types.STRING())
        nodes = _nodes(env)
        limiters = [n for n in nodes if n[1] == limiter]
        if rate == 0:
            assert limiters == [], nodes
            continue
        # once, named and at the parallelism of the router it follows
        (router,) = [n for n in nodes if n[0] == "route-outputs"]
        assert limiters == [("send-rate", limiter, router[2])]
        graph = flink_bridge.stream_graph(env)
        (node,) = [
            n for n in graph.getStreamNodes().toArray() if str(n.getOperatorName()) == "send-rate"
        ]
        assert str(node.getTransformationUID()) == "send-rate"
        (edge,) = node.getInEdges().toArray()
        assert "Forward" in str(edge.getPartitioner().getClass().getSimpleName())
        # the deferred outcomes join the outcomes: the limiter feeds two downstream nodes
        assert len(node.getOutEdges().toArray()) == 2


def test_the_job_with_a_send_rate_sends_every_request_in_order_and_explains_each_wait():
    """The whole job (tests/integration/test_pipeline.py's scenario) at parallelism 1 with a
    send rate: the email requests leave in the order the journeys sent them (the ``sent``
    outcomes, which do not pass the limiter), and ``build()`` unions one ``deferred``
    outcome per request that waited into the outcomes stream."""
    import datetime as dt

    from tests.integration.conftest import run_bounded
    from tests.integration.test_pipeline import scenario

    rate = 4
    out = run_bounded(scenario(), 1, overrides={"guards": {"send_rate": rate}})
    requests = [(key, req) for key, req in out["requests"]]
    assert len(requests) > 2 * rate, "the scenario must send more than the bucket holds"
    sent = [o["request_id"] for _, o in out["outcomes"] if o.get("kind") == "sent"]
    assert [req["request_id"] for _, req in requests] == sent
    deferred = [(key, o) for key, o in out["outcomes"] if o.get("kind") == "deferred"]
    # the requests come in bursts (at watermarks and at the end of the input): some wait
    assert 1 <= len(deferred) <= len(requests) - rate
    by_id = {req["request_id"]: (key, req) for key, req in requests}
    assert len({o["request_id"] for _, o in deferred}) == len(deferred)
    for key, outcome in deferred:
        request_key, req = by_id[outcome["request_id"]]
        trigger = dt.datetime.fromisoformat(req["trigger_event_time"].replace("Z", "+00:00"))
        assert key == request_key == outcome["customer_id"]
        assert outcome["reason"] == "send_rate"
        assert outcome["event_time"] == round(trigger.timestamp() * 1000)
        assert outcome["queued"] >= 1
