"""Savepoints on the real standalone cluster: the packaged job, submitted with ``inboxflow
submit`` at parallelism 2, is stopped with ``inboxflow stop --savepoint`` while reminders are
pending; the journey timings change in its config; it is submitted again from the savepoint
at parallelism 1. The pending reminders fire per the new timing, exactly once, and profiles,
carts and the dedup memory carry over (the story: ``TimingChangeStory`` in
tests/e2e/test_resume.py, where the local mini-cluster plays it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from tests.cluster.conftest import TestCluster
from tests.e2e.test_resume import WAIT_S, Scenario, TimingChangeStory, run_phases, wait_for_requests
from tests.factories import ROOT

pytestmark = pytest.mark.slow


def stop_with_savepoint(cluster: TestCluster, job_id: str, target: Path) -> str:
    """``inboxflow stop JOB_ID --savepoint`` against the cluster's REST API; the savepoint's
    location once the job has finished."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "job.cli",
            "stop",
            job_id,
            "--savepoint",
            "--rest",
            cluster.rest_url,
            "--dir",
            str(target),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + WAIT_S
    while (state := cluster.job(job_id)["state"]) != "FINISHED":
        assert time.monotonic() < deadline, f"job {job_id} is {state} after the stop"
        time.sleep(0.5)
    return done.stdout.strip()


def test_stop_with_savepoint_change_timing_resume_at_parallelism_1_on_the_cluster(
    cluster: TestCluster, broker: TansuBroker, tmp_path: Path
) -> None:
    if sum(t["slots"] for t in cluster.status()["taskmanagers"]) < 2:
        cluster.reshape(1, 2)
    sc = Scenario(broker, tmp_path)
    story = TimingChangeStory(sc)
    before = story.before_stop()
    reader = sc.reader()
    flink_conf = ["--flink-conf", str(sc.flink_conf)]
    job_id = None
    try:
        job_id = cluster.submit(
            sc.config("a", story.JOURNEY_A), parallelism=2, extra_args=flink_conf
        )
        cluster.wait_running(job_id, timeout_s=WAIT_S)
        assert {v["parallelism"] for v in cluster.job(job_id)["vertices"]} == {2}
        wait_for_requests(
            reader,
            sc.topics["requests"],
            before,
            cluster.alive(job_id),
            "the reminders due before the stop",
        )
        savepoint = stop_with_savepoint(cluster, job_id, tmp_path / "stop")
        assert (Path(savepoint.removeprefix("file:")) / "_metadata").is_file()

        # `inboxflow submit --parallelism 1` is `flink run -p 1`: under flink run the job
        # leaves the parallelism to it, not to parallelism.default of --flink-conf
        job_id = cluster.submit(
            sc.config("b", story.JOURNEY_B),
            parallelism=1,
            savepoint=savepoint,
            extra_args=flink_conf,
        )
        cluster.wait_running(job_id, timeout_s=WAIT_S)
        assert {v["parallelism"] for v in cluster.job(job_id)["vertices"]} == {1}
        run_phases(story, reader, before, cluster.alive(job_id))
        story.check_carried_state(reader)
    except BaseException:
        print(cluster.log_tail(40))
        raise
    finally:
        reader.close()
        if job_id is not None and cluster.job(job_id)["state"] == "RUNNING":
            cluster.cancel(job_id)
