"""A checkpoint barrier flushes the customer operator's batch (docs/DESIGN.md#batched-operator).

The real Kafka job, unbounded, with every other way out of a batch switched off: batches of
100,000 events, a batch delay of an hour, and no periodic watermarks
(``pipeline.auto-watermark-interval: 0``), so nothing but the checkpoint barriers (every 2 s)
can apply the events. Their outputs must still arrive; were the barrier not to flush, a
checkpoint would cover events whose effects existed only in the buffer, and here nothing
would come out at all.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from job.dev.broker import TansuBroker
from job.dev.kafka_io import produce
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.factories import T0, cart_only, kafka_record, page_view, teleport


def test_checkpoint_barriers_alone_flush_the_batch(broker: TansuBroker, tmp_path: Path) -> None:
    prefix = f"flush-{uuid.uuid4().hex[:8]}"
    cfg, topics = job_on_fresh_topics(
        broker,
        prefix,
        1,
        {"processing": {"batch_events": 100_000, "batch_delay": "1h"}, **cart_only()},
    )
    view = page_view("A", T0, event_id="pv-1")
    records = [
        kafka_record(view),
        kafka_record(view),  # a duplicate: one outcome
        ("B", teleport("B", "t-1").encode(), None),  # unknown event type: the DLQ
        ("C", b"not json", None),
    ]
    produce(broker.bootstrap, topics["events"], records)
    reader = OutputReader(broker.bootstrap, [topics["dlq"], topics["outcomes"]])
    try:
        with running_job(
            cfg,
            tmp_path / "checkpoints",
            parallelism=1,
            flink_overrides={"pipeline.auto-watermark-interval": "0"},
        ) as job:
            reader.wait_for(
                lambda r: len(r.of(topics["dlq"])) == 2 and len(r.of(topics["outcomes"])) == 1,
                "the batch's outputs, flushed by a checkpoint barrier",
                timeout_s=90,
                alive=job,
            )
            reader.drain(quiet_s=3, alive=job)
    finally:
        reader.close()
    assert sorted(r.value["reason"] for r in reader.of(topics["dlq"])) == [
        "not_json",
        "unknown_event_type",
    ]
    (outcome,) = reader.of(topics["outcomes"])
    assert (outcome.key, outcome.value["kind"], outcome.value["event_id"]) == (
        "A",
        "duplicate",
        "pv-1",
    )
