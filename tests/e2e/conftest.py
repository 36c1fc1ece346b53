"""End-to-end helpers: a real Tansu broker, the real Kafka job running unbounded in a local
mini-cluster, and a reader that keeps polling the job's output topics.

The job is never run bounded here: the end of a bounded input fires every pending timer
(DESIGN trap 7), which would hide a reminder sent before it is due. It runs until the
expected outputs are observable and nothing new arrives, then it is cancelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from job.broker import TansuBroker

POLL_MS = 200


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


@dataclass(frozen=True)
class OutRecord:
    """One record of an output topic; ``value`` is the parsed JSON."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict
    timestamp_ms: int


class JobFailed(AssertionError):
    """The Flink job left RUNNING while the test was still waiting for its output."""


class OutputReader:
    """Reads ``topics`` from the beginning of every partition, without a consumer group, and
    accumulates everything it has seen. Invariant: ``records`` only grows, in poll order
    (ordered within a partition)."""

    def __init__(self, bootstrap: str, topics: list[str], timeout_s: float = 30) -> None:
        self.records: list[OutRecord] = []
        # group_id=None: no JoinGroup (Tansu waits half the session timeout on it, trap 6)
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100,
            client_id="inboxflow-e2e-reader")
        deadline = time.monotonic() + timeout_s
        assigned = []
        for topic in topics:
            while not (partitions := self._consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic!r} has no partitions in the metadata")
                time.sleep(0.2)
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)

    def of(self, topic: str) -> list[OutRecord]:
        return [r for r in self.records if r.topic == topic]

    def poll_once(self) -> int:
        """One poll; returns how many new records arrived."""
        new = 0
        for batch in self._consumer.poll(timeout_ms=POLL_MS).values():
            for r in batch:
                self.records.append(OutRecord(
                    topic=r.topic, partition=r.partition, offset=r.offset,
                    key=r.key.decode() if r.key is not None else None,
                    value=json.loads(r.value), timestamp_ms=r.timestamp))
                new += 1
        return new

    def wait_for(self, condition: Callable[[OutputReader], bool], what: str,
                 timeout_s: float, alive: Callable[[], None] = lambda: None) -> float:
        """Poll until ``condition(self)`` holds; returns the seconds it took. ``alive`` is
        called between polls and raises when the job died, so a broken job fails fast."""
        started = time.monotonic()
        while not condition(self):
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s waiting for {what}; seen so far: "
                    f"{self.summary()}")
            alive()
            self.poll_once()
        return time.monotonic() - started

    def drain(self, quiet_s: float, alive: Callable[[], None] = lambda: None) -> None:
        """Keep polling until nothing new has arrived for ``quiet_s`` seconds."""
        last_new = time.monotonic()
        while time.monotonic() - last_new < quiet_s:
            alive()
            if self.poll_once():
                last_new = time.monotonic()

    def summary(self) -> list[tuple]:
        """Compact view for assertion messages: no payloads, no e-mail addresses."""
        return [(r.topic, r.key, r.value.get("kind") or r.value.get("reason")
                 or r.value.get("step")) for r in self.records]

    def close(self) -> None:
        self._consumer.close(autocommit=False)


@contextmanager
def running_job(cfg, checkpoint_dir: Path, parallelism: int = 2) -> Iterator[Callable[[], None]]:
    """Submits the real Kafka job (unbounded source, no profile store) to a local mini-cluster
    and cancels it on exit. Yields a liveness check that raises :class:`JobFailed` with the
    job's own error once it is no longer running."""
    from pyflink.common.job_status import JobStatus

    from job.main import build_kafka_job, create_env, flink_settings

    settings = flink_settings(overrides={
        "parallelism.default": str(parallelism),
        # checkpoints make the AT_LEAST_ONCE Kafka sinks flush regularly
        "execution.checkpointing.interval": "2s",
        "execution.checkpointing.dir": checkpoint_dir.as_uri(),
        # a restart would replay input and duplicate outputs: fail loudly instead
        "restart-strategy.type": "none",
    })
    env = create_env(settings)
    build_kafka_job(env, cfg, None, store=False)
    client = env.execute_async("inboxflow-e2e")

    def alive() -> None:
        status = client.get_job_status().result()
        if status in (JobStatus.FAILING, JobStatus.FAILED, JobStatus.RESTARTING,
                      JobStatus.CANCELED, JobStatus.FINISHED):
            error = None
            if status.is_globally_terminal_state():
                try:
                    client.get_job_execution_result().result()
                except Exception as exc:  # noqa: BLE001 - reported below
                    error = exc
            raise JobFailed(f"job is {status.name}: {error}")

    try:
        yield alive
    finally:
        with suppress(Exception):  # the job already ended (e.g. it failed)
            client.cancel().result()
        # wait until it is really gone, so the broker is not stopped under a running job
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.get_job_status().result().is_globally_terminal_state():
                    break
            except Exception:  # noqa: BLE001 - the mini-cluster already shut down
                break
            time.sleep(0.2)
