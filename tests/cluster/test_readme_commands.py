"""The README's cluster commands, exactly as written there (only the REST port is a free one
instead of 8081, and the broker comes from ``INBOXFLOW_KAFKA_BOOTSTRAP``): ``make
cluster-up``, ``make package``, ``inboxflow submit`` with the shipped ``conf/job.yaml`` (its
``committed`` offsets, its default topics, ClickHouse on) and the plain ``flink run`` line,
then ``make cluster-down``. The commands are read from the README, so a change there is a
change to what this test runs.

The first job sends exactly the emails due in its input (the shipped campaigns: the welcome
email due at the identify event, then the cart reminder) and commits its offsets; it is
cancelled, and the plain ``flink run`` job (same consumer group) sends exactly the emails of
the new input and nothing of the old one.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

import pytest
from kafka import KafkaAdminClient, TopicPartition

from job.config import ENV_BOOTSTRAP
from job.dev import cluster as flink_cluster
from job.dev.broker import TansuBroker
from job.dev.kafka_io import create_topics, end_offsets_from_deliveries, produce
from job.ops import free_port
from tests.e2e.conftest import JobFailed, OutputReader
from tests.factories import (
    HOUR,
    MINUTE,
    ROOT,
    T0,
    cart_add,
    identify,
    kafka_record,
    keys_by_partition,
    page_view,
)
from udfs.core.journey import request_id

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
WAIT_S = 180
TOPICS = {"events": 2, "email.requests": 1, "events.dlq": 1, "inboxflow.outcomes": 1}


def readme_commands(section: str = "## On a Flink cluster") -> tuple[list[str], str]:
    """The commands of the section's first code block (comments dropped) and its plain
    ``flink run`` command (the code block that starts with ``var/flink/bin/flink run``)."""
    text = README.read_text()
    body = text[text.index(section) :]
    body = body[: body.index("\n## ", 1)]
    blocks = re.findall(r"```\n(.*?)```", body, re.DOTALL)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    (flink_run,) = [b for b in blocks if b.lstrip().startswith("var/flink/bin/flink run")]
    return [c for c in first if c], " ".join(flink_run.replace("\\\n", " ").split())


def test_the_readme_names_the_commands_this_test_runs():
    commands, flink_run = readme_commands()
    assert commands == [
        "make cluster-up",
        "make package",
        ".venv/bin/inboxflow submit --cluster 127.0.0.1:8081 --detached",
        "make cluster-down",
    ]
    assert flink_run == (
        "var/flink/bin/flink run -m 127.0.0.1:8081 -d -p 2 -pyfs "
        "var/package/inboxflow-job.zip --jarfile var/package/inboxflow-job.jar "
        "-py job/main.py --config conf/job.yaml"
    )


def _sh(command: str, env: dict[str, str], timeout: float = 400) -> str:
    done = subprocess.run(
        shlex.split(command),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return done.stdout


def _story(customer: str, clock_keys: list[str], start: int) -> list[tuple]:
    """A cart abandoned at ``start``, then a page view on each partition 1 h 1 min later:
    the watermark passes the reminder's due time (``start`` + 1 h, bound 5 s). The identify
    at ``start`` sends the welcome email (step 1 due at once)."""
    events = [
        identify(customer, start, email=f"{customer}@example.com", first_name="Pat"),
        cart_add(customer, start, cart_id=f"cart-{customer}"),
    ]
    events += [page_view(key, start + HOUR + MINUTE) for key in clock_keys]
    return [kafka_record(e) for e in events]


def _emails(customer: str, start: int) -> list[tuple[str, str]]:
    """(key, request id) of what the story of ``customer`` sends, in order."""
    return [
        (customer, request_id("welcome", customer, None, start, 1)),
        (customer, request_id("abandoned_cart", customer, f"cart-{customer}", start, 1)),
    ]


def _wait_committed(bootstrap: str, ends: dict[int, int], alive) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="readme-test")
    want = {TopicPartition("events", p): o for p, o in ends.items()}
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            alive()
            got = admin.list_group_offsets({"inboxflow": list(want)})["inboxflow"]
            if all(p in got and got[p].offset == o for p, o in want.items()):
                return
            assert time.monotonic() < deadline, f"group inboxflow committed {got}, want {want}"
            time.sleep(1)
    finally:
        admin.close()


def test_readme_cluster_commands_as_written(broker: TansuBroker):
    commands, flink_run = readme_commands()
    port = free_port()
    cluster = flink_cluster.Cluster(rest_port=port)
    assert not cluster.running(), "a cluster already runs from var/flink: make cluster-down"
    env = {**os.environ, ENV_BOOTSTRAP: broker.bootstrap}
    create_topics(broker.bootstrap, TOPICS)
    clock = [keys[0] for keys in keys_by_partition(2, 1, "readme-clock-")]
    reader = OutputReader(broker.bootstrap, ["email.requests"])
    up, package, submit, down = (c.replace("8081", str(port)) for c in commands)
    try:
        _sh(f"{up} PORT={port}", env)
        assert [tm["slots"] for tm in cluster.status()["taskmanagers"]] == [2]
        _sh(package, env)
        job_id = _sh(submit, env).strip().splitlines()[-1]

        def alive() -> None:
            state = cluster.job(job_id)["state"]
            if state != "RUNNING" or cluster.exceptions(job_id):
                raise JobFailed(f"job {job_id} is {state}: {cluster.exceptions(job_id)}")

        cluster.wait_running(job_id, timeout_s=WAIT_S)
        ends = end_offsets_from_deliveries(
            produce(broker.bootstrap, "events", _story("readme-a", clock, T0))
        )
        reader.wait_for(
            lambda r: len(r.of("email.requests")) >= 2, "A's welcome and reminder", WAIT_S, alive
        )
        _wait_committed(broker.bootstrap, ends, alive)  # checkpoints every 10 s (shipped)
        cluster.cancel(job_id)
        assert [(r.key, r.value["request_id"]) for r in reader.of("email.requests")] == _emails(
            "readme-a", T0
        )

        out = _sh(flink_run.replace("8081", str(port)), env)
        (job_id,) = set(re.findall(r"JobID ([0-9a-f]{32})", out))
        cluster.wait_running(job_id, timeout_s=WAIT_S)
        assert {
            v["parallelism"]
            for v in cluster.job(job_id)["vertices"]
            if "clickhouse-writer" not in v["name"]
        } == {2}
        later = T0 + 2 * HOUR
        produce(broker.bootstrap, "events", _story("readme-b", clock, later))
        reader.wait_for(
            lambda r: len(r.of("email.requests")) >= 4, "B's welcome and reminder", WAIT_S, alive
        )
        reader.drain(5, alive)  # A's events, if read again, would send A's emails again
        assert [(r.key, r.value["request_id"]) for r in reader.of("email.requests")] == [
            *_emails("readme-a", T0),
            *_emails("readme-b", later),
        ]
        cluster.cancel(job_id)
    except BaseException:
        print(cluster.log_tail(40))
        raise
    finally:
        reader.close()
        _sh(down, env)
    assert not cluster.running()
