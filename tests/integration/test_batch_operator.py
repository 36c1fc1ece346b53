"""The batches of ``io.inboxflow.flink.BatchCustomerOperator`` on Flink's mini-cluster.

``job.pipeline`` builds the batched operator: it applies ``batch_events`` events with one
call into Python, and the ClickHouse rows of a batch leave as one element per shard, with
one profile row per customer (its newest version); the last, partial batch is flushed
before the final watermark (the delay timer is pushed out of the run). PyFlink's own keyed
operator calls the function's plain path per element: batches of one, every event's rows
at once.
"""

from __future__ import annotations

import json

from tests.factories import MINUTE, T0, page_view, raw
from tests.integration.conftest import bounded_settings

CUSTOMERS = ["c1", "c2", "c3", "c4", "c5"]
EVENTS = 20
BATCH = 7
SHARDS = 2


def run_customers(batched: bool) -> list[tuple[int, list[tuple[str, int]]]]:
    """The store elements the customer function emits for EVENTS page views:
    [(shard, [(customer_id, profile version), ...]), ...] in emission order."""
    from pyflink.common import Types

    from job.config import load_config
    from job.main import create_env
    from job.pipeline import core_settings, keyed_by_customer, process_customers
    from udfs.core import contract
    from udfs.core.contract import Kind
    from udfs.flink.customer_function import ROUTED, CustomerFunction

    cfg = load_config(overrides={"clickhouse": {"enabled": True, "shards": SHARDS}})
    # no periodic watermarks: each would flush the batch it finds (the final one still comes)
    env = create_env({**bounded_settings(1), "pipeline.auto-watermark-interval": "0"})
    events = [raw(page_view(CUSTOMERS[i % len(CUSTOMERS)], T0 + i * MINUTE)) for i in range(EVENTS)]
    keyed = keyed_by_customer(cfg, env.from_collection(events, type_info=Types.STRING()))
    function = CustomerFunction(core_settings(cfg, store=True))
    routed = (
        process_customers(keyed, function, batch_events=BATCH, batch_delay_ms=3_600_000)
        if batched
        else keyed.process(function, output_type=ROUTED)
    )
    elements = []
    with routed.execute_and_collect("batch-operator") as rows:
        for element in rows:
            assert element[0] == Kind.STORE  # page views send nothing
            shard, store_rows = contract.decode_store(tuple(element))
            profiles = []
            for store_row in store_rows:
                assert store_row.table == "customer_profiles"
                row = json.loads(store_row.row_json)
                profiles.append((row["customer_id"], row["version"]))
            elements.append((shard, profiles))
    return elements


def expected(chunk: int) -> list[tuple[int, list[tuple[str, int]]]]:
    """Events in chunks of ``chunk``, one element per shard per chunk (shards in order of
    their first customer in the chunk), in it one profile row per customer of the chunk (in
    order of their first event): the newest version."""
    from udfs.core.customer import shard_of

    versions: dict[str, int] = {}
    out = []
    for start in range(0, EVENTS, chunk):
        newest: dict[str, int] = {}
        for i in range(start, min(start + chunk, EVENTS)):
            cid = CUSTOMERS[i % len(CUSTOMERS)]
            versions[cid] = newest[cid] = versions.get(cid, 0) + 1
        by_shard: dict[int, list[tuple[str, int]]] = {}
        for cid, version in newest.items():
            by_shard.setdefault(shard_of(cid, SHARDS), []).append((cid, version))
        out.extend(by_shard.items())
    return out


def test_the_batched_operator_emits_the_rows_of_a_batch_per_shard():
    got = run_customers(batched=True)
    # 20 events, 7 per batch: two full batches, the last 6 events flushed ahead of the
    # final watermark
    assert got == expected(BATCH)
    assert {shard for shard, _ in got} == {0, 1}  # the customers span both shards
    assert len(got) < EVENTS


def test_the_plain_operator_applies_batches_of_one():
    assert run_customers(batched=False) == expected(1)
