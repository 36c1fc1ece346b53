"""bench.pure: the stage-split per-event path must produce exactly what ``CustomerCore`` as is
produces on the same events, and every stage gets a figure."""

from __future__ import annotations

import pytest

from bench import pure
from bench.run import MEASUREMENTS, parse_args

NOW = 1_800_000_000_000  # a fixed wall clock: both paths' outputs are then byte for byte equal


@pytest.fixture(scope="module")
def events() -> list[pure.Input]:
    # few customers and more malformed records than the bench's stream, so that ~300 events
    # still send reminders, fire timers and fill the DLQ
    return pure.inputs(300, customers=40, malformed_ratio=0.05)


@pytest.fixture(scope="module")
def runs(events: list[pure.Input]) -> tuple[pure.Run, pure.Run, tuple, tuple]:
    with pure._quiet_core_logs():
        real, bound = pure.new_core()
        core_run = pure.run_core(real, events, bound, clock=lambda: NOW, keep=True)
        split, bound = pure.new_core()
        staged_run = pure.run_staged(split, events, bound, clock=lambda: NOW, keep=True)
    return (
        core_run,
        staged_run,
        (real.counts, real.labeled, real.lateness),
        (split.counts, split.labeled, split.lateness),
    )


def test_the_staged_path_produces_what_customer_core_produces(runs) -> None:
    core_run, staged_run, real, split = runs
    t = core_run.tally
    # the comparison means something: every kind of output occurs
    assert t.requests > 0 and t.outcomes > 0 and t.dlq > 0 and t.store_rows > 0 and t.timers > 0
    assert (staged_run.tally.requests, staged_run.tally.outcomes, staged_run.tally.dlq) == (
        t.requests,
        t.outcomes,
        t.dlq,
    )
    assert staged_run.tally == t
    assert staged_run.subtask.outputs == core_run.subtask.outputs
    assert staged_run.subtask.state == core_run.subtask.state
    assert split == real  # counters, labeled counters, lateness samples


def test_every_stage_has_a_non_negative_figure(runs) -> None:
    core_run, staged_run, _, _ = runs
    for stage in pure.STAGES:
        assert staged_run.intervals[stage] > 0
        assert staged_run.us_per_event(stage) >= 0
    assert staged_run.intervals["validate"] == staged_run.events
    assert core_run.us_per_event("core") >= 0


def test_dlq_count_is_the_events_validation_rejects(events: list[pure.Input], runs) -> None:
    """An independent count: no processing errors in generated events, so one DLQ record per
    event ``CustomerCore.validate`` rejects."""
    core, _ = pure.new_core()
    with pure._quiet_core_logs():
        invalid = sum(1 for e in events if type(core.validate(e.key, e.text, NOW)) is pure.Step)
    assert runs[1].tally.dlq == runs[0].tally.dlq == invalid > 0


def test_measure_and_its_table() -> None:
    summary = pure.measure(events=200, runs=1)
    assert set(summary["stages_us"]) == set(pure.STAGES)
    assert summary["same_outputs_count"]
    table = pure.format_table(summary, "2026-12-01")
    for label in pure.STAGE_LABELS.values():
        assert label in table


def test_pure_runs_first_and_alone() -> None:
    assert MEASUREMENTS[0] == "pure"
    args = parse_args(["--only", "pure", "--pure-events", "1000"])
    assert args.only == "pure" and args.pure_events == 1000
