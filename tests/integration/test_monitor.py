"""job.monitor against a real mini-cluster: a task that fails on every attempt restarts
under the shipped restart strategy, and the monitor reports it (the "0 restarts" that the
job-level tests assert would catch a restart loop)."""

from __future__ import annotations

import logging
import time

import pytest

from job.main import create_env, flink_settings, with_rest_endpoint
from job.monitor import JobMonitor, log_restart


def test_monitor_reports_the_restarts_of_a_task_that_always_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pyflink.common import Types

    settings, rest_url = with_rest_endpoint(flink_settings(overrides={"parallelism.default": "1"}))
    settings.pop("execution.checkpointing.interval", None)
    assert settings["restart-strategy.type"] == "exponential-delay"  # the shipped one
    env = create_env(settings)

    def fail_on_three(value: int) -> int:
        if value == 3:
            raise ValueError("poison")
        return value

    env.from_collection([1, 2, 3, 4], type_info=Types.INT()).map(
        fail_on_three, output_type=Types.INT()
    ).print()
    client = env.execute_async("restart-loop")
    monitor = JobMonitor(rest_url, str(client.get_job_id()))
    seen: list[tuple[int, list]] = []
    try:
        deadline = time.monotonic() + 90
        with caplog.at_level(logging.ERROR, logger="inboxflow"):
            status = monitor.wait_until_terminal(
                interval_s=0.5,
                on_restart=lambda n, new: (seen.append((n, new)), log_restart(n, new)),
                stop=lambda: any(new for _, new in seen) or time.monotonic() > deadline,
            )
        restarts = None
        while restarts is None or restarts < 2:
            assert time.monotonic() < deadline, f"numRestarts stayed at {restarts}"
            restarts = monitor.restarts()
            time.sleep(0.5)
        failures = monitor.failures()  # before the cancel: the mini-cluster goes with the job
    finally:
        client.cancel().result()

    assert status not in ("FINISHED", "FAILED")  # it kept restarting
    assert seen[0][0] >= 1 and any(new for _, new in seen)
    assert len(failures) >= 1
    assert all("PythonException" in f.exception or "ValueError" in f.summary for f in failures), (
        failures
    )
    assert "JOB RESTART #" in caplog.text and ": task " in caplog.text
    assert f"failed with {failures[0].exception}" in caplog.text
