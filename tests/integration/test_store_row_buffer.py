"""The customer function's ClickHouse row buffer on Flink's mini-cluster.

Under ``io.inboxflow.flink.CustomerOperator`` (what ``job.pipeline`` builds in thread mode) the
function emits the rows of many events as one element per shard: when its buffer holds
``store_buffer_events`` events, and for the rest when the operator drains it (here only at the
end of the input: the drain timer is pushed out of the run). Under PyFlink's plain operator
nobody drains a buffer, so the function must emit every event's rows at once.
"""

from __future__ import annotations

import json

from tests.factories import MINUTE, T0, page_view, raw
from tests.integration.conftest import bounded_settings

CUSTOMERS = ["c1", "c2", "c3", "c4", "c5"]
EVENTS = 20
BUFFER = 7
SHARDS = 2


def run_customers(drained: bool) -> list[tuple[int, list[tuple[str, int]]]]:
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
    env = create_env(bounded_settings(1))
    events = [raw(page_view(CUSTOMERS[i % len(CUSTOMERS)], T0 + i * MINUTE)) for i in range(EVENTS)]
    keyed = keyed_by_customer(cfg, env.from_collection(events, type_info=Types.STRING()))
    function = CustomerFunction(core_settings(cfg, store=True), store_buffer_events=BUFFER)
    routed = (
        process_customers(keyed, function, drain_interval_ms=3_600_000)
        if drained
        else keyed.process(function, output_type=ROUTED)
    )
    elements = []
    with routed.execute_and_collect("store-row-buffer") as rows:
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
    their first event in the chunk), the rows of that shard's events in order."""
    from udfs.core.customer import shard_of

    versions: dict[str, int] = {}
    out = []
    for start in range(0, EVENTS, chunk):
        by_shard: dict[int, list[tuple[str, int]]] = {}
        for i in range(start, min(start + chunk, EVENTS)):
            cid = CUSTOMERS[i % len(CUSTOMERS)]
            versions[cid] = versions.get(cid, 0) + 1
            by_shard.setdefault(shard_of(cid, SHARDS), []).append((cid, versions[cid]))
        out.extend(by_shard.items())
    return out


def test_customer_operator_emits_the_rows_of_many_events_per_element():
    got = run_customers(drained=True)
    # 20 events, 7 per buffer: two full buffers emitted by the function, the last 6 events'
    # rows drained by the operator ahead of the final watermark
    assert got == expected(BUFFER)
    assert {shard for shard, _ in got} == {0, 1}  # the customers span both shards
    assert len(got) < EVENTS


def test_without_the_customer_operator_every_event_is_emitted_at_once():
    assert run_customers(drained=False) == expected(1)
