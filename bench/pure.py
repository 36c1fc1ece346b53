"""The job's pure Python per-event path, no Flink and no Kafka: µs per event of each stage
(issue 13, "a lean per-event path": every later optimisation shows up here first).

The events are the bench's throughput events (:func:`job.dev.gen.generate` with the bench's
seed and customers), as the customer function receives them: the raw text, the key and the
event time the JVM reads (``io.inboxflow.flink.EnvelopeExtractor``). A :class:`Subtask`
plays Flink's part for one subtask: keyed state holding the raw JSON strings, event-time
timers (a heap of per-customer due times) and a bounded-out-of-orderness watermark
(newest event time - bound - 1 ms, moved by every event with a readable time; due timers
fire before the next event, all the rest at the end of the input, as in a bounded run).

Two paths over the same events, each on a fresh :class:`CustomerCore` built from the
shipped config (``conf/job.yaml``, store on: ClickHouse rows are built):

* **core**: :class:`CustomerCore` as is (``validate``, ``on_event``, ``on_timer``), timed
  around each call: the end-to-end figure;
* **staged**: :func:`staged_step` does exactly what ``CustomerCore.on_event`` /
  ``on_timer`` do (same calls, same order, same firewall), with ``time.perf_counter_ns``
  between the stages: (1) ``validate`` = ``CustomerCore.validate`` (parse, validate,
  normalize: ``EventValidator.validate`` and the key check), (2) ``load`` the state from its
  JSON strings, (3) ``logic`` = ``CustomerLogic.on_event`` / ``on_timer``, (4) ``dump`` the
  state, (5) ``render`` the triggers, (6) ``encode`` the outputs (email requests, outcomes,
  ClickHouse rows: :mod:`udfs.core.contract`), counters and the :class:`Step`.

Stages 2-6 count timers' work too; every figure is per input event. Each reading of the
clock costs time that lands in the interval it closes: that cost, measured before each run,
is subtracted once per interval. Both paths must produce the same outputs
(``tests/unit/test_bench_pure.py`` compares them), so the stage split cannot silently drift
from the real path.

``python -m bench.pure`` (or ``python -m bench.run --only pure``, which ``make bench`` runs
first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import heapq
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from bench.run import CUSTOMERS, RESULTS_DIR, SEED
from udfs.clock import MAX_WATERMARK, wall_ms
from udfs.core import contract
from udfs.core.contract import Kind, Routed
from udfs.core.customer import (
    CustomerCore,
    RawState,
    Step,
)

log = logging.getLogger("inboxflow")

EVENTS: Final = 200_000
EVENTS_QUICK: Final = 20_000
STAGES: Final = ("validate", "load", "logic", "dump", "render", "encode")
STAGE_LABELS: Final = {
    "validate": "1 parse + validate + normalize",
    "load": "2 load state (JSON -> objects)",
    "logic": "3 journey logic (events + timers)",
    "dump": "4 dump state (objects -> JSON)",
    "render": "5 render triggers",
    "encode": "6 encode outputs (contract)",
}
_EMPTY: Final[RawState] = (None, None, None)
MIN_WATERMARK: Final = -(2**63)  # Flink's watermark before the first one (Long.MIN_VALUE)
_ns = time.perf_counter_ns


class Input(NamedTuple):
    """One event as the customer function receives it."""

    key: str  # what the JVM keys it by ("" when unreadable)
    text: str  # the raw event text
    event_time: int | None  # the event time the JVM reads (None: moves no watermark)


def jvm_key(text: str) -> str:
    """The key ``EnvelopeExtractor`` gives ``text``: the top-level ``customer_id`` string,
    stripped, or "". (Jackson keeps a key it read before a syntax error; such an event is
    invalid whatever its key, so "" does as well here.)"""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ""
    cid = doc.get("customer_id") if isinstance(doc, dict) else None
    return cid.strip() if isinstance(cid, str) else ""


def inputs(
    events: int,
    seed: int = SEED,
    customers: int = CUSTOMERS,
    malformed_ratio: float = 0.005,
) -> list[Input]:
    """The bench's throughput events (:func:`job.dev.gen.generate`), as received."""
    from job.dev import gen

    out = []
    for record in gen.generate(seed, customers, events, gen.DEFAULT_START_MS, malformed_ratio):
        # the Kafka deserializer decodes with U+FFFD replacement; the extractor drops a BOM
        text = record.value.decode("utf-8", errors="replace").removeprefix("\ufeff")
        out.append(Input(jvm_key(text), text, record.event_time_ms))
    return out


def new_core(store: bool = True) -> tuple[CustomerCore, int]:
    """A core from the shipped config, and its out-of-orderness bound (ms)."""
    from job.config import load_config
    from job.pipeline import core_settings

    cfg = load_config(env={})
    return CustomerCore(core_settings(cfg, store)), cfg.watermarks.out_of_orderness_ms


@dataclass
class Tally:
    """What came out: Kafka records by kind, ClickHouse rows, timers fired."""

    requests: int = 0
    outcomes: int = 0
    dlq: int = 0
    store_rows: int = 0
    timers: int = 0


class Subtask:
    """Flink's part around the customer function of one subtask: keyed state (the raw
    JSON strings of the three ValueStates), event-time timers, the watermark; the commit of
    a :class:`Step` as ``CustomerFunction._commit`` does it."""

    def __init__(self, bound_ms: int, keep: bool = False) -> None:
        self.bound_ms = bound_ms
        self.state: dict[str, RawState] = {}
        self.timers: dict[str, set[int]] = {}  # registered event-time timers per key
        self.heap: list[tuple[int, str]] = []  # (due, key); deleted timers stay until popped
        self.newest: int | None = None
        self.tally = Tally()
        self.outputs: list[Routed] | None = [] if keep else None

    def raw(self, key: str) -> RawState:
        return self.state.get(key, _EMPTY)

    def watermark(self) -> int:
        return MIN_WATERMARK if self.newest is None else self.newest - self.bound_ms - 1

    def saw(self, event_time: int | None) -> None:
        if event_time is not None and (self.newest is None or event_time > self.newest):
            self.newest = event_time

    def due(self, watermark: int) -> Iterator[tuple[int, str]]:
        """Timers at or before ``watermark``, in time order, each removed before it fires."""
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            ts, key = heapq.heappop(heap)
            registered = self.timers.get(key)
            if registered and ts in registered:
                registered.discard(ts)
                self.tally.timers += 1
                yield ts, key

    def commit(self, key: str, step: Step, raw: RawState) -> None:
        if step.timers is not None:
            old, new = step.timers
            if old is not None and key in self.timers:
                self.timers[key].discard(old)
            if new is not None:
                registered = self.timers.setdefault(key, set())
                if new not in registered:
                    registered.add(new)
                    heapq.heappush(self.heap, (new, key))
        if step.state is not None:
            if step.state == _EMPTY:
                self.state.pop(key, None)
            else:
                self.state[key] = step.state
        self.emit(step.outputs)
        if step.store is not None:
            self.tally.store_rows += contract.count_store_rows(step.store[1])
            if self.outputs is not None:
                self.outputs.append(contract.encode_store(*step.store))

    def emit(self, outputs: list[Routed]) -> None:
        tally = self.tally
        for out in outputs:
            kind = out[0]
            if kind == Kind.REQUEST:
                tally.requests += 1
            elif kind == Kind.OUTCOME:
                tally.outcomes += 1
            elif kind == Kind.DLQ:
                tally.dlq += 1
        if self.outputs is not None:
            self.outputs.extend(outputs)


@dataclass
class Run:
    """One pass over the events: ns and timed intervals per stage (or ``core``), the wall
    time of the whole loop, what came out."""

    events: int
    ns: dict[str, int]
    intervals: dict[str, int]
    wall_ns: int
    overhead_ns: float  # cost of one clock reading, subtracted once per interval
    tally: Tally
    subtask: Subtask | None = field(repr=False)  # None once measure() has dropped it

    def us_per_event(self, stage: str) -> float:
        net = self.ns[stage] - self.intervals[stage] * self.overhead_ns
        return max(0.0, net) / self.events / 1000


def clock_overhead_ns(readings: int = 200_000) -> float:
    """The mean cost of one ``perf_counter_ns`` reading, back to back (min of 5 tries)."""
    best = float("inf")
    for _ in range(5):
        ns = _ns
        start = ns()
        for _ in range(readings):
            ns()
        best = min(best, (ns() - start) / (readings + 1))
    return best


def _drive(
    sub: Subtask,
    events: Sequence[Input],
    clock: Callable[[], int],
    validate: Callable[[str, str, int], dict[str, Any] | Step],
    on_event: Callable[[dict[str, Any], str, RawState, int, int], Step],
    on_timer: Callable[[str, int, RawState, int], Step],
) -> int:
    """The stand-in for Flink around one core: due timers fire before each event (and all
    the rest at the end of the input), each step is committed to ``sub``; returns the wall
    ns of the whole loop."""
    started = _ns()
    for key, text, event_time in events:
        now = clock()
        watermark = sub.watermark()
        for ts, tkey in sub.due(watermark):
            raw = sub.raw(tkey)
            sub.commit(tkey, on_timer(tkey, ts, raw, now), raw)
        sub.saw(event_time)
        event = validate(key, text, now)
        if type(event) is Step:
            sub.emit(event.outputs)
            continue
        raw = sub.raw(key)
        sub.commit(key, on_event(event, text, raw, watermark, now), raw)
    now = clock()
    for ts, tkey in sub.due(MAX_WATERMARK):  # the end of a bounded input
        raw = sub.raw(tkey)
        sub.commit(tkey, on_timer(tkey, ts, raw, now), raw)
    return _ns() - started


def run_core(
    core: CustomerCore,
    events: Sequence[Input],
    bound_ms: int,
    clock: Callable[[], int] = wall_ms,
    keep: bool = False,
) -> Run:
    """``CustomerCore`` as is, as ``CustomerFunction`` drives it; ``ns["core"]``: time
    inside the core's calls."""
    sub = Subtask(bound_ms, keep)
    overhead = clock_overhead_ns()
    ns = _ns
    spent = {"core": 0}
    calls = {"core": 0}

    def timed(call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            t0 = ns()
            result = call(*args)
            spent["core"] += ns() - t0
            calls["core"] += 1
            return result

        return run

    def on_event(event: dict[str, Any], text: str, raw: RawState, wm: int, now: int) -> Step:
        return core.on_event(event, text, raw, wm, now, now)

    wall = _drive(sub, events, clock, timed(core.validate), timed(on_event), timed(core.on_timer))
    return Run(len(events), spent, calls, wall, overhead, sub.tally, sub)


def run_staged(
    core: CustomerCore,
    events: Sequence[Input],
    bound_ms: int,
    clock: Callable[[], int] = wall_ms,
    keep: bool = False,
) -> Run:
    """The same events through :func:`staged_step`, ns per stage."""
    sub = Subtask(bound_ms, keep)
    overhead = clock_overhead_ns()
    acc = dict.fromkeys(STAGES, 0)
    intervals = dict.fromkeys(STAGES, 0)
    ns = _ns

    def validate(key: str, text: str, now: int) -> dict[str, Any] | Step:
        t0 = ns()
        event = core.validate(key, text, now)
        acc["validate"] += ns() - t0
        intervals["validate"] += 1
        return event

    def on_event(event: dict[str, Any], text: str, raw: RawState, wm: int, now: int) -> Step:
        return staged_step(core, event["customer_id"], raw, event, text, wm, now, now, acc)

    def on_timer(key: str, ts: int, raw: RawState, now: int) -> Step:
        return staged_step(core, key, raw, None, "", ts, None, now, acc)

    wall = _drive(sub, events, clock, validate, on_event, on_timer)
    steps = acc.pop("_steps", 0)
    for stage in STAGES[1:]:
        intervals[stage] = steps
    return Run(len(events), acc, intervals, wall, overhead, sub.tally, sub)


def staged_step(
    core: CustomerCore,
    key: str,
    raw: RawState,
    event: dict[str, Any] | None,
    text: str,
    time_ms: int,
    kafka_ts: int | None,
    now: int,
    acc: dict[str, int],
) -> Step:
    """``core.on_event(event, text, raw, time_ms, kafka_ts, now)`` (``event`` given,
    ``time_ms`` the watermark) or ``core.on_timer(key, time_ms, raw, now)`` (``event``
    None), step for step, adding the ns of each stage to ``acc`` (and 1 to
    ``acc["_steps"]``) when it succeeds."""
    try:
        t0 = _ns()
        state, old_timer = core._load(raw)
        t1 = _ns()
        if event is not None:
            d = core.logic.on_event(state, event, time_ms)
        else:
            d = core.logic.on_timer(state, time_ms)
        t2 = _ns()
        # CustomerCore._step from here, stage by stage
        new_raw = core._dump(state)
        t3 = _ns()
        rendered = [core._try_render(trigger, now) for trigger in d.triggers]
        t4 = _ns()
        step = core._encode(raw, new_raw, old_timer, d, rendered, kafka_ts, now)
        t5 = _ns()
    except Exception as exc:  # noqa: BLE001 - the core's firewall, as on_event / on_timer
        if event is not None:
            return core._event_failed(event["customer_id"], text, event, exc, now)
        return core._timer_failed(key, time_ms, raw, exc, now)
    acc["load"] += t1 - t0
    acc["logic"] += t2 - t1
    acc["dump"] += t3 - t2
    acc["render"] += t4 - t3
    acc["encode"] += t5 - t4
    acc["_steps"] = acc.get("_steps", 0) + 1
    return step


@contextlib.contextmanager
def _quiet_core_logs() -> Iterator[None]:
    """The core logs every invalid event (a warning) to a handler that drops it: the record
    is still built, as in the job, but not written (the job writes it to the TaskManager
    log; without a handler Python would print each one to stderr)."""
    logger = logging.getLogger("inboxflow")
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate


def measure(events: int = EVENTS, runs: int = 3, store: bool = True) -> dict[str, Any]:
    """Median of ``runs`` of each path (the paths alternate, fresh core each run)."""
    print(f"pure path: generating {events:,} events ({CUSTOMERS:,} customers, seed {SEED}) ...")
    data = inputs(events)
    staged: list[Run] = []
    core_runs: list[Run] = []
    with _quiet_core_logs():
        for i in range(runs):
            for path, out in ((run_staged, staged), (run_core, core_runs)):
                core, bound = new_core(store)
                gc.collect()  # the previous run's garbage is not this run's cost
                run = path(core, data, bound)
                # its state would make every later run's full collections slower
                run.subtask = None
                out.append(run)
            s, c = staged[-1], core_runs[-1]
            print(
                f"  run {i + 1}/{runs}: staged {_sum_us(s):.2f} µs/event, "
                f"core {c.us_per_event('core'):.2f} µs/event",
                flush=True,
            )
    first = staged[0].tally
    same = all(r.tally == first for r in staged + core_runs)
    summary: dict[str, Any] = {
        "events": events,
        "runs": runs,
        "seed": SEED,
        "customers": CUSTOMERS,
        "store": store,
        "clock_overhead_ns": statistics.median(r.overhead_ns for r in staged + core_runs),
        "stages_us": {
            stage: statistics.median(r.us_per_event(stage) for r in staged) for stage in STAGES
        },
        "stage_sum_us": statistics.median(_sum_us(r) for r in staged),
        "staged_wall_us": statistics.median(r.wall_ns / r.events / 1000 for r in staged),
        "core_us": statistics.median(r.us_per_event("core") for r in core_runs),
        "core_wall_us": statistics.median(r.wall_ns / r.events / 1000 for r in core_runs),
        "tally": vars(first),
        "same_outputs_count": same,
    }
    return summary


def _sum_us(run: Run) -> float:
    return sum(run.us_per_event(stage) for stage in STAGES)


def _per_s(us: float) -> str:
    return f"{1e6 / us:>9,.0f}" if us > 0 else "      n/a"


def format_table(s: dict[str, Any], date: str) -> str:
    t = s["tally"]
    lines = [
        f"pure per-event path (no Flink, no Kafka) — {date} — {s['events']:,} events "
        f"(seed {s['seed']}, {s['customers']:,} customers), store "
        f"{'on' if s['store'] else 'off'}, 1 core — median of {s['runs']}",
        f"{'stage':<40} {'µs/event':>9} {'events/s':>9}",
    ]
    for stage in STAGES:
        us = s["stages_us"][stage]
        lines.append(f"{STAGE_LABELS[stage]:<40} {us:>9.2f} {_per_s(us)}")
    lines.append(f"{'stage sum':<40} {s['stage_sum_us']:>9.2f} {_per_s(s['stage_sum_us'])}")
    lines.append(
        f"{'CustomerCore as is (inside its calls)':<40} {s['core_us']:>9.2f} {_per_s(s['core_us'])}"
    )
    for label, key in (
        ("staged loop, wall (+ readings, driver)", "staged_wall_us"),
        ("CustomerCore loop, wall (+ driver)", "core_wall_us"),
    ):
        lines.append(f"{label:<40} {s[key]:>9.2f} {_per_s(s[key])}")
    lines.append(
        f"outputs: {t['requests']:,} requests, {t['outcomes']:,} outcomes, {t['dlq']:,} DLQ, "
        f"{t['store_rows']:,} ClickHouse rows, {t['timers']:,} timers fired"
        f"{'' if s['same_outputs_count'] else ' — PATHS DIFFER'}; clock reading "
        f"{s['clock_overhead_ns']:.0f} ns, subtracted per interval"
    )
    return "\n".join(lines)


def main_pure(events: int, runs: int, store: bool = True) -> int:
    """Measure, print the table, write ``bench/results/pure.json``; 1 when the paths
    disagree."""
    date = dt.datetime.now().astimezone().date().isoformat()
    summary = measure(events, runs, store)
    summary["date"] = date
    summary["cores"] = os.cpu_count()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "pure.json").write_text(json.dumps(summary, indent=2))
    print("\n" + format_table(summary, date) + "\n", flush=True)
    return 0 if summary["same_outputs_count"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.pure",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=EVENTS, help=f"default {EVENTS:,}")
    p.add_argument("--runs", type=int, default=3, help="runs of each path (median)")
    p.add_argument("--no-store", action="store_true", help="no ClickHouse rows")
    args = p.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        p.error("need --events >= 1 and --runs >= 1")
    return main_pure(args.events, args.runs, store=not args.no_store)


if __name__ == "__main__":
    sys.exit(main())
