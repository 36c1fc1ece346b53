"""Crash and restore: the real job with the ClickHouse writer (embedded chdb) and
checkpointing, on the real Kafka wire protocol (Tansu), is killed hard (SIGKILL to its whole
process group: client, JVM, embedded Python) mid-stream after at least one completed
checkpoint, restarted from that checkpoint, and must leave exactly the same analyst tables as
an uninterrupted run over the same input.

Both runs are unbounded, as in production. A bounded KafkaSource restored from a checkpoint
never finishes (FLINK-31006, unfixed in flink-connector-kafka 4.0.1), and the end of a bounded
input would fire every pending timer anyway. A run counts as done once its consumer group has
committed the input's end offsets (the source commits on checkpoint completion, after every
operator, the writer included, has taken in the input) and two more flush intervals have
passed; it is then killed. Parallelism 2 with 2 partitions, events in event-time order per
partition with less jitter than the out-of-orderness bound, and idleness off make the
watermarks, hence the timers and every output, the same in both runs.

Rows the killed run wrote after its last checkpoint are written again after the restore; the
ReplacingMergeTree tables and the views absorb them. ``emitted_at`` (wall clock) is the only
column left out of the comparison.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, TopicPartition

from job.dev.gen import generate
from job.dev.kafka_io import create_topics, end_offsets_from_deliveries, produce
from tests.factories import ROOT, T0, cart_only, query_cli
from udfs.clock import wall_ms

pytestmark = pytest.mark.slow

EVENTS = 16_000
JOB_TIMEOUT_S = 300
SETTLE_S = 3  # after the end offsets are committed: > 2 checkpoints and many flush intervals

TABLES = {
    "customer_profiles_latest": "SELECT * FROM customer_profiles_latest ORDER BY customer_id",
    "email_requests": "SELECT * EXCEPT emitted_at FROM email_requests FINAL ORDER BY request_id",
    "cart_recoveries": "SELECT * FROM cart_recoveries FINAL ORDER BY customer_id, order_id",
}


class Run:
    """One job run: its own consumer group, output topics, chdb path and checkpoints."""

    def __init__(self, name: str, tmp: Path, bootstrap: str, offsets: dict[int, int]):
        self.name, self.tmp = name, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.dsn = "chdb://" + str(tmp / "clickhouse")
        self.checkpoints = tmp / "checkpoints"
        self.log = tmp / "job.log"
        self.topics = {
            "events": "crash-events",
            "dlq": f"{name}.dlq",
            "email_requests": f"{name}.requests",
            "outcomes": f"{name}.outcomes",
        }
        create_topics(
            bootstrap,
            {self.topics["dlq"]: 1, self.topics["email_requests"]: 2, self.topics["outcomes"]: 2},
        )
        self.spec = {
            "config": {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "group_id": name,
                    "starting_offsets": "earliest",
                    "topics": self.topics,
                },
                # batches are applied only before a watermark moves or a checkpoint
                # barrier passes: a barrier that did not flush the batch would lose the
                # effects of the events the checkpoint covers
                "clickhouse": {
                    "enabled": True,
                    "dsn": self.dsn,
                    "flush_rows": 500,
                    "flush_interval": "200ms",
                },
                "processing": {"batch_events": 100_000, "batch_delay": "1h"},
                "watermarks": {"idleness": "0s"},
                **cart_only(),
            },
            "flink": {
                "parallelism.default": "2",
                "execution.checkpointing.interval": "1s",
                "execution.checkpointing.dir": self.checkpoints.as_uri(),
                "restart-strategy.type": "none",
            },
        }
        self.bootstrap, self.end_offsets = bootstrap, offsets

    def start(self, restore_from: Path | None = None) -> subprocess.Popen:
        spec = json.loads(json.dumps(self.spec))
        if restore_from is not None:
            spec["flink"]["execution.state-recovery.path"] = restore_from.as_uri()
        path = self.tmp / f"spec-{wall_ms()}.json"
        path.write_text(json.dumps(spec))
        out = self.log.open("ab")
        # a session of its own: the kill takes the client, the JVM and everything it started
        return subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.job_runner", str(path)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run_to_end(self, proc: subprocess.Popen) -> None:
        """Wait until the run has taken in the whole input, then kill it."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="crash-test")
        want = {TopicPartition("crash-events", p): o for p, o in self.end_offsets.items()}
        deadline = time.monotonic() + JOB_TIMEOUT_S
        committed: dict = {}
        try:
            while True:
                assert proc.poll() is None, f"{self.name} job died:\n{self.tail()}"
                assert time.monotonic() < deadline, (
                    f"{self.name} never committed the end offsets {want}; last committed "
                    f"{committed}; checkpoints {[p.name for p in self.completed_checkpoints()]}"
                    f"\n{self.tail()}"
                )
                committed = admin.list_group_offsets({self.name: list(want)})[self.name]
                if all(p in committed and committed[p].offset == o for p, o in want.items()):
                    break
                time.sleep(0.5)
        finally:
            admin.close()
        time.sleep(SETTLE_S)
        self.kill(proc)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def completed_checkpoints(self) -> list[Path]:
        """Completed checkpoint directories (``_metadata`` written), oldest first."""
        done = [m.parent for m in self.checkpoints.glob("*/chk-*/_metadata")]
        return sorted(done, key=lambda p: int(p.name.removeprefix("chk-")))

    def tables(self) -> dict[str, list[dict]]:
        return {name: query_cli(self.dsn, sql) for name, sql in TABLES.items()}


@pytest.fixture(scope="module")
def input_offsets(broker) -> dict[int, int]:
    create_topics(broker.bootstrap, {"crash-events": 2})
    records = [
        (r.key, r.value, None) for r in generate(seed=5, customers=300, events=EVENTS, start_ms=T0)
    ]
    offsets = end_offsets_from_deliveries(produce(broker.bootstrap, "crash-events", records))
    assert sorted(offsets) == [0, 1]
    return offsets


def test_kill_and_restore_from_checkpoint_equals_an_uninterrupted_run(
    broker, input_offsets, tmp_path
):
    reference = Run("ref", tmp_path / "ref", broker.bootstrap, input_offsets)
    reference.run_to_end(reference.start())
    want = reference.tables()
    assert len(want["customer_profiles_latest"]) >= 290
    assert len(want["email_requests"]) > 100 and len(want["cart_recoveries"]) > 10

    crashed = Run("crash", tmp_path / "crash", broker.bootstrap, input_offsets)
    proc = crashed.start()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not crashed.completed_checkpoints():
        assert proc.poll() is None, f"job ended before its first checkpoint:\n{crashed.tail()}"
        assert time.monotonic() < deadline, "no checkpoint completed"
        time.sleep(0.05)
    crashed.kill(proc)
    checkpoint = crashed.completed_checkpoints()[-1]

    # mid-stream: the profiles the killed run wrote reflect only part of the input
    counted = "SELECT sum(arraySum(mapValues(event_counts))) AS n FROM customer_profiles_latest"
    partial, full = (
        query_cli(crashed.dsn, counted)[0]["n"],
        query_cli(reference.dsn, counted)[0]["n"],
    )
    assert 0 < partial < full

    crashed.run_to_end(crashed.start(restore_from=checkpoint))
    got = crashed.tables()
    for name in TABLES:
        assert len(got[name]) == len(want[name]), name
        assert differences(got[name], want[name]) == [], name


def differences(got: list[dict], want: list[dict]) -> list[tuple]:
    """(row number, column, got, want) for every differing cell: a readable failure."""
    return [
        (i, column, g[column], w[column])
        for i, (g, w) in enumerate(zip(got, want, strict=True))
        for column in w
        if g[column] != w[column]
    ][:20]
