"""The packaged job (``make package``) submitted with ``inboxflow submit`` to a real Flink
standalone cluster, on 1 TaskManager x 2 slots and on 2 TaskManagers x 1 slot, produces
exactly the outputs the local mini-cluster produces for the same input.

The input and the expected outputs are those of ``tests/e2e/test_kafka_e2e.py`` (where the
mini-cluster produces them): three customers with carts, malformed and far-future records,
a purchase 4 minutes out of order that cancels C's reminder, shoppers whose later events
move the watermark, Kafka record times three days after the events' own time. The job runs
unbounded at parallelism 2 and is cancelled once the outputs settle.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from tests.cluster.conftest import TestCluster, job_on_fresh_topics, write_flink_conf
from tests.e2e import test_kafka_e2e as scenario
from tests.e2e.conftest import OutputReader
from tests.factories import CAMPAIGN, HOUR, T0, cart_add, cart_only, raw
from udfs.core.instant import iso_ms
from udfs.core.journey import request_id

WAIT_S = 120
QUIET_S = 6

# What the mini-cluster produces for this input (asserted in tests/e2e/test_kafka_e2e.py):
# one request, A's step 1 due at T0+1h; C's reminder cancelled; B's not yet due.
EXPECTED = {
    "requests": [
        (
            "cust-a",
            request_id(CAMPAIGN, "cust-a", "cart-a", T0, 1),
            CAMPAIGN,
            1,
            "ann@example.com",
            "Ann, you left something in your cart",
            T0 + HOUR,
            iso_ms(T0 + HOUR),
            "cart-a",
            (("p1", 2, 12.5),),
        )
    ],
    "outcomes": sorted(scenario.PHASE_1_OUTCOMES + scenario.PHASE_2_OUTCOMES),
    "dlq": sorted(scenario.EXPECTED_DLQ, key=str),
}


def _outputs(reader: OutputReader, topics: dict[str, str]) -> dict:
    requests = sorted(
        (
            r.key,
            v["request_id"],
            v["campaign"],
            v["step"],
            v["to"],
            v["subject"],
            v["metadata"]["due_at_ms"],
            v["trigger_event_time"],
            v["metadata"]["cart_id"],
            tuple((i["product_id"], i["quantity"], i["price"]) for i in v["metadata"]["items"]),
        )
        for r in reader.of(topics["requests"])
        for v in [r.value]
    )
    outcomes = sorted(
        (r.value["kind"], r.key, r.value.get("reason"), r.value.get("step"))
        for r in reader.of(topics["outcomes"])
    )
    dlq = sorted(
        (
            (r.key, r.value["reason"], r.value["path"], r.value["event_id"])
            for r in reader.of(topics["dlq"])
        ),
        key=str,
    )
    return {"requests": requests, "outcomes": outcomes, "dlq": dlq}


def run_scenario(cluster: TestCluster, broker: TansuBroker, tmp_path: Path) -> dict:
    """Submits the job on fresh topics, plays the scenario phase by phase and returns the
    outputs once they have settled."""
    topics, config = job_on_fresh_topics(
        broker,
        tmp_path,
        f"cl-{uuid.uuid4().hex[:8]}",
        watermarks={"out_of_orderness": "5m", "idleness": "1s"},
        **cart_only(),
    )
    flink_conf = write_flink_conf(tmp_path / "flink-conf.yaml", tmp_path / "checkpoints")
    reader = OutputReader(broker.bootstrap, [topics["requests"], topics["dlq"], topics["outcomes"]])
    job_id = cluster.submit(config, parallelism=2, extra_args=["--flink-conf", str(flink_conf)])
    try:
        cluster.wait_running(job_id, timeout_s=WAIT_S)

        alive = cluster.alive(job_id)

        events = topics["events"]
        scenario._send(broker.bootstrap, events, scenario.PHASE_1A)
        reader.wait_for(
            lambda r: len(r.of(topics["dlq"])) >= len(scenario.EXPECTED_DLQ),
            "the phase 1a DLQ records",
            WAIT_S,
            alive,
        )
        scenario._send(broker.bootstrap, events, scenario.PHASE_1B)
        reader.wait_for(
            lambda r: len(r.of(topics["outcomes"])) >= len(scenario.PHASE_1_OUTCOMES),
            "the cancellations",
            WAIT_S,
            alive,
        )
        reader.drain(QUIET_S, alive)
        # A's reminder is due at T0+1h and the watermark is at most T0+58m: not yet
        assert reader.of(topics["requests"]) == []
        scenario._send(broker.bootstrap, events, scenario.PHASE_2)
        reader.wait_for(lambda r: len(r.of(topics["requests"])) >= 1, "A's reminder", WAIT_S, alive)
        reader.drain(QUIET_S, alive)  # B's or C's reminder would arrive meanwhile
        alive()
    except BaseException:
        print(cluster.log_tail(40))
        raise
    finally:
        reader.close()
        cluster.cancel(job_id)
    return _outputs(reader, topics)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("taskmanagers", "slots"), [(1, 2), (2, 1)], ids=["1tm-x-2slots", "2tms-x-1slot"]
)
def test_packaged_job_on_standalone_cluster_matches_mini_cluster(
    cluster: TestCluster, broker: TansuBroker, tmp_path: Path, taskmanagers: int, slots: int
) -> None:
    cluster.reshape(taskmanagers, slots)
    tms = cluster.status()["taskmanagers"]
    assert sorted(t["slots"] for t in tms) == [slots] * taskmanagers
    assert run_scenario(cluster, broker, tmp_path) == EXPECTED


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("chdb:///tmp/inboxflow-plan-only", 1),
        ("http://default@127.0.0.1:8123/default", 3),
    ],
)
def test_embedded_clickhouse_writer_runs_as_one_subtask(dsn: str, expected: int) -> None:
    """chdb lets one process open its path: with the embedded engine every row goes to one
    writer subtask (whatever the job's parallelism, so also across TaskManagers); a server
    DSN keeps the job's parallelism. Only the plan is built, nothing connects."""
    import json

    from job.config import load_config
    from job.main import create_env, flink_settings
    from job.pipeline import build

    cfg = load_config(env={}, overrides={"clickhouse": {"enabled": True, "dsn": dsn}})
    env = create_env(flink_settings(overrides={"parallelism.default": "3"}))
    from pyflink.common import Types

    source = env.from_collection([raw(cart_add("c1", T0))], type_info=Types.STRING())
    out = build(cfg, source)
    out.requests.print()
    out.dlq.print()
    out.outcomes.print()
    nodes = json.loads(env.get_execution_plan())["nodes"]
    writer = [n["parallelism"] for n in nodes if "clickhouse-writer" in n["contents"]]
    customers = [n["parallelism"] for n in nodes if n["contents"].startswith("customers")]
    assert (writer, customers) == ([expected], [3]), [
        (n["contents"], n["parallelism"]) for n in nodes
    ]


def test_package_holds_the_code_conf_and_one_jar_with_connector_and_helpers(tmp_path: Path) -> None:
    import zipfile

    from job.submit import package

    def names_in(path) -> set[str]:
        with zipfile.ZipFile(path) as zf:
            return set(zf.namelist())

    artifacts = package(tmp_path)
    names = names_in(artifacts["pyfs"])
    code = ["job/main.py", "job/config.py", "udfs/core/customer.py", "udfs/clickhouse/host.py"]
    code += ["udfs/flink/writer_function.py", "templates/abandoned_cart_1.subject.j2"]
    conf = ["conf/job.yaml", "conf/schemas/email_request.json", "flink-conf.yaml"]
    assert {*code, *conf} <= names
    assert any(n.startswith("conf/clickhouse/") and n.endswith(".sql") for n in names)
    assert not any("__pycache__" in n for n in names)
    assert not any(n.startswith("job/dev/") for n in names)  # development tools stay home
    names = names_in(artifacts["jarfile"])
    # the job's JVM helpers, the Kafka connector and client, the client's compression codecs
    classes = [
        "io/inboxflow/flink/BatchCustomerOperator",
        "io/inboxflow/flink/EnvelopeDeserializer",
    ]
    classes += ["org/apache/flink/connector/kafka/source/KafkaSource"]
    classes += ["org/apache/kafka/clients/consumer/KafkaConsumer", "net/jpountz/lz4/LZ4Factory"]
    classes += ["org/xerial/snappy/Snappy", "com/github/luben/zstd/Zstd"]
    assert {f"{c}.class" for c in classes} <= names
    assert not any(n.upper().endswith((".SF", ".RSA", ".DSA")) for n in names)
