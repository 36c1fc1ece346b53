"""Pure helpers of ``bench.run`` for the passthrough row: run order, expected record counts,
paired ratios, medians, the "× passthrough" figures and their n/a cases."""

from __future__ import annotations

import pytest

from bench.run import (
    MEASUREMENTS,
    PASSTHROUGH_TARGETS,
    TINY_EVENTS,
    Plan,
    _runs,
    format_ratio,
    format_table,
    format_times,
    paired_rate_ratios,
    paired_ratios,
    parse_args,
    rate_ratio,
    ratio_summary,
    records_below,
    summarize_runs,
)

EVENTS = 10_000 + TINY_EVENTS


def plan(runs: int, measurements: tuple[str, ...]) -> Plan:
    return Plan(
        events=EVENTS,
        runs=runs,
        rate=1000,
        live_seconds=10,
        clock_seconds=5,
        measurements=measurements,
        quick=False,
    )


def run(seconds: float, **extra) -> dict:
    return {"seconds": seconds, **extra}


FAILED = {"error": "exit code 1"}


def test_passthrough_is_a_measurement_that_only_accepts():
    assert "passthrough" in MEASUREMENTS
    assert parse_args(["--only", "passthrough,throughput"]).only == "passthrough,throughput"
    assert parse_args([]).runs == 3  # the passthrough too: it runs --runs times


def test_each_round_starts_with_the_passthrough_then_the_job_runs():
    names = [
        name for _, name, _, _ in _runs(plan(2, ("passthrough", "throughput")), "b", {0: 7}, {0: 1})
    ]
    assert names == [
        "passthrough-tiny-1",
        "passthrough-1",
        "throughput-p1-tiny-1",
        "throughput-p1-1",
        "throughput-p2-tiny-1",
        "throughput-p2-1",
        "passthrough-tiny-2",
        "passthrough-2",
        "throughput-p1-tiny-2",
        "throughput-p1-2",
        "throughput-p2-tiny-2",
        "throughput-p2-2",
    ]


def test_the_passthrough_reads_what_the_throughput_runs_read_and_expects_that_count():
    stops, tiny = {0: 5_000, 1: 5_200}, {0: 90, 1: 110}
    runs = {
        name: spec
        for _, name, spec, _ in _runs(
            plan(1, ("passthrough", "throughput")), "b", stops, tiny, (10_200, 200)
        )
    }
    full, small = runs["passthrough-1"], runs["passthrough-tiny-1"]
    assert full["stops"] == runs["throughput-p1-1"]["stops"] == stops
    assert small["stops"] == runs["throughput-p1-tiny-1"]["stops"] == tiny
    assert (full["expected"], small["expected"]) == (10_200, 200)
    assert full["parallelism"] == 1 and not full["store"]
    assert full["output_topic"] != small["output_topic"]
    # without counts: the plan's
    default = {n: s for _, n, s, _ in _runs(plan(1, ("passthrough",)), "b", stops, tiny)}
    assert default["passthrough-1"]["expected"] == EVENTS
    assert default["passthrough-tiny-1"]["expected"] == TINY_EVENTS


def test_records_below_counts_the_deliveries_under_the_stopping_offsets():
    deliveries = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    assert records_below(deliveries, {0: 3, 1: 2}) == 5
    assert records_below(deliveries, {0: 1, 1: 2}) == 3
    assert records_below(deliveries, {0: 1}) == 1  # a partition without a stop: nothing


def test_paired_rate_ratios_divide_run_i_by_run_i_and_skip_failed_pairs():
    job = [run(22.0), run(42.0), run(12.0)]
    job_tiny = [run(2.0), run(2.0), FAILED]
    floor = [run(4.0), run(12.0), run(3.0)]
    floor_tiny = [run(2.0), run(2.0), run(1.0)]
    # pair 1: 10,000/20 over 10,000/2 = 0.1; pair 2: /40 over /10 = 0.25; pair 3 failed
    assert paired_rate_ratios(job, job_tiny, floor, floor_tiny, EVENTS) == pytest.approx(
        [0.1, 0.25]
    )
    # the store on / store off ratios are the same computation
    assert paired_ratios(floor, floor_tiny, job, job_tiny, EVENTS) == pytest.approx([0.1, 0.25])
    assert paired_rate_ratios([], [], floor, floor_tiny, EVENTS) == []


def test_rate_ratio_is_none_when_a_rate_is_missing():
    assert rate_ratio(5.0, 10.0) == 0.5
    assert rate_ratio(None, 10.0) is None
    assert rate_ratio(5.0, None) is None
    assert rate_ratio(5.0, 0.0) is None


def test_ratio_summary_prefers_the_median_of_the_pairs_and_judges_it():
    r = ratio_summary([0.3, 0.6, 0.5], 0.45, 0.5)
    assert r["ratio"] == 0.5 and r["verdict"] == "ok"
    assert ratio_summary([0.4, 0.45], 0.6, 0.5)["ratio"] == pytest.approx(0.425)
    assert ratio_summary([0.4, 0.45], 0.6, 0.5)["verdict"] == "BELOW TARGET"
    assert ratio_summary([], 0.6, 0.5) | {"pairs": None} == {
        "ratio": 0.6,
        "of_medians": 0.6,
        "pairs": None,
        "target": 0.5,
        "verdict": "ok",
    }
    assert ratio_summary([], None, 0.5)["verdict"] == "n/a"
    assert ratio_summary([], 0.2)["verdict"] is None


def test_format_ratio_shows_the_target_the_pairs_or_n_a():
    assert format_times(0.1234) == "0.12×" and format_times(None) == "n/a"
    assert format_ratio(ratio_summary([0.12, 0.14, 0.13], 0.1, 0.5), "passthrough") == (
        "0.13× passthrough (target >= 0.50×: BELOW TARGET; runs in pairs: 0.12×, 0.14×, 0.13×)"
    )
    assert format_ratio(ratio_summary([], 0.2), "passthrough") == (
        "0.20× passthrough (ratio of the medians)"
    )
    assert format_ratio(ratio_summary([], None, 1.0), "p1") == "× p1 n/a (target >= 1.00×: n/a)"


def results_of(pt: list[dict], job_p1: list[dict], job_p2: list[dict]) -> dict[str, list[dict]]:
    tiny = [run(2.0)] * 3
    return {
        "passthrough": pt,
        "passthrough-tiny": tiny,
        "throughput-p1": job_p1,
        "throughput-p1-tiny": tiny,
        "throughput-p2": job_p2,
        "throughput-p2-tiny": tiny,
    }


def test_summary_and_table_give_every_job_row_against_the_passthrough():
    p = plan(3, ("passthrough", "throughput"))
    pt = [run(4.0, records_written=EVENTS), run(3.0, records_written=EVENTS), FAILED]
    # adjusted: passthrough 5,000 and 10,000 ev/s; p1 500, 400, 1,000; p2 1,000 each
    results = results_of(pt, [run(22.0), run(27.0), run(12.0)], [run(12.0), run(12.0), run(12.0)])
    summary = summarize_runs(p, results)
    assert summary["passthrough"]["runs"] == 2 and summary["passthrough"]["failed"] == 1
    assert summary["passthrough"]["events_per_s"] == pytest.approx(10_000 / 1.5)
    p1 = summary["throughput-p1"]["vs_passthrough"]
    assert p1["pairs"] == pytest.approx([0.1, 0.04])  # the third pair has a failed run
    assert p1["ratio"] == pytest.approx(0.07)
    assert p1["target"] == PASSTHROUGH_TARGETS["throughput-p1"] and p1["verdict"] == "BELOW TARGET"
    assert summary["throughput-p2"]["vs_passthrough"]["target"] is None
    vs_p1 = summary["throughput-p2"]["vs_p1"]
    assert vs_p1["pairs"] == pytest.approx([2.0, 2.5, 1.0]) and vs_p1["verdict"] == "ok"
    table = format_table(p, summary, "2026-12-01")
    assert "passthrough, Java only, p1" in table
    assert "0.07× passthrough (target >= 0.50×: BELOW TARGET" in table
    assert "2.00× p1 (target >= 1.00×: ok" in table


def test_failed_job_rows_show_n_a_and_the_table_still_prints():
    p = plan(2, ("passthrough", "throughput"))
    pt = [run(4.0, records_written=EVENTS), run(4.0, records_written=EVENTS)]
    summary = summarize_runs(p, results_of(pt, [FAILED, FAILED], [run(12.0), FAILED]))
    assert summary["throughput-p1"]["runs"] == 0
    assert summary["throughput-p1"]["events_per_s"] is None
    assert summary["throughput-p1"]["vs_passthrough"]["ratio"] is None
    assert summary["throughput-p2"]["vs_p1"]["verdict"] == "n/a"
    table = format_table(p, summary, "2026-12-01")
    assert "throughput, store off, p1" in table and "FAILED (every run" in table
    assert "× passthrough n/a (target >= 0.50×: n/a)" in table


def test_a_failed_passthrough_leaves_every_ratio_n_a():
    p = plan(1, ("passthrough", "throughput"))
    summary = summarize_runs(p, results_of([FAILED], [run(12.0)], [run(12.0)]))
    assert summary["passthrough"]["runs"] == 0
    assert summary["throughput-p1"]["vs_passthrough"]["ratio"] is None
    table = format_table(p, summary, "2026-12-01")
    assert "passthrough, Java only, p1" in table and "× passthrough n/a" in table


def test_without_the_passthrough_the_rows_have_no_ratio_to_it():
    p = plan(1, ("throughput",))
    results = results_of([], [run(12.0)], [run(12.0)])
    del results["passthrough"], results["passthrough-tiny"]
    summary = summarize_runs(p, results)
    assert "passthrough" not in summary and "vs_passthrough" not in summary["throughput-p1"]
    assert "passthrough" not in format_table(p, summary, "2026-12-01")


def test_cluster_rows_get_the_ratio_of_the_medians():
    p = plan(1, ("passthrough", "cluster"))
    cluster = {"parallelism": 2, "events_per_s": 2_500.0, "restarts": 0}
    results = {
        "passthrough": [run(4.0, records_written=EVENTS)],
        "passthrough-tiny": [run(2.0)],
        "cluster-2x1": [cluster],
        "cluster-1x2": [FAILED],
    }
    summary = summarize_runs(p, results)
    r = summary["cluster-2x1"]["vs_passthrough"]
    assert r["ratio"] == pytest.approx(0.5) and r["pairs"] == [] and r["verdict"] is None
    assert "cluster-1x2" not in summary
    assert "  0.50× passthrough (ratio of the medians)" in format_table(p, summary, "2026-12-01")
