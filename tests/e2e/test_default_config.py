"""The job as shipped: ``inboxflow run`` with the unmodified ``conf/job.yaml`` and
``flink-conf.yaml`` (starting offsets ``committed``, group ``inboxflow``, the default topic names,
checkpoints every 10 s, ClickHouse on the embedded engine under the working directory); only the
bootstrap comes from ``INBOXFLOW_KAFKA_BOOTSTRAP``. The broker is this module's own.

Run 1 reads a new group's partitions from the start (``committed`` falls back to earliest),
sends A's and C's emails and commits the end offsets on a checkpoint; it is stopped with
Ctrl-C. Run 2, same group, reads only what was produced after: it sends B's emails and none
of A's or C's again (a re-read of run 1's events would re-send them: run 2 starts without
state and its clock events pass their due time again).

The shipped campaigns are all on: every identify with an address starts the welcome
campaign, whose step 1 (transactional) is due at once; its step 2 (3 days on) and the cart's
step 2 (a day on) are never due here. The guards let everything through: the welcome is
transactional, one marketing email per customer stays under the frequency cap, and every
email is due between 08:00 and 21:00 UTC (the default time zone's quiet hours end at 08:00).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from job.config import load_config
from job.dev.broker import TansuBroker
from job.dev.kafka_io import create_topics, end_offsets_from_deliveries, produce
from tests.e2e.cli_run import CliRun, wait_for_commit
from tests.e2e.conftest import OutputReader
from tests.factories import (
    CAMPAIGN,
    HOUR,
    T0,
    cart_add,
    identify,
    kafka_record,
    page_view,
    query_cli,
)
from udfs.core.journey import request_id

A, B, C = "cust-a", "cust-b", "cust-c"  # partitions 1, 1, 0 (murmur2 % 2)
CLOCK = {0: "shopper-1", 1: "shopper-0"}  # a customer per partition moves its watermark
EXPECTED_PARTITION = {A: 1, B: 1, C: 0, "shopper-1": 0, "shopper-0": 1}
WAIT_S = 150  # start-up of a whole job on a loaded 2-core machine included
COMMIT_S = 90  # checkpoints every 10 s (flink-conf.yaml)
QUIET_S = 3
WELCOME = "welcome"  # conf/campaigns.yaml


def _clock(ts: int) -> list[dict]:
    return [page_view(CLOCK[p], ts) for p in sorted(CLOCK)]


RUN_1 = [
    identify(A, T0, email="ann@example.com", first_name="Ann"),
    cart_add(A, T0, cart_id="cart-a"),
    identify(C, T0, email="cy@example.com", first_name="Cy"),
    cart_add(C, T0 + 10 * 60_000, cart_id="cart-c"),
    *_clock(T0 + 2 * HOUR),
]
RUN_2 = [
    identify(B, T0 + 3 * HOUR, email="bob@example.com", first_name="Bob"),
    cart_add(B, T0 + 3 * HOUR, cart_id="cart-b"),
    *_clock(T0 + 5 * HOUR),
]


def _send(bootstrap: str, topic: str, events: list[dict]) -> list[tuple[int, int]]:
    deliveries = produce(bootstrap, topic, [kafka_record(e) for e in events])
    for event, (partition, _) in zip(events, deliveries, strict=True):  # the scenario's premise
        assert partition == EXPECTED_PARTITION[event["customer_id"]], event["customer_id"]
    return deliveries


def _requests(reader: OutputReader, topic: str) -> list[tuple]:
    return sorted(
        (
            r.key,
            r.value["campaign"],
            r.value["to"],
            r.value["step"],
            r.value["request_id"],
            r.value["metadata"]["due_at_ms"],
        )
        for r in reader.of(topic)
    )


def _outcomes(reader: OutputReader, topic: str) -> list[tuple]:
    return sorted(
        (r.value["kind"], r.key, r.value.get("campaign"), r.value.get("step"))
        for r in reader.of(topic)
    )


def _welcome(customer_id: str, to: str, identified: int) -> tuple:
    """The welcome campaign's step 1: due at the identify event."""
    return (
        customer_id,
        WELCOME,
        to,
        1,
        request_id(WELCOME, customer_id, None, identified, 1),
        identified,
    )


@pytest.mark.slow
def test_shipped_config_consumes_commits_and_continues_where_it_stopped(
    broker: TansuBroker, tmp_path: Path
) -> None:
    shipped = load_config(env={}).kafka
    assert (shipped.starting_offsets, shipped.group_id) == ("committed", "inboxflow")
    topics = shipped.topics
    create_topics(
        broker.bootstrap,
        {topics.events: 2, topics.dlq: 1, topics.email_requests: 1, topics.outcomes: 1},
    )
    ends = end_offsets_from_deliveries(_send(broker.bootstrap, topics.events, RUN_1))
    reader = OutputReader(broker.bootstrap, [topics.email_requests, topics.outcomes, topics.dlq])
    try:
        with CliRun(broker, tmp_path, log_name="run1.log") as run:
            reader.wait_for(
                lambda r: len(r.of(topics.email_requests)) >= 4,
                "A's and C's welcome emails and reminders",
                WAIT_S,
                run,
            )
            wait_for_commit(broker.bootstrap, "inboxflow", topics.events, ends, COMMIT_S, run)
            reader.drain(QUIET_S, run)
        run_1 = (_requests(reader, topics.email_requests), _outcomes(reader, topics.outcomes))

        deliveries = _send(broker.bootstrap, topics.events, RUN_2)
        ends = {**ends, **end_offsets_from_deliveries(deliveries)}
        with CliRun(broker, tmp_path, log_name="run2.log") as run:
            reader.wait_for(
                lambda r: len(r.of(topics.email_requests)) >= 6,
                "B's welcome email and reminder",
                WAIT_S,
                run,
            )
            wait_for_commit(broker.bootstrap, "inboxflow", topics.events, ends, COMMIT_S, run)
            reader.drain(QUIET_S, run)
    finally:
        reader.close()

    a_request = (
        A,
        CAMPAIGN,
        "ann@example.com",
        1,
        request_id(CAMPAIGN, A, "cart-a", T0, 1),
        T0 + HOUR,
    )
    c_request = (
        C,
        CAMPAIGN,
        "cy@example.com",
        1,
        request_id(CAMPAIGN, C, "cart-c", T0 + 10 * 60_000, 1),
        T0 + 70 * 60_000,
    )
    b_request = (
        B,
        CAMPAIGN,
        "bob@example.com",
        1,
        request_id(CAMPAIGN, B, "cart-b", T0 + 3 * HOUR, 1),
        T0 + 4 * HOUR,
    )
    welcomes = {
        A: _welcome(A, "ann@example.com", T0),
        B: _welcome(B, "bob@example.com", T0 + 3 * HOUR),
        C: _welcome(C, "cy@example.com", T0),
    }

    def outcomes(*customers: str) -> list[tuple]:
        return sorted(
            (kind, c, campaign, step)
            for c in customers
            for kind, campaign, step in (
                ("abandoned", None, None),
                ("sent", CAMPAIGN, 1),
                ("sent", WELCOME, 1),
            )
        )

    assert run_1 == (
        sorted([a_request, c_request, welcomes[A], welcomes[C]]),
        outcomes(A, C),
    )
    # run 2 added B's and nothing of run 1 again
    assert _requests(reader, topics.email_requests) == sorted(
        [a_request, b_request, c_request, *welcomes.values()]
    )
    assert _outcomes(reader, topics.outcomes) == outcomes(A, B, C)
    assert reader.of(topics.dlq) == []

    # the shipped ClickHouse writer ran too, on var/clickhouse under the working directory
    dsn = f"chdb://{tmp_path / 'var' / 'clickhouse'}"
    rows = query_cli(
        dsn,
        "SELECT customer_id, campaign, step, status FROM email_requests FINAL "
        "ORDER BY customer_id, campaign",
    )
    assert [(r["customer_id"], r["campaign"], r["step"], r["status"]) for r in rows] == [
        (c, campaign, 1, "sent") for c in (A, B, C) for campaign in sorted((CAMPAIGN, WELCOME))
    ]
