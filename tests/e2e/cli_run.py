"""``inboxflow run`` started exactly as an operator starts it: the installed console script in
a process of its own (and its own process group, so the JVM it launches goes with it), in a
working directory of the test's (the embedded ClickHouse path ``var/clickhouse`` is relative to
it), with only the Kafka bootstrap given through ``INBOXFLOW_KAFKA_BOOTSTRAP``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from kafka import KafkaAdminClient

from job.config import ENV_BOOTSTRAP, ENV_CLICKHOUSE_DSN
from job.dev.broker import TansuBroker
from tests.e2e.conftest import JobFailed

INBOXFLOW = Path(sys.executable).with_name("inboxflow")
RESTART_LINE = "JOB RESTART #"  # job.monitor.log_restart


def start_run(broker: TansuBroker, command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``command`` (an ``inboxflow run``) in a session of its own, so that a signal to the
    group reaches the CLI, the JVM and the embedded Python; it reads ``broker`` (through
    ``INBOXFLOW_KAFKA_BOOTSTRAP``) and no ClickHouse DSN from the environment, and appends
    its output to ``log``."""
    env = {**os.environ, ENV_BOOTSTRAP: broker.bootstrap}
    env.pop(ENV_CLICKHOUSE_DSN, None)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class CliRun:
    """One ``inboxflow run ARGS`` process. Calling it is the liveness check (raises
    :class:`JobFailed` with the log's tail once the process has ended); :meth:`stop` sends
    SIGINT (Ctrl-C: the job is cancelled) and waits for the process to end."""

    def __init__(
        self, broker: TansuBroker, workdir: Path, *args: str, log_name: str = "run.log"
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / log_name
        self.proc = start_run(broker, [str(INBOXFLOW), "run", *args], workdir, self.log_path)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __call__(self) -> None:
        """Raises once the process has ended or the job has restarted (``inboxflow run`` logs
        every restart): the content of a record must never fail a task."""
        if self.proc.poll() is not None:
            raise JobFailed(f"inboxflow run exited with {self.proc.returncode}:\n{self.log_tail()}")
        if RESTART_LINE in self.log_path.read_text(errors="replace"):
            raise JobFailed(f"the job restarted:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60) -> None:
        """Ctrl-C, then wait; whatever of the process group is left after ``timeout_s`` is
        killed (it was started by this object, in a group of its own)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> offset committed by ``group`` on ``topic`` (partitions without one absent)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inboxflow-e2e-admin")
    try:
        found = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in found.items()
        if tp.topic == topic and meta.offset >= 0
    }


def wait_for_commit(
    bootstrap: str, group: str, topic: str, expected: dict[int, int], timeout_s: float, alive
) -> None:
    """Poll the group's committed offsets until they equal ``expected``."""
    deadline = time.monotonic() + timeout_s
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        alive()
        seen = committed_offsets(bootstrap, group, topic)
        if seen == expected:
            return
        time.sleep(1)
    raise AssertionError(f"group {group!r} committed {seen} on {topic!r}, expected {expected}")
