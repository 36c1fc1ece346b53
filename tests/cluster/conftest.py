"""A real Flink standalone cluster for the tests of this package, made from the installed
PyFlink (``job/dev/cluster.py``), and the packaged job (``var/package``) that is submitted to it
with ``inboxflow submit``.

One JobManager runs for the package's tests and stops before the other tests run;
``cluster.reshape(taskmanagers, slots)`` swaps the TaskManagers between tests. Every JVM is
stopped by pid at the end (also when the session is interrupted), and the cluster home is
removed unless a test failed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from job.dev import cluster as flink_cluster
from job.dev.broker import TansuBroker
from job.ops import free_port
from tests.factories import ROOT, job_yaml

SESSIONS = ROOT / "var" / "flink-sessions"


class TestCluster(flink_cluster.Cluster):
    """:class:`job.dev.cluster.Cluster` whose ``submit`` goes through the ``inboxflow submit``
    command, as an operator would type it."""

    __test__ = False  # not a test class

    def submit(self, config: Path, **options: Any) -> str:
        """The same options as :meth:`job.dev.cluster.Cluster.submit`."""
        detached, parallelism = options.get("detached", True), options.get("parallelism")
        savepoint, extra_args = options.get("savepoint"), options.get("extra_args", ())
        cmd = [
            sys.executable,
            "-m",
            "job.cli",
            "submit",
            "--cluster",
            self.address,
            "--config",
            str(config),
            "--flink-home",
            str(self.home),
            "--package-dir",
            str(self.package_dir),
        ]
        if detached:
            cmd.append("--detached")
        if parallelism:
            cmd += ["--parallelism", str(parallelism)]
        if savepoint:
            cmd += ["--savepoint", savepoint]
        if extra_args:
            cmd += ["--", *extra_args]
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False
        )
        assert done.returncode == 0, f"inboxflow submit failed: {done.stderr[-4000:]}"
        job_id = done.stdout.strip().splitlines()[-1]
        assert len(job_id) == 32, done.stdout
        return job_id

    def alive(self, job_id: str):
        """The liveness check of :class:`tests.e2e.conftest.OutputReader` waits: raises
        ``JobFailed`` once the job is not RUNNING or has recorded a failure."""
        from tests.e2e.conftest import JobFailed

        def check() -> None:
            state = self.job(job_id)["state"]
            failures = self.exceptions(job_id)
            if state != "RUNNING" or failures:
                raise JobFailed(f"job {job_id} is {state}: {failures}")

        return check


def _sweep_dead_sessions() -> None:
    """Stops the JVMs of sessions that were killed before their teardown ran (their home is
    named after the pytest process) and removes their homes."""
    if not SESSIONS.is_dir():
        return
    for home in SESSIONS.iterdir():
        pid = home.name.split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            flink_cluster.stop_pids(home)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="package")
def cluster(request) -> Iterator[TestCluster]:
    _sweep_dead_sessions()
    flink_cluster.package()
    home = flink_cluster.session_home(SESSIONS, f"{os.getpid()}-{int(time.time())}")
    c = TestCluster(home=home, rest_port=free_port(), startup_timeout_s=180)
    atexit.register(c.down)  # an interrupted session must not leave JVMs behind
    c.up(taskmanagers=1, slots=2)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.down()
        atexit.unregister(c.down)
        if request.session.testsfailed == failed_before:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="package")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def write_job_config(path: Path, cfg_overrides: dict) -> Path:
    """The shipped ``conf/job.yaml`` with ``cfg_overrides`` merged over it, as a file for
    ``inboxflow submit --config``; their ``campaigns`` (those of :func:`cart_only`) become
    a campaigns file next to it."""
    from job.config import DEFAULT_CONFIG, _merge

    data = _merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), cfg_overrides)
    path.write_text(yaml.safe_dump(job_yaml(data, path.parent), sort_keys=False))
    return path


def write_flink_conf(path: Path, checkpoint_dir: Path, **overrides: str) -> Path:
    """The shipped ``flink-conf.yaml`` with checkpoints every 2 s (they make the Kafka sinks
    flush) into ``checkpoint_dir``, plus ``overrides``."""
    data = yaml.safe_load((ROOT / "flink-conf.yaml").read_text())
    data.update(
        {
            "execution.checkpointing.interval": "2s",
            "execution.checkpointing.dir": checkpoint_dir.as_uri(),
            **overrides,
        }
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def job_on_fresh_topics(
    broker: TansuBroker, tmp_path: Path, prefix: str, **overrides: dict
) -> tuple[dict[str, str], Path]:
    """(topics, config path): :func:`tests.e2e.conftest.fresh_topics` with 2 partitions,
    the config written to ``tmp_path/job.yaml`` for ``inboxflow submit --config``."""
    from tests.e2e.conftest import fresh_topics

    topics, sections = fresh_topics(broker, prefix, 2, overrides)
    return topics, write_job_config(tmp_path / "job.yaml", sections)
