"""Pure helpers of ``bench.run``: the order of the runs and the paired store-on/off ratios."""

from __future__ import annotations

import pytest

from bench.run import TINY_EVENTS, Plan, _runs, paired_ratios


def plan(runs: int, measurements: tuple[str, ...]) -> Plan:
    return Plan(
        events=10_200,
        runs=runs,
        rate=1000,
        live_seconds=10,
        clock_seconds=5,
        measurements=measurements,
        quick=False,
    )


def test_store_off_and_on_runs_of_one_parallelism_are_made_one_after_the_other():
    names = [name for _, name, _, _ in _runs(plan(2, ("throughput", "store")), "b", {}, {})]
    assert names == [
        "throughput-p1-tiny-1",
        "throughput-p1-1",
        "store-p1-tiny-1",
        "store-p1-1",
        "throughput-p2-tiny-1",
        "throughput-p2-1",
        "store-p2-tiny-1",
        "store-p2-1",
        "throughput-p1-tiny-2",
        "throughput-p1-2",
        "store-p1-tiny-2",
        "store-p1-2",
        "throughput-p2-tiny-2",
        "throughput-p2-2",
        "store-p2-tiny-2",
        "store-p2-2",
    ]


def test_only_the_measurements_asked_for_are_run():
    runs = list(_runs(plan(1, ("store",)), "b", {}, {}))
    assert [name for _, name, _, _ in runs] == [
        "store-p1-tiny-1",
        "store-p1-1",
        "store-p2-tiny-1",
        "store-p2-1",
    ]
    assert all(spec["store"] for _, _, spec, _ in runs)


def test_paired_ratios_adjust_each_run_by_its_own_tiny_run_and_skip_failed_pairs():
    events = 10_000 + TINY_EVENTS

    def run(seconds):
        return {"seconds": seconds}

    off = [run(12.0), run(22.0), run(11.0)]
    off_tiny = [run(2.0), run(2.0), run(1.0)]
    on = [run(14.5), run(27.0), {"error": "timed out"}]
    on_tiny = [run(2.0), run(2.0), run(1.0)]
    # pair 1: 10,000/10 vs 10,000/12.5 = 80 %; pair 2: /20 vs /25 = 80 %; pair 3 failed
    assert paired_ratios(off, off_tiny, on, on_tiny, events) == pytest.approx([0.8, 0.8])
