"""End-to-end helpers: a real Tansu broker, the real Kafka job running unbounded in a local
mini-cluster, and a reader that keeps polling the job's output topics.

The job is never run bounded here: the end of a bounded input fires every pending timer
(docs/DESIGN.md#end-of-input), which would hide a reminder sent before it is due. It runs until the
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

from job.dev.broker import TansuBroker

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

    def __init__(
        self, bootstrap: str, topics: list[str], timeout_s: float = 30, **consumer_config
    ) -> None:
        """``consumer_config``: extra KafkaConsumer settings (e.g. reconnect back-off)."""
        self.records: list[OutRecord] = []
        # group_id=None: no JoinGroup (Tansu waits half the session timeout on it,
        # docs/DESIGN.md#tansu)
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            client_id="inboxflow-e2e-reader",
            **consumer_config,
        )
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
                self.records.append(
                    OutRecord(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key.decode() if r.key is not None else None,
                        value=json.loads(r.value),
                        timestamp_ms=r.timestamp,
                    )
                )
                new += 1
        return new

    def wait_for(
        self,
        condition: Callable[[OutputReader], bool],
        what: str,
        timeout_s: float,
        alive: Callable[[], None] = lambda: None,
    ) -> float:
        """Poll until ``condition(self)`` holds; returns the seconds it took. ``alive`` is
        called between polls and raises when the job died, so a broken job fails fast."""
        started = time.monotonic()
        while not condition(self):
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s waiting for {what}; seen so far: "
                    f"{self.summary()}"
                )
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
        return [
            (r.topic, r.key, r.value.get("kind") or r.value.get("reason") or r.value.get("step"))
            for r in self.records
        ]

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def fresh_topics(
    broker: TansuBroker, prefix: str, partitions: int, overrides: dict
) -> tuple[dict[str, str], dict]:
    """(topics, config overrides): new topics ``PREFIX.events`` (``partitions``
    partitions), ``.dlq``, ``.requests`` and ``.outcomes``, and the config sections that
    read them from the earliest offset with a group of its own, ClickHouse off,
    ``overrides`` merged on top."""
    from job.dev.kafka_io import create_topics

    topics = {t: f"{prefix}.{t}" for t in ("events", "dlq", "requests", "outcomes")}
    create_topics(
        broker.bootstrap,
        {
            topics["events"]: partitions,
            topics["dlq"]: 1,
            topics["requests"]: 1,
            topics["outcomes"]: 1,
        },
    )
    names = {"events": "events", "dlq": "dlq", "email_requests": "requests", "outcomes": "outcomes"}
    kafka = {"topics": {name: topics[short] for name, short in names.items()}}
    return topics, earliest_overrides(broker, prefix, kafka, **overrides)


def earliest_overrides(broker: TansuBroker, group_id: str, kafka: dict | None = None, **sections):
    """Config overrides that read ``broker`` from the earliest offset with the consumer group
    ``group_id``, ClickHouse off; ``kafka`` merged into the ``kafka`` section, ``sections``
    over the rest."""
    return {
        "kafka": {
            "bootstrap_servers": broker.bootstrap,
            "starting_offsets": "earliest",
            "group_id": group_id,
            **(kafka or {}),
        },
        "clickhouse": {"enabled": False},
        **sections,
    }


def job_on_fresh_topics(
    broker: TansuBroker, prefix: str, partitions: int, overrides: dict
) -> tuple:
    """(config, topics): the shipped config with :func:`fresh_topics`."""
    from job.config import load_config

    topics, sections = fresh_topics(broker, prefix, partitions, overrides)
    return load_config(env={}, overrides=sections), topics


class RunningJob:
    """The job submitted by :func:`running_job`. Calling it is the liveness check: it raises
    :class:`JobFailed` with the job's own error once the job is no longer running, or as
    soon as a task has failed (a restart), unless ``allow_restarts``."""

    def __init__(self, client, rest_url: str, allow_restarts: bool) -> None:
        from job.monitor import JobMonitor

        self.client = client
        self.monitor = JobMonitor(rest_url, str(client.get_job_id()))
        self.allow_restarts = allow_restarts
        self._checked = 0.0

    def __call__(self) -> None:
        from pyflink.common.job_status import JobStatus

        status = self.client.get_job_status().result()
        if status in (
            JobStatus.FAILING,
            JobStatus.FAILED,
            JobStatus.CANCELED,
            JobStatus.FINISHED,
        ) or (status == JobStatus.RESTARTING and not self.allow_restarts):
            error = None
            if status.is_globally_terminal_state():
                try:
                    self.client.get_job_execution_result().result()
                except Exception as exc:  # noqa: BLE001 - reported below
                    error = exc
            raise JobFailed(f"job is {status.name}: {error or self.failures()}")
        if not self.allow_restarts and time.monotonic() - self._checked > 1.0:
            self._checked = time.monotonic()
            failures = self.failures()
            if failures:
                raise JobFailed(f"a task failed (the job restarts): {failures}")

    def failures(self) -> list:
        """Every task failure so far (Flink's exception history), oldest first."""
        try:
            return self.monitor.failures()
        except OSError:  # the REST server is not up yet
            return []

    def restarts(self, settle_s: float = 5.0) -> int:
        """How often the job restarted: Flink's ``numRestarts`` metric, which the REST server
        refreshes every ``metrics.fetcher.update-interval``, so wait for a fresh value; never
        fewer than the failures in the exception history."""
        deadline = time.monotonic() + settle_s
        value = None
        while time.monotonic() < deadline:
            with suppress(OSError, ValueError):
                value = self.monitor.restarts()
            time.sleep(0.5)
        assert value is not None, "Flink's numRestarts metric was never available"
        return max(value, len(self.failures()))


@contextmanager
def running_job(
    cfg,
    checkpoint_dir: Path,
    parallelism: int = 2,
    *,
    allow_restarts: bool = False,
    flink_overrides: dict[str, str] | None = None,
) -> Iterator[RunningJob]:
    """Submits the real Kafka job (unbounded source, no profile store) to a local mini-cluster
    with the shipped restart strategy and cancels it on exit. Yields a :class:`RunningJob`:
    call it between polls (it raises once the job failed or, unless ``allow_restarts``,
    restarted); ``restarts()`` reads Flink's restart count."""
    from job.main import build_kafka_job, create_env, flink_settings, with_rest_endpoint

    settings, rest_url = with_rest_endpoint(
        flink_settings(
            overrides={
                "parallelism.default": str(parallelism),
                # checkpoints make the AT_LEAST_ONCE Kafka sinks flush regularly
                "execution.checkpointing.interval": "2s",
                "execution.checkpointing.dir": checkpoint_dir.as_uri(),
                **(flink_overrides or {}),
            }
        )
    )
    env = create_env(settings)
    build_kafka_job(env, cfg, None, store=False)
    client = env.execute_async("inboxflow-e2e")
    job = RunningJob(client, rest_url, allow_restarts)
    try:
        yield job
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
