"""The job's pure Python path, no Flink and no Kafka: µs per event of each stage of a batch
(issue 13, "a lean per-event path": every later optimisation shows up here first).

The events are the bench's throughput events (:func:`job.dev.gen.generate` with the bench's
seed and customers), as the customer operator receives them: the raw text, the key and the
event time the JVM reads (``io.inboxflow.flink.EnvelopeExtractor``). A :class:`Subtask`
plays ``io.inboxflow.flink.BatchCustomerOperator`` for one subtask: keyed state (one
``bytes`` value per customer), event-time timers (a per-customer set of registered times and
a heap of due times), batches of ``processing.batch_events`` entries (the shipped config,
``--batch-events`` to change it) with each customer's state read once per batch, and a
bounded-out-of-orderness watermark (newest event time - bound - 1 ms). The watermark moves
between batches only: after each batch of events it advances, and the timers it makes due
fire as timer batches, again until none is due; at the end of the input the last watermark
(``MAX_WATERMARK``) fires every timer left, as in a bounded run. (In the job the watermark
moves every 200 ms of processing time (the auto-watermark interval), so at full speed
several batches of events pass between two moves; here every batch of events is followed by
one: timers fire in more, smaller batches, and a little earlier in the stream.) The Kafka
record time of an event is the wall clock when it is appended. A :class:`Result` is applied
as the operator applies it: states, then timer deletions and registrations, then the
outputs.

Two paths over the same batches, each on a fresh :class:`Batch` around a fresh
:class:`CustomerCore` built from the shipped config (``conf/job.yaml``, store on: ClickHouse
rows are built):

* **batch**: ``Batch.run_payload`` as is, timed around the call only: the end-to-end Python
  figure. The payload (:func:`encode_batch`) is built before it and the answer read
  (:func:`decode_result`) after it, both outside the timing: that is the JVM's work;
* **staged**: :func:`staged_run_payload` does exactly what ``Batch.run_payload`` /
  ``Batch.run`` and, per entry, ``CustomerCore.on_event`` / ``on_timer`` do (same calls,
  same order, same firewall; :func:`staged_step`), with ``time.perf_counter_ns`` between
  the stages: (1) ``decode`` the payload (MessagePack, msgspec) and make one ``Slot`` per
  customer, (2) ``validate`` = ``CustomerCore.validate`` (parse, validate, normalize:
  ``EventValidator.validate`` and the key check), (3) ``load`` = ``Slot.load`` (the
  state's bytes decoded, once per customer and batch), (4) ``logic`` =
  ``CustomerLogic.on_event`` / ``on_timer``, (5) ``dump`` = ``journey.encode_state``,
  (6) ``render`` the triggers, (7) ``encode`` the outputs (email requests, outcomes,
  ClickHouse rows: :mod:`udfs.core.contract`), counters and the :class:`Step`, (8)
  ``batch``: collecting each entry's outputs and store rows, then the result (one store
  element per shard, the changed states and timers) and its MessagePack encoding.

Every figure is per input event (timers' work counts too). Each reading of the clock costs
time that lands in the interval it closes: that cost, measured before each run, is
subtracted once per interval. A step the firewall catches counts in no stage (the generated
events cause none). Wall-clock intervals also count the time other processes take the core
away: on a busy machine, compare the two "thread CPU" rows (the thread's CPU time inside
each call, ``time.thread_time_ns``, read once per batch), which that leaves alone. Both
paths must produce the same outputs (``tests/unit/test_bench_pure.py`` compares them), so
the stage split cannot silently drift from the real path.

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
from udfs.core import batch as batch_module
from udfs.core import contract
from udfs.core.batch import (
    ENTRY_FIELDS,
    EVENT,
    TIMER,
    Batch,
    Entry,
    Result,
    decode_result,
    encode_batch,
    encode_result,
)
from udfs.core.contract import Kind, Routed
from udfs.core.customer import CustomerCore, Slot, Step

log = logging.getLogger("inboxflow")

EVENTS: Final = 200_000
EVENTS_QUICK: Final = 20_000
STAGES: Final = (
    "decode",
    "validate",
    "load",
    "logic",
    "dump",
    "render",
    "encode",
    "batch",
)
STAGE_LABELS: Final = {
    "decode": "1 decode batch payload (msgpack)",
    "validate": "2 parse + validate + normalize",
    "load": "3 load state (decode_state)",
    "logic": "4 journey logic (events + timers)",
    "dump": "5 dump state (encode_state)",
    "render": "6 render triggers",
    "encode": "7 encode outputs (contract)",
    "batch": "8 collect + encode batch result",
}
_STEP_STAGES: Final = ("load", "logic", "dump", "render", "encode")
MIN_WATERMARK: Final = -(2**63)  # Flink's watermark before the first one (Long.MIN_VALUE)
NO_TIME: Final = -(2**63)  # BatchCustomerOperator's time of an event without one
_ns = time.perf_counter_ns
_cpu_ns = time.thread_time_ns  # CPU time of this thread: what a busy machine leaves alone
# what Batch.run_payload decodes with: the staged copy must decode the same way
_PAYLOAD_DECODER: Final = batch_module._DECODER

# One batch through a path: (watermark, entries, states) -> the applied Result.
Process = Callable[[int, list[Entry], dict[str, bytes | None]], Result]


class Input(NamedTuple):
    """One event as the customer operator receives it."""

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


def shipped_batch_events() -> int:
    """``processing.batch_events`` of the shipped config."""
    from job.config import load_config

    return load_config(env={}).processing.batch_events


@dataclass
class Tally:
    """What came out: Kafka records by kind, ClickHouse rows, timers fired, and the calls
    into Python (batches of events, batches of timers only)."""

    requests: int = 0
    outcomes: int = 0
    dlq: int = 0
    store_rows: int = 0
    timers: int = 0
    batches: int = 0
    timer_batches: int = 0


class Subtask:
    """``BatchCustomerOperator`` of one subtask around a ``process`` call per batch: keyed
    state (``bytes`` per customer), event-time timers, the watermark, the batches; a
    :class:`Result` applied as the operator applies it."""

    def __init__(self, bound_ms: int, batch_events: int, keep: bool = False) -> None:
        if batch_events < 1:
            raise ValueError(f"batch_events must be >= 1, got {batch_events}")
        self.bound_ms = bound_ms
        self.batch_events = batch_events
        self.state: dict[str, bytes] = {}
        self.timers: dict[str, set[int]] = {}  # registered event-time timers per key
        self.heap: list[tuple[int, str]] = []  # (due, key); deleted timers stay until popped
        self.newest: int | None = None
        self.watermark = MIN_WATERMARK  # the timer service's current watermark
        self.entries: list[Entry] = []  # the batch
        self.states: dict[str, bytes | None] = {}  # its customers' state, read when first named
        self.tally = Tally()
        self.outputs: list[Routed] | None = [] if keep else None

    def saw(self, event_time: int | None) -> None:
        if event_time is not None and (self.newest is None or event_time > self.newest):
            self.newest = event_time

    def bounded_watermark(self) -> int:
        """What the bounded-out-of-orderness generator would emit now."""
        return MIN_WATERMARK if self.newest is None else self.newest - self.bound_ms - 1

    def append(self, entry: Entry, process: Process) -> None:
        """``BatchCustomerOperator.append``: the customer's state the first time the batch
        names it; the batch applied once it holds ``batch_events`` entries."""
        key = entry[1]
        if key not in self.states:
            self.states[key] = self.state.get(key)
        self.entries.append(entry)
        if len(self.entries) >= self.batch_events:
            self.flush(process)

    def flush(self, process: Process) -> bool:
        """The batch applied, if any; True when it held anything."""
        entries, states = self.entries, self.states
        if not entries:
            return False
        self.entries, self.states = [], {}
        self.tally.batches += 1
        if all(entry[0] == TIMER for entry in entries):
            self.tally.timer_batches += 1
        self.apply(process(self.watermark, entries, states))
        return True

    def advance(self, mark: int, process: Process) -> None:
        """``BatchCustomerOperator.processWatermark``: flush, then let the watermark fire
        its due timers and flush those, until a flush leaves nothing due. (A watermark that
        does not move is never emitted.)"""
        self.flush(process)
        if mark <= self.watermark:
            return
        self.watermark = mark
        while True:
            for ts, key in self.due(mark):
                self.append((TIMER, key, ts, None, 0), process)
            if not self.flush(process):
                return

    def due(self, watermark: int) -> Iterator[tuple[int, str]]:
        """Timers at or before ``watermark``, in time order, each removed before it fires
        (a timer a flush registers meanwhile fires in the same pass if it is due)."""
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            ts, key = heapq.heappop(heap)
            registered = self.timers.get(key)
            if registered and ts in registered:
                registered.discard(ts)
                self.tally.timers += 1
                yield ts, key

    def apply(self, result: Result) -> None:
        """``BatchCustomerOperator.apply``: states, timers (delete, then register), then
        the outputs in order."""
        for key, blob in result.states:
            if blob is None:
                self.state.pop(key, None)
            else:
                self.state[key] = blob
        for key, delete, register in result.timers:
            if delete is not None and key in self.timers:
                self.timers[key].discard(delete)
            if register is not None:
                registered = self.timers.setdefault(key, set())
                if register not in registered:
                    registered.add(register)
                    heapq.heappush(self.heap, (register, key))
        tally = self.tally
        for out in result.outputs:
            kind = out[0]
            if kind == Kind.REQUEST:
                tally.requests += 1
            elif kind == Kind.OUTCOME:
                tally.outcomes += 1
            elif kind == Kind.DLQ:
                tally.dlq += 1
            elif kind == Kind.STORE:
                tally.store_rows += contract.count_store_rows(out[3])
        if self.outputs is not None:
            self.outputs.extend(result.outputs)


@dataclass
class Run:
    """One pass over the events: ns and timed intervals per stage (or ``batch_call``), and
    ``cpu``: the thread's CPU time inside the calls (no clock cost subtracted); the wall
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
    sub: Subtask, events: Sequence[Input], clock: Callable[[], int], process: Process
) -> int:
    """The stand-in for Flink around one path: events appended in arrival order (the Kafka
    record time is the wall clock when the event arrives), the watermark moved after each
    full batch of events, and to the end at the end of the input; returns the wall ns of the
    whole loop (the JVM's work included: payloads, answers, state, timers)."""
    started = _ns()
    size = sub.batch_events
    for i, (key, text, event_time) in enumerate(events, 1):
        sub.saw(event_time)
        time_ms = NO_TIME if event_time is None else event_time
        sub.append((EVENT, key, time_ms, text, clock()), process)  # flushes a full batch
        if i % size == 0:
            sub.advance(sub.bounded_watermark(), process)
    sub.advance(MAX_WATERMARK, process)  # the end of a bounded input
    return _ns() - started


def run_batch(
    batch: Batch,
    events: Sequence[Input],
    bound_ms: int,
    batch_events: int,
    clock: Callable[[], int] = wall_ms,
    keep: bool = False,
) -> Run:
    """``Batch.run_payload`` as is, as ``BatchCustomerOperator`` calls it;
    ``ns["batch_call"]``: time inside the calls (the payload built before, the answer read
    after: the JVM's work, not timed), ``ns["cpu"]`` the thread's CPU time in them."""
    sub = Subtask(bound_ms, batch_events, keep)
    overhead = clock_overhead_ns()
    ns, cpu = _ns, _cpu_ns
    spent = {"batch_call": 0, "cpu": 0}
    calls = {"batch_call": 0, "cpu": 0}  # no clock cost subtracted from the CPU time

    def process(watermark: int, entries: list[Entry], states: dict[str, bytes | None]) -> Result:
        payload = encode_batch(watermark, entries, states)
        now = clock()
        c0 = cpu()
        t0 = ns()
        answer = batch.run_payload(payload, now)
        t1 = ns()
        spent["cpu"] += cpu() - c0
        spent["batch_call"] += t1 - t0
        calls["batch_call"] += 1
        return decode_result(answer)

    wall = _drive(sub, events, clock, process)
    return Run(len(events), spent, calls, wall, overhead, sub.tally, sub)


def run_staged(
    batch: Batch,
    events: Sequence[Input],
    bound_ms: int,
    batch_events: int,
    clock: Callable[[], int] = wall_ms,
    keep: bool = False,
) -> Run:
    """The same batches through :func:`staged_run_payload`, ns per stage."""
    sub = Subtask(bound_ms, batch_events, keep)
    overhead = clock_overhead_ns()
    acc = dict.fromkeys((*STAGES, "cpu"), 0)
    intervals = dict.fromkeys((*STAGES, "cpu"), 0)
    cpu = _cpu_ns

    def process(watermark: int, entries: list[Entry], states: dict[str, bytes | None]) -> Result:
        payload = encode_batch(watermark, entries, states)
        now = clock()
        c0 = cpu()
        answer = staged_run_payload(batch, payload, now, acc, intervals)
        acc["cpu"] += cpu() - c0
        return decode_result(answer)

    wall = _drive(sub, events, clock, process)
    steps = acc.pop("_steps", 0)  # stages 3-7 are timed once per step that succeeded
    for stage in _STEP_STAGES:
        intervals[stage] = steps
    return Run(len(events), acc, intervals, wall, overhead, sub.tally, sub)


def staged_run_payload(
    batch: Batch,
    payload: bytes,
    now: int,
    acc: dict[str, int],
    intervals: dict[str, int],
) -> bytes:
    """``batch.run_payload(payload, now)`` (``Batch.run`` inlined), step for step, adding
    the ns of each stage to ``acc`` and the intervals timed to ``intervals``."""
    ns = _ns
    core = batch.core
    t0 = ns()
    # Batch.run_payload
    watermark, flat, state_pairs = _PAYLOAD_DECODER.decode(payload)
    entries = zip(*[iter(flat)] * ENTRY_FIELDS, strict=True)
    pairs = iter(state_pairs)
    states: dict[str, bytes | None] = dict(zip(pairs, pairs, strict=True))
    # Batch.run from here
    slots = {key: Slot(blob) for key, blob in states.items()}
    t1 = ns()
    acc["decode"] += t1 - t0
    outputs: list[Routed] = []
    store: dict[int, list[str]] = {}
    latency = batch.latency
    collect = validate = count = events = 0
    for kind, key, time_ms, text, kafka_ts in entries:
        ta = ns()
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = Slot(None)
        step: dict[str, Any] | Step
        if kind == EVENT:
            if text is None:
                text = ""
            if kafka_ts > 0:
                latency.append(now - kafka_ts)
            tb = ns()
            step = core.validate(key, text, now)
            tc = ns()
            collect += tb - ta
            validate += tc - tb
            events += 1
            if type(step) is not Step:
                step = staged_step(core, slot, step, text, key, watermark, kafka_ts, now, acc)
        else:
            collect += ns() - ta
            step = staged_step(core, slot, None, "", key, time_ms, None, now, acc)
        td = ns()
        outputs += step.outputs
        if step.store is not None:
            shard, rows = step.store
            store.setdefault(shard, []).append(rows)
        collect += ns() - td
        count += 1
    te = ns()
    batch.profile_rows(slots, outputs, store, now)  # counted as encode outputs (stage 7)
    tp = ns()
    acc["encode"] += tp - te
    answer = encode_result(batch.result(slots, outputs, store))
    tf = ns()
    acc["batch"] += collect + tf - tp
    acc["validate"] += validate
    intervals["decode"] += 1
    intervals["validate"] += events
    intervals["batch"] += 2 * count + 1
    return answer


def staged_step(
    core: CustomerCore,
    slot: Slot,
    event: dict[str, Any] | None,
    text: str,
    key: str,
    time_ms: int,
    kafka_ts: int | None,
    now: int,
    acc: dict[str, int],
) -> Step:
    """``core.on_event(event, text, slot, time_ms, kafka_ts, now)`` (``event`` given,
    ``time_ms`` the watermark) or ``core.on_timer(key, time_ms, slot, now)`` (``event``
    None), step for step, adding the ns of each stage to ``acc`` (and 1 to
    ``acc["_steps"]``) when it succeeds."""
    try:
        t0 = _ns()
        state = slot.load()
        t1 = _ns()
        if event is not None:
            d = core.logic.on_event(state, event, time_ms)
        else:
            d = core.logic.on_timer(state, time_ms)
        t2 = _ns()
        # CustomerCore._step from here, stage by stage
        blob = core._dump(state)
        t3 = _ns()
        rendered = [core._try_render(trigger, now) for trigger in d.triggers]
        t4 = _ns()
        step = core._encode(d, rendered, kafka_ts, now)
        core._keep(slot, blob, d, kafka_ts)
        t5 = _ns()
    except Exception as exc:  # noqa: BLE001 - the core's firewall, as on_event / on_timer
        slot.state = None  # the logic may have changed it: start again from the blob
        if event is not None:
            return core._event_failed(event["customer_id"], text, event, exc, now)
        return core._timer_failed(key, time_ms, slot, exc, now)
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


def measure(
    events: int = EVENTS, runs: int = 3, store: bool = True, batch_events: int | None = None
) -> dict[str, Any]:
    """Median of ``runs`` of each path (the paths alternate, fresh core each run);
    ``batch_events``: None for the shipped config's."""
    size = shipped_batch_events() if batch_events is None else batch_events
    print(
        f"pure path: generating {events:,} events ({CUSTOMERS:,} customers, seed {SEED}), "
        f"batches of {size:,} ..."
    )
    data = inputs(events)
    staged: list[Run] = []
    batch_runs: list[Run] = []
    with _quiet_core_logs():
        for i in range(runs):
            for path, out in ((run_staged, staged), (run_batch, batch_runs)):
                core, bound = new_core(store)
                gc.collect()  # the previous run's garbage is not this run's cost
                run = path(Batch(core), data, bound, size)
                # its state would make every later run's full collections slower
                run.subtask = None
                out.append(run)
            s, b = staged[-1], batch_runs[-1]
            print(
                f"  run {i + 1}/{runs}: staged {_sum_us(s):.2f} µs/event, "
                f"batch {b.us_per_event('batch_call'):.2f} µs/event",
                flush=True,
            )
    first = staged[0].tally
    same = all(r.tally == first for r in staged + batch_runs)
    summary: dict[str, Any] = {
        "events": events,
        "runs": runs,
        "seed": SEED,
        "customers": CUSTOMERS,
        "store": store,
        "batch_events": size,
        "clock_overhead_ns": statistics.median(r.overhead_ns for r in staged + batch_runs),
        "stages_us": {
            stage: statistics.median(r.us_per_event(stage) for r in staged) for stage in STAGES
        },
        "stage_sum_us": statistics.median(_sum_us(r) for r in staged),
        "staged_wall_us": statistics.median(r.wall_ns / r.events / 1000 for r in staged),
        "batch_us": statistics.median(r.us_per_event("batch_call") for r in batch_runs),
        "batch_wall_us": statistics.median(r.wall_ns / r.events / 1000 for r in batch_runs),
        "staged_cpu_us": statistics.median(r.us_per_event("cpu") for r in staged),
        "batch_cpu_us": statistics.median(r.us_per_event("cpu") for r in batch_runs),
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
        f"pure batched path (no Flink, no Kafka) — {date} — {s['events']:,} events "
        f"(seed {s['seed']}, {s['customers']:,} customers), batches of {s['batch_events']:,}, "
        f"store {'on' if s['store'] else 'off'}, 1 core — median of {s['runs']}",
        f"{'stage':<40} {'µs/event':>9} {'events/s':>9}",
    ]
    for stage in STAGES:
        us = s["stages_us"][stage]
        lines.append(f"{STAGE_LABELS[stage]:<40} {us:>9.2f} {_per_s(us)}")
    lines.append(f"{'stage sum':<40} {s['stage_sum_us']:>9.2f} {_per_s(s['stage_sum_us'])}")
    lines.append(
        f"{'Batch.run_payload as is (inside calls)':<40} {s['batch_us']:>9.2f} "
        f"{_per_s(s['batch_us'])}"
    )
    for label, key in (
        ("Batch.run_payload as is, thread CPU", "batch_cpu_us"),
        ("staged, thread CPU (+ readings)", "staged_cpu_us"),
        ("staged loop, wall (+ readings, JVM part)", "staged_wall_us"),
        ("run_payload loop, wall (+ JVM part)", "batch_wall_us"),
    ):
        lines.append(f"{label:<40} {s[key]:>9.2f} {_per_s(s[key])}")
    lines.append(
        f"outputs: {t['requests']:,} requests, {t['outcomes']:,} outcomes, {t['dlq']:,} DLQ, "
        f"{t['store_rows']:,} ClickHouse rows, {t['timers']:,} timers fired, "
        f"{t['batches']:,} batches ({t['timer_batches']:,} of timers)"
        f"{'' if s['same_outputs_count'] else ' — PATHS DIFFER'}; clock reading "
        f"{s['clock_overhead_ns']:.0f} ns, subtracted per interval"
    )
    return "\n".join(lines)


def main_pure(events: int, runs: int, store: bool = True, batch_events: int | None = None) -> int:
    """Measure, print the table, write ``bench/results/pure.json``; 1 when the paths
    disagree."""
    date = dt.datetime.now().astimezone().date().isoformat()
    summary = measure(events, runs, store, batch_events)
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
    p.add_argument(
        "--batch-events",
        type=int,
        default=None,
        help="entries per batch (default: processing.batch_events of conf/job.yaml)",
    )
    p.add_argument("--no-store", action="store_true", help="no ClickHouse rows")
    args = p.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        p.error("need --events >= 1 and --runs >= 1")
    if args.batch_events is not None and args.batch_events < 1:
        p.error("need --batch-events >= 1")
    return main_pure(
        args.events, args.runs, store=not args.no_store, batch_events=args.batch_events
    )


if __name__ == "__main__":
    sys.exit(main())
