"""The packaged job on the standalone cluster (2 TaskManagers x 1 slot): every Flink process
serves Prometheus metrics on the first free port of ``metrics.reporter.prom.port``
(flink-conf.yaml); the endpoints that export the job are scraped while it runs and, summed
over TaskManagers and subtasks, hold exactly the mini-cluster's figures for the same story
(``tests/integration/test_metrics.py``). The TaskManagers' JSON logs hold its invalid
events, with ids and reasons only."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from job.dev.broker import TansuBroker
from job.prometheus import endpoints, port_range, total
from tests.cluster.conftest import TestCluster, job_on_fresh_topics, write_flink_conf
from tests.factories import ROOT, cart_only
from tests.integration.test_metrics import (
    EXPECTED,
    WAIT_S,
    check_json_logs,
    check_latency,
    play,
    wait_for_metrics,
)


@pytest.mark.slow
def test_prometheus_endpoints_of_the_taskmanagers_report_exact_job_metrics(
    cluster: TestCluster, broker: TansuBroker, tmp_path: Path
) -> None:
    cluster.reshape(2, 1)
    tag = f"cm{uuid.uuid4().hex[:8]}"
    topics, config = job_on_fresh_topics(
        broker, tmp_path, tag, watermarks={"idleness": "1s"}, **cart_only()
    )
    flink_conf = write_flink_conf(tmp_path / "flink-conf.yaml", tmp_path / "checkpoints")
    ports = port_range(
        str(yaml.safe_load((ROOT / "flink-conf.yaml").read_text())["metrics.reporter.prom.port"])
    )
    job_id = cluster.submit(config, parallelism=2, extra_args=["--flink-conf", str(flink_conf)])
    try:
        cluster.wait_running(job_id, timeout_s=WAIT_S)

        alive = cluster.alive(job_id)

        ids = play(broker, topics, tag, alive)
        samples, got = wait_for_metrics(lambda: endpoints(ports, job_id), job_id, EXPECTED, 60)
        assert got == EXPECTED
        alive()
        # the JobManager and both TaskManagers export the job, each on its own port
        assert len(endpoints(ports, job_id)) == 3
    except BaseException:
        print(cluster.log_tail(40))
        raise
    finally:
        cluster.cancel(job_id)

    assert total(samples, "events_valid") == 10
    assert total(samples, "flink_jobmanager_job_numRestarts", job_id=job_id) == 0
    check_latency(samples)
    check_json_logs(sorted((cluster.home / "log").glob("*taskexecutor*.inboxflow.jsonl")), tag, ids)
