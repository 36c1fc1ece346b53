"""A savepoint of a version before the batched customer operator (issue 13) restores with its
customers: their three JSON values become the one encoded state, and the pending reminder
fires with the profile and cart they held.

The old operator was PyFlink's own keyed process operator under the uid ``customers``, with
three string ``ValueState`` s (``profile``, ``cart``, ``journey``) and the journey's timer in
PyFlink's ``user-timers`` service. A stand-in of its customer function writes exactly that
(the JSON forms in ``udfs.core.journey``) for one customer, the job is stopped with a
savepoint, and the real job resumes from it, reading only a new topic with one clock event.
The customer sends nothing to the new job: all it knows of her comes from the old state.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from pyflink.datastream.functions import KeyedProcessFunction

from job.dev.broker import TansuBroker
from job.dev.kafka_io import produce
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.factories import HOUR, MINUTE, T0, cart_only, kafka_record, page_view
from udfs.core import journey as j

CUSTOMER = "legacy-lea"
DUE = T0 + HOUR


class LegacyCustomerFunction(KeyedProcessFunction):
    """What the customer function of versions before issue 13 kept for a customer with an
    open cart and step 1 pending: three JSON strings and one timer at the due time."""

    def open(self, runtime_context) -> None:
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        self.states = [
            runtime_context.get_state(ValueStateDescriptor(name, Types.STRING()))
            for name in ("profile", "cart", "journey")
        ]

    def process_element(self, value, ctx):
        from pyflink.common import Row

        key = value[0]
        profile = j.Profile(
            customer_id=key,
            first_seen=T0,
            last_seen=T0,
            email="lea@example.com",
            first_name="Lea",
            event_counts={"identify": 1, "cart_add": 1},
            journey_status="waiting_step_1",
            version=2,
            seen_ids=["l-1", "l-2"],
        )
        cart = j.Cart("cart-lea", "EUR", T0, [j.CartItem("p1", "Mug", 12.5, 2)])
        pending = j.Journey(armed_at=T0, cart_id="cart-lea", step=1, due_at=DUE)
        for state, text in zip(
            self.states,
            (j.dump_profile(profile), j.dump_cart(cart), j.dump_journey(pending)),
            strict=True,
        ):
            state.update(text)
        ctx.timer_service().register_event_time_timer(DUE)
        yield Row(key, json.dumps({"written": key}))

    def on_timer(self, timestamp, ctx):
        return iter(())


def write_legacy_savepoint(broker: TansuBroker, tmp_path: Path) -> str:
    """Runs the old operator's stand-in on one event of CUSTOMER and stops it with a
    savepoint (no drain: the timer stays pending); the savepoint's path."""
    from pyflink.common import WatermarkStrategy

    from job.main import create_env, flink_settings, kafka_sink, kafka_source, with_rest_endpoint
    from job.ops import FlinkRest
    from job.pipeline import event_time_strategy, keyed_by_customer
    from udfs.flink.customer_function import KEYED_EVENT, KEYED_JSON

    cfg, topics = job_on_fresh_topics(broker, f"old-{uuid.uuid4().hex[:8]}", 1, {})
    produce(broker.bootstrap, topics["events"], [kafka_record(page_view(CUSTOMER, T0))])
    settings, rest_url = with_rest_endpoint(
        flink_settings(
            overrides={
                "parallelism.default": "1",
                "execution.checkpointing.interval": "1s",
                "execution.checkpointing.dir": (tmp_path / "old-checkpoints").as_uri(),
            }
        )
    )
    env = create_env(settings)
    raw = env.from_source(
        kafka_source(cfg),
        WatermarkStrategy(event_time_strategy(cfg)),
        "old-events",
        type_info=KEYED_EVENT,
    ).uid("old-events")
    written = (
        keyed_by_customer(cfg, raw, enveloped=True)
        .process(LegacyCustomerFunction(), output_type=KEYED_JSON)
        .uid("customers")
    )
    written.sink_to(kafka_sink(cfg, topics["outcomes"])).uid("old-sink")
    client = env.execute_async("inboxflow-before-issue-13")
    reader = OutputReader(broker.bootstrap, [topics["outcomes"]])
    try:
        reader.wait_for(lambda r: len(r.records) == 1, "the old state written", timeout_s=90)
        time.sleep(2)  # a checkpoint after it: the savepoint below is what counts
        # PyFlink 2.0.2's JobClient.stop_with_savepoint calls a Java method that no longer
        # exists; the REST API is what `inboxflow stop --savepoint` uses
        savepoint = FlinkRest(rest_url).stop_with_savepoint(
            str(client.get_job_id()), str(tmp_path / "savepoints"), 120
        )
    finally:
        reader.close()
    return savepoint.removeprefix("file:")


@pytest.mark.slow
def test_a_savepoint_of_the_old_operator_restores_its_customers(
    broker: TansuBroker, tmp_path: Path
) -> None:
    savepoint = write_legacy_savepoint(broker, tmp_path)
    cfg, topics = job_on_fresh_topics(broker, f"new-{uuid.uuid4().hex[:8]}", 1, cart_only())
    # a clock event of someone else, far enough on to move the watermark past the due time
    produce(broker.bootstrap, topics["events"], [kafka_record(page_view("clock", DUE + MINUTE))])
    reader = OutputReader(broker.bootstrap, [topics["requests"]])
    try:
        with running_job(
            cfg,
            tmp_path / "checkpoints",
            parallelism=1,
            flink_overrides={
                "execution.savepoint.path": savepoint,
                # the old job's source and sink are not in the new job
                "execution.savepoint.ignore-unclaimed-state": "true",
            },
        ) as job:
            reader.wait_for(
                lambda r: len(r.records) >= 1, "Lea's reminder", timeout_s=120, alive=job
            )
            reader.drain(quiet_s=3, alive=job)
    finally:
        reader.close()
    (request,) = [r.value for r in reader.records]
    assert (request["customer_id"], request["to"], request["step"]) == (
        CUSTOMER,
        "lea@example.com",
        1,
    )
    assert request["metadata"]["due_at_ms"] == DUE
    assert request["subject"].startswith("Lea, ")
    assert request["request_id"] == j.request_id("abandoned_cart", CUSTOMER, "cart-lea", T0, 1)
