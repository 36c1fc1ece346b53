"""bench.pure: the stage-split batch path must produce exactly what ``Batch.run_payload`` as is
produces on the same batches, and every stage gets a figure."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench import pure
from bench.run import MEASUREMENTS, parse_args
from udfs.core.batch import Batch

NOW = 1_800_000_000_000  # a fixed wall clock: both paths' outputs are then byte for byte equal
EVENTS = 3000
CUSTOMERS = 60


@pytest.fixture(scope="module")
def events() -> list[pure.Input]:
    # few customers and more malformed records than the bench's stream, so that a few
    # thousand events send reminders, fire timers, fill the DLQ, and a batch holds several
    # events of one customer
    return pure.inputs(EVENTS, customers=CUSTOMERS, malformed_ratio=0.05)


def _both(events: list[pure.Input], batch_events: int) -> dict[str, Any]:
    with pure._quiet_core_logs():
        real, bound = pure.new_core()
        real_batch = Batch(real)
        batch_run = pure.run_batch(
            real_batch, events, bound, batch_events, clock=lambda: NOW, keep=True
        )
        split, bound = pure.new_core()
        split_batch = Batch(split)
        staged_run = pure.run_staged(
            split_batch, events, bound, batch_events, clock=lambda: NOW, keep=True
        )
    return {
        "batch": batch_run,
        "staged": staged_run,
        "real": (real.counts, real.labeled, real.lateness, real_batch.latency),
        "split": (split.counts, split.labeled, split.lateness, split_batch.latency),
    }


# the shipped batch size (whole batches of events, few timer batches), and a small one: a
# watermark's timers then fill several batches, flushed while the watermark fires them
@pytest.fixture(scope="module", params=[None, 7], ids=["shipped", "small"])
def runs(request, events: list[pure.Input]) -> dict[str, Any]:
    size = pure.shipped_batch_events() if request.param is None else request.param
    return {"size": size, **_both(events, size)}


def test_the_events_exercise_batches(events: list[pure.Input], runs) -> None:
    """Several events of one customer in one batch (a slot carries the state from one to
    the next), timers fired in batches of their own."""
    size = runs["size"]
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    assert any(
        max(Counter(e.key for e in chunk if e.key).values(), default=0) > 1 for chunk in chunks
    )
    t = runs["batch"].tally
    assert t.batches > len(chunks) and t.timer_batches > 0


def test_the_staged_path_produces_what_run_payload_produces(runs) -> None:
    batch_run, staged_run = runs["batch"], runs["staged"]
    t = batch_run.tally
    # the comparison means something: every kind of output occurs
    assert t.requests > 0 and t.outcomes > 0 and t.dlq > 0 and t.store_rows > 0 and t.timers > 0
    assert staged_run.tally == t
    assert staged_run.subtask.outputs == batch_run.subtask.outputs
    assert staged_run.subtask.state == batch_run.subtask.state
    assert staged_run.subtask.timers == batch_run.subtask.timers
    assert runs["split"] == runs["real"]  # counters, labeled counters, lateness, latency


def test_every_stage_has_a_non_negative_figure(runs) -> None:
    batch_run, staged_run = runs["batch"], runs["staged"]
    for stage in pure.STAGES:
        assert staged_run.intervals[stage] > 0
        assert staged_run.us_per_event(stage) >= 0
    assert staged_run.intervals["validate"] == staged_run.events
    assert staged_run.intervals["decode"] == staged_run.tally.batches
    assert batch_run.intervals["batch_call"] == batch_run.tally.batches
    assert batch_run.us_per_event("batch_call") >= 0
    assert batch_run.ns["cpu"] > 0 and staged_run.ns["cpu"] > 0  # thread CPU time in the calls


def test_dlq_count_is_the_events_validation_rejects(events: list[pure.Input], runs) -> None:
    """An independent count: no processing errors in generated events, so one DLQ record per
    event ``CustomerCore.validate`` rejects."""
    core, _ = pure.new_core()
    with pure._quiet_core_logs():
        invalid = sum(1 for e in events if type(core.validate(e.key, e.text, NOW)) is pure.Step)
    assert runs["staged"].tally.dlq == runs["batch"].tally.dlq == invalid > 0


def test_every_timer_fires_by_the_end(runs) -> None:
    """The last watermark fires whatever is registered: no timer is left."""
    sub = runs["batch"].subtask
    assert not any(sub.timers.values())
    assert not sub.entries


def test_measure_and_its_table() -> None:
    summary = pure.measure(events=200, runs=1)
    assert set(summary["stages_us"]) == set(pure.STAGES)
    assert summary["same_outputs_count"]
    assert summary["batch_events"] == pure.shipped_batch_events()
    table = pure.format_table(summary, "2026-12-01")
    for label in pure.STAGE_LABELS.values():
        assert label in table
    assert pure.measure(events=50, runs=1, batch_events=5)["batch_events"] == 5


def test_pure_runs_first_and_alone() -> None:
    assert MEASUREMENTS[0] == "pure"
    args = parse_args(["--only", "pure", "--pure-events", "1000"])
    assert args.only == "pure" and args.pure_events == 1000
