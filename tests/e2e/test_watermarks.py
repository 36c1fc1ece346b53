"""Event time keeps moving when traffic stops (io.inboxflow.flink.SubtaskWatermarks), on the
real broker with the shipped restart strategy.

* **Burst, then silence** on every partition, at parallelism 1 and 2 with 2 and 4 partitions
  (so a source subtask reads one or several partitions): the partitions end at different
  event times, and exactly the reminders due at or before the newest partition's watermark
  fire. Flink 2.0's own idleness marked a subtask idle without ever emitting its faster
  partitions' watermark, and at parallelism 1 none of them fired. The events are months old
  (a replay), so the lull rule, on by default, must not advance anything with the wall clock:
  a reminder due after the data's watermark never fires.
* **A lull in live data**: events stamped with the wall clock, then silence, no clock events:
  the reminder arrives within out-of-orderness + idleness (+ processing) of its due time.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from job.dev.broker import TansuBroker
from job.dev.kafka_io import produce
from tests.e2e.conftest import OutputReader, job_on_fresh_topics, running_job
from tests.factories import (
    CAMPAIGN,
    HOUR,
    MINUTE,
    SECOND,
    T0,
    cart_add,
    cart_only,
    identify,
    kafka_record,
    keys_by_partition,
)
from udfs.clock import wall_ms
from udfs.core.journey import request_id

WAIT_FOR_JOB_S = 180
QUIET_S = 8
BOUND = 5 * MINUTE
# the last cart activity on each partition, in 10-minute steps: partitions end at different
# event times (partition 1 runs furthest, partition 0 stops first)
STEPS = (2, 30, 10, 20)


def job_config(
    broker: TansuBroker, run: str, partitions: int, abandon_after: str = "1h", **watermarks: str
):
    return job_on_fresh_topics(
        broker,
        f"wm-{run}",
        partitions,
        {"watermarks": watermarks, **cart_only(abandon_after, steps=[])},
    )


@pytest.mark.slow
@pytest.mark.parametrize(("parallelism", "partitions"), [(1, 2), (2, 2), (1, 4), (2, 4)])
def test_burst_then_silence_fires_exactly_the_reminders_due_within_the_data(
    broker: TansuBroker, tmp_path: Path, parallelism: int, partitions: int
) -> None:
    run = uuid.uuid4().hex[:8]
    cfg, topics = job_config(broker, run, partitions, out_of_orderness="5m", idleness="1s")
    assert cfg.watermarks.idle_advance_ms > 0  # the shipped lull rule is on
    steps = STEPS[:partitions]
    customers = keys_by_partition(partitions, max(steps) + 1, f"wm{run}-")
    records, carts = [], {}
    for partition, last in enumerate(steps):
        for i in range(last + 1):  # one customer per 10 minutes, in time order
            cid, ts = customers[partition][i], T0 + i * 10 * MINUTE
            carts[cid] = ts
            for event in (
                identify(cid, ts, email=f"{cid}@example.com", first_name="Kim"),
                cart_add(cid, ts, cart_id=f"cart-{cid}"),
            ):
                records.append(kafka_record(event))
    newest = T0 + max(steps) * 10 * MINUTE
    watermark = newest - BOUND - 1  # of the most advanced partition: where event time ends
    expected = {
        request_id(CAMPAIGN, cid, f"cart-{cid}", ts, 1): cid
        for cid, ts in carts.items()
        if ts + HOUR <= watermark
    }
    assert 0 < len(expected) < len(carts)  # some due within the data, some after it

    reader = OutputReader(broker.bootstrap, [topics["requests"], topics["dlq"]])
    try:
        with running_job(cfg, tmp_path / "checkpoints", parallelism) as job:
            produce(broker.bootstrap, topics["events"], records)
            # then silence on every partition: nothing else is ever produced
            reader.wait_for(
                lambda r: len(r.of(topics["requests"])) >= len(expected),
                f"{len(expected)} reminders",
                WAIT_FOR_JOB_S,
                job,
            )
            reader.drain(QUIET_S, job)
            assert job.restarts() == 0
    finally:
        reader.close()

    got = {r.value["request_id"]: r.key for r in reader.of(topics["requests"])}
    assert got == expected
    assert len(reader.of(topics["requests"])) == len(expected)
    assert reader.of(topics["dlq"]) == []


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_reminder_due_in_a_lull_of_live_data_fires_on_time(
    broker: TansuBroker, tmp_path: Path, parallelism: int
) -> None:
    run = uuid.uuid4().hex[:8]
    bound, idleness = 1 * SECOND, 1 * SECOND
    cfg, topics = job_config(
        broker, run, 2, out_of_orderness="1s", idleness="1s", abandon_after="4s"
    )
    customers = [keys[0] for keys in keys_by_partition(2, 1, f"lull{run}-")]
    reader = OutputReader(broker.bootstrap, [topics["requests"]])
    try:
        with running_job(cfg, tmp_path / "checkpoints", parallelism) as job:
            # the job is up once a first live event has come through: wait for its output
            warm = wall_ms()
            produce(
                broker.bootstrap,
                topics["events"],
                [
                    kafka_record(identify(cid, warm, email=f"{cid}@example.com"))
                    for cid in customers
                ],
            )
            time.sleep(15)  # start-up: the source reads, nothing is due
            now = wall_ms()
            produce(
                broker.bootstrap,
                topics["events"],
                [kafka_record(cart_add(cid, now, cart_id=f"cart-{cid}")) for cid in customers],
            )
            due = now + 4 * SECOND
            # silence on every partition from here on: no clock events
            reader.wait_for(
                lambda r: len(r.of(topics["requests"])) >= len(customers),
                "the reminders due in the lull",
                60,
                job,
            )
            reader.drain(3, job)
            assert job.restarts() == 0
    finally:
        reader.close()

    requests = reader.of(topics["requests"])
    assert sorted(r.key for r in requests) == sorted(customers)
    lateness = [r.timestamp_ms - due for r in requests]  # the sink's produce time
    print(f"lull lateness at parallelism {parallelism}: {sorted(lateness)} ms")
    # due + bound at the earliest, and within bound + idleness (+ 3 s of processing)
    assert all(bound <= late <= bound + idleness + 3 * SECOND for late in lateness), lateness
