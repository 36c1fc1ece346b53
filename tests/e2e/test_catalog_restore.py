"""The catalog operator's broadcast state survives a stop-with-savepoint and a resume at another
parallelism: the real ``inboxflow run`` (its own process, the real CLI and broker), as in
``test_resume.py``, with no catalog file and a catalog topic of one record, ``p-restore``.

Run 1 (parallelism 1) reads the record: a cart of customer ``a`` that names the product by its
id alone gets a reminder showing "Restored Lamp"; then ``inboxflow stop --savepoint``. Run 2
resumes from the savepoint at parallelism 2 (the one broadcast state of run 1 is copied to
both subtasks) and gets, on each event partition, a customer ``b`` whose cart_add carries only
``product_id`` ``p-restore`` (``price`` is required by ``conf/schemas/cart_add.json``: only
the catalog can fill it). Both ``b`` reminders show "Restored Lamp" at €42.50, and no cart_add
of theirs is in the DLQ.

Why this proves the restore: the catalog topic's Kafka source has its offset (after the one
record) in the savepoint, so run 2's source continues after the record and never delivers it
again; the topic gets nothing new. Only the restored broadcast state can know the product. The
test checks both halves of that argument instead of trusting them:

* the source of the catalog topic emitted 1 record in run 1 and 0 in run 2 (its
  ``numRecordsOut`` through the REST API);
* a cart_add in run 2 for a product the catalog does not know (customer ``c``) goes to the DLQ
  as ``schema_violation`` at ``$.properties.price``: without the restored state, the ``b``
  cart_adds would have gone the same way and no ``b`` reminder would exist.

A negative control that resumes without the savepoint with the topic source at ``latest`` is
not possible without changing the job: ``catalog_source`` (``job/main.py``) always starts at
the earliest offset on a fresh start, by design, and has no setting for it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import create_topics, produce
from job.monitor import JobMonitor
from tests.e2e.conftest import OutputReader
from tests.e2e.test_resume import (
    BOUND,
    WAIT_S,
    RunProcess,
    Scenario,
    cli,
    clock,
    wait_for_requests,
)
from tests.factories import HOUR, MINUTE, T0, cart_only, ev, identify, keys_by_partition

pytestmark = pytest.mark.slow

PRODUCT = {
    "product_id": "p-restore",
    "name": "Restored Lamp",
    "price": 42.5,
    "currency": "EUR",
    "image_url": "https://cdn.example.com/r.jpg",
    "category": "lamps",
}
FETCH_S = 2  # flink-conf.yaml metrics.fetcher.update-interval


def bare_cart_add(cid: str, ts: int, product_id: str, quantity: int) -> dict:
    """A cart_add naming its product by id alone: no price, no name."""
    props = {"product_id": product_id, "quantity": quantity, "cart_id": f"cart-{cid}"}
    return ev("cart_add", cid, ts, properties={**props, "currency": "EUR"})


def catalog_source_records(rest_url: str, job_id: str) -> int | None:
    """Records the catalog topic's source (vertex ``Source: kafka-catalog``) has emitted, summed
    over its subtasks; None while the REST server has not fetched the metric."""

    def get(path: str) -> object:
        with urllib.request.urlopen(f"{rest_url}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    job = get(f"/jobs/{job_id}")
    assert isinstance(job, dict)
    (vertex,) = [v for v in job["vertices"] if "kafka-catalog" in v["name"]]
    values = get(f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics?get=numRecordsOut")
    for metric in values if isinstance(values, list) else []:
        if metric.get("id") == "numRecordsOut" and "sum" in metric:
            return int(float(metric["sum"]))
    return None


def wait_for_metric(read, want: int, what: str, alive) -> None:
    deadline = time.monotonic() + WAIT_S
    seen = None
    while seen != want:
        alive()
        assert time.monotonic() < deadline, f"{what}: {seen}, expected {want}"
        try:
            seen = read()
        except (OSError, ValueError):  # the REST server is not up yet
            seen = None
        time.sleep(0.5)


def test_catalog_broadcast_state_survives_savepoint_and_resume_at_another_parallelism(
    broker: TansuBroker, tmp_path: Path
) -> None:
    sc = Scenario(broker, tmp_path)
    catalog_topic = f"{sc.prefix}.catalog"
    create_topics(broker.bootstrap, {catalog_topic: 1})
    produce(broker.bootstrap, catalog_topic, [("p-restore", json.dumps(PRODUCT).encode(), None)])
    config = sc.config(
        "job", {**cart_only("1h", []), "catalog": {"file": "", "topic": catalog_topic}}
    )
    keys = keys_by_partition(2, 4, f"{sc.prefix}-")  # [a, b, c, clock] per partition
    a = keys[0][0]
    bs = [k[1] for k in keys]
    c = keys[1][2]

    reader = OutputReader(
        broker.bootstrap, [sc.topics["requests"], sc.topics["outcomes"], sc.topics["dlq"]]
    )
    first = RunProcess(sc, "run-1", "--config", str(config), "--parallelism", "1")
    try:
        job_id = first.job()
        # the record has been read before any event: a cart_add cannot race ahead of it
        monitor = JobMonitor(first.rest_url, job_id)
        wait_for_metric(
            lambda: monitor.operator_metric("catalog_products"), 1, "catalog_products", first.alive
        )
        sc.produce(
            [
                identify(a, T0, email=f"{a}@example.com", first_name="Kim"),
                bare_cart_add(a, T0, "p-restore", 1),
            ]
            + clock(keys, T0 + HOUR + MINUTE + BOUND)
        )
        wait_for_requests(
            reader, sc.topics["requests"], [(a, 1, T0 + HOUR)], first.alive, "a's reminder"
        )
        wait_for_metric(
            lambda: catalog_source_records(first.rest_url, job_id),
            1,
            "records of the catalog source in run 1",
            first.alive,
        )
        stopped = cli(
            "stop", job_id, "--savepoint", "--rest", first.rest_url, "--dir", str(tmp_path / "sp")
        )
        assert stopped.returncode == 0, stopped.stderr
        first.proc.wait(timeout=WAIT_S)
        assert first.proc.returncode == 0, first.tail()
    finally:
        first.kill()
    (a_request,) = reader.of(sc.topics["requests"])
    assert "Restored Lamp" in a_request.value["text"]
    savepoint = Path(stopped.stdout.strip().removeprefix("file:"))
    assert (savepoint / "_metadata").is_file()

    second = RunProcess(
        sc,
        "run-2",
        "--config",
        str(config),
        "--parallelism",
        "2",
        "--resume",
        stopped.stdout.strip(),
    )
    try:
        job_id = second.job()
        assert f"resuming from savepoint {savepoint} (completed " in second.log.read_text()
        at = T0 + 2 * HOUR
        carts = {cid: bare_cart_add(cid, at, "p-restore", 2) for cid in bs}
        unknown = bare_cart_add(c, at, "p-unknown", 1)
        sc.produce(
            [
                e
                for cid in [*bs, c]
                for e in (
                    identify(cid, at, email=f"{cid}@example.com", first_name="Kim"),
                    carts.get(cid, unknown),
                )
            ]
            + clock(keys, at + HOUR + MINUTE + BOUND)
        )
        expected = [(a, 1, T0 + HOUR)] + [(cid, 1, at + HOUR) for cid in bs]
        wait_for_requests(reader, sc.topics["requests"], expected, second.alive, "the b reminders")
        # every subtask of run 2 holds the product: both got the state of run 1's one subtask
        assert JobMonitor(second.rest_url, job_id).operator_metric("catalog_products") == 2
        time.sleep(2 * FETCH_S)  # a fresh value: the source ran for a while before the events
        assert catalog_source_records(second.rest_url, job_id) == 0
    finally:
        second.kill()
        reader.close()

    requests = {r.value["customer_id"]: r.value for r in reader.of(sc.topics["requests"])}
    for cid in bs:
        request = requests[cid]
        assert "Restored Lamp" in request["text"] and "€42.50" in request["text"], request["text"]
        items = request["metadata"]["items"]
        assert [(i["product_id"], i["name"], i["price"], i["quantity"]) for i in items] == [
            ("p-restore", "Restored Lamp", 42.5, 2)
        ]
        assert items[0]["image_url"] == PRODUCT["image_url"]
        assert items[0]["category"] == PRODUCT["category"]
        assert request["metadata"]["cart_value"] == 85.0
    dlq = [r.value for r in reader.of(sc.topics["dlq"])]
    assert [(d["event_id"], d["reason"], d["path"]) for d in dlq] == [
        (unknown["event_id"], "schema_violation", "$.properties.price")
    ], dlq
