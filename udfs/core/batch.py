"""A batch of customer events and fired timers, applied in one call (pure Python, no pyflink).

``io.inboxflow.flink.BatchCustomerOperator`` buffers a subtask's events (and the timers the
watermark fires) in arrival order, reads each customer's state from Flink keyed state once
per batch, and hands both over as one MessagePack payload (:func:`decode_batch`). One call
applies the whole batch and answers with one payload (:func:`encode_result`): the states
that changed (new bytes, or deleted), the timer changes (delete / register, at most one
timer per customer) and every output in order, ClickHouse rows last, one element per shard
for the whole batch. Per call into Python this costs what one element cost before, so the
crossing between the JVM and Python is paid per batch, not per event and per state access
(docs/DESIGN.md#batched-operator).

Within a batch a customer's :class:`~udfs.core.customer.Slot` carries the state from one of
its events to the next, decoded once: a customer with several events in one batch sees its
own updates in order, exactly as with one call per event. What Flink gets back is only the
difference between the slot at the start and at the end of the batch.

The plain PyFlink path (``udfs.flink.customer_function.CustomerFunction.process_element``,
PyFlink's own keyed operator and the keyed test harness) applies batches of one through
:meth:`Batch.run`.

Payload (Java to Python), a MessagePack array:
``[watermark, [kind, key, time, text, kafka_time, ...], [key, state, ...]]`` with ``kind``
:data:`EVENT` (``time``: the event time the JVM read, ``text``: the raw event) or
:data:`TIMER` (``time``: the timer, ``text`` nil), ``state`` the customer's bytes or nil,
one pair per customer of the batch. Result (Python to Java):
``[[key, state, ...], [key, delete, register, ...], [kind, shard, key, payload, ...]]``
with ``state`` nil for a deletion, ``delete`` / ``register`` a timer or nil, and the outputs
as :data:`udfs.core.contract.Routed` (the Java constants are checked by
``tests/unit/test_contract.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from udfs.core import contract, journey
from udfs.core.contract import Routed
from udfs.core.customer import CustomerCore, Slot, Step
from udfs.logs import fields

log = logging.getLogger("inboxflow")

LEGACY_UNREADABLE: Final = "legacy_state_unreadable"
EVENT: Final = 0
TIMER: Final = 1
ENTRY_FIELDS: Final = 5  # kind, key, time, text, kafka time
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(tuple[int, list[Any], list[Any]])

Entry = tuple[int, str, int, str | None, int]


@dataclass
class Result:
    """What Flink must apply after a batch, in this order: ``states`` (key, new bytes or
    None to clear), ``timers`` (key, timer to delete or None, timer to register or None),
    then emit ``outputs``."""

    outputs: list[Routed] = field(default_factory=list)
    states: list[tuple[str, bytes | None]] = field(default_factory=list)
    timers: list[tuple[str, int | None, int | None]] = field(default_factory=list)


class Batch:
    """Applies batches for one subtask. ``latency``: wall clock minus Kafka record time (ms)
    of every event applied since the wrapper last took them."""

    def __init__(self, core: CustomerCore) -> None:
        self.core = core
        self.latency: list[int] = []

    def run(
        self,
        entries: Iterable[Entry],
        states: dict[str, bytes | None],
        watermark: int,
        now: int,
    ) -> Result:
        """``entries`` in arrival order; ``states``: Flink's bytes of every customer they
        name (a customer missing here counts as new); ``watermark``: the operator's current
        one (the batch is flushed before a watermark moves); ``now``: the wall clock."""
        core = self.core
        slots = {key: Slot(blob) for key, blob in states.items()}
        outputs: list[Routed] = []
        store: dict[int, list[str]] = {}
        latency = self.latency
        for kind, key, time, text, kafka_ts in entries:
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = Slot(None)
            step: dict[str, Any] | Step
            if kind == EVENT:
                if text is None:  # the JVM sends "" for a record without a value
                    text = ""
                if kafka_ts > 0:
                    latency.append(now - kafka_ts)
                step = core.validate(key, text, now)
                if type(step) is not Step:
                    step = core.on_event(step, text, slot, watermark, kafka_ts, now)
            else:
                step = core.on_timer(key, time, slot, now)
            outputs += step.outputs
            if step.store is not None:
                shard, rows = step.store
                store.setdefault(shard, []).append(rows)
        self.profile_rows(slots, outputs, store, now)
        return self.result(slots, outputs, store)

    def profile_rows(
        self, slots: dict[str, Slot], outputs: list[Routed], store: dict[int, list[str]], now: int
    ) -> None:
        """The newest profile version of each customer of the batch, as one row each."""
        for key, slot in slots.items():
            if slot.snapshot is not None:
                step = self.core.profile_row(key, slot, now)
                outputs += step.outputs
                if step.store is not None:
                    store.setdefault(step.store[0], []).append(step.store[1])

    @staticmethod
    def result(
        slots: dict[str, Slot], outputs: list[Routed], store: dict[int, list[str]]
    ) -> Result:
        """The store rows as one element per shard after every other output, and the
        states and timers that changed."""
        for shard, rows_of_events in store.items():
            outputs.append(contract.encode_store(shard, contract.join_store_rows(rows_of_events)))
        result = Result(outputs=outputs)
        for key, slot in slots.items():
            if slot.blob != slot.first_blob:
                result.states.append((key, slot.blob))
            change = slot.timer_change()
            if change is not None:
                result.timers.append((key, *change))
        return result

    def run_payload(self, payload: bytes, now: int) -> bytes:
        """:meth:`run` on a payload of ``BatchCustomerOperator``; the result's payload."""
        watermark, flat, state_pairs = _DECODER.decode(payload)
        entries = zip(*[iter(flat)] * ENTRY_FIELDS, strict=True)
        pairs = iter(state_pairs)
        result = self.run(entries, dict(zip(pairs, pairs, strict=True)), watermark, now)
        return encode_result(result)


def migrate_states(payload: bytes) -> bytes:
    """State of versions before the batched operator, as ``BatchCustomerOperator`` finds it
    after a restore: ``[key, profile, cart, journey, ...]`` (JSON text or nil each) to
    ``[key, state, ...]`` (the encoded state, or nil for a customer whose values cannot be
    read: logged by customer and reason, and the customer starts afresh)."""
    flat = msgspec.msgpack.decode(payload)
    out: list[Any] = []
    for key, profile, cart, pending in zip(*[iter(flat)] * 4, strict=True):
        try:
            blob = journey.encode_state(journey.state_from_json(profile, cart, pending))
        except Exception as exc:  # noqa: BLE001 - one customer's bad value stops nothing
            log.error(
                "state of an older version not readable; the customer starts afresh",
                extra=fields(customer_id=key, reason=LEGACY_UNREADABLE, error=type(exc).__name__),
            )
            blob = None
        out += (key, blob)
    return _ENCODER.encode(out)


def encode_result(result: Result) -> bytes:
    states: list[Any] = []
    for key, blob in result.states:
        states += (key, blob)
    timers: list[Any] = []
    for key, delete, register in result.timers:
        timers += (key, delete, register)
    outputs: list[Any] = []
    for routed in result.outputs:
        outputs += routed
    return _ENCODER.encode((states, timers, outputs))


def encode_batch(
    watermark: int, entries: Iterable[Entry], states: dict[str, bytes | None]
) -> bytes:
    """The payload ``BatchCustomerOperator`` builds (for tests and the benchmark)."""
    flat: list[Any] = []
    for entry in entries:
        flat += entry
    pairs: list[Any] = []
    for key, blob in states.items():
        pairs += (key, blob)
    return _ENCODER.encode((watermark, flat, pairs))


def decode_result(payload: bytes) -> Result:
    """The inverse of :func:`encode_result` (what the Java side reads; for tests)."""
    states, timers, outputs = msgspec.msgpack.decode(payload)
    result = Result()
    result.states = list(zip(states[0::2], states[1::2], strict=True))
    result.timers = list(zip(timers[0::3], timers[1::3], timers[2::3], strict=True))
    result.outputs = [
        (outputs[i], outputs[i + 1], outputs[i + 2], outputs[i + 3])
        for i in range(0, len(outputs), 4)
    ]
    return result
