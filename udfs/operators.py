"""Thin PyFlink wrappers: they move data between Flink (state, timers, side outputs,
metrics, the wall clock) and the pure modules, and hold no logic of their own.

Streams between operators carry plain types declared on every operator:
``RAW_EVENT`` = Row(key, event time ms, raw event text, Kafka record time ms), read on the JVM
by ``io.inboxflow.flink.EnvelopeExtractor`` (key = trimmed customer_id, "" when unreadable),
``ROUTED`` = (kind, shard, key, table, payload): everything the customer function emits,
split on the JVM by ``io.inboxflow.flink.OutputRouter`` into ``KEYED_JSON`` = Row(key, JSON
text) side outputs for the Kafka sinks (kinds ``KIND_REQUEST``, ``KIND_DLQ``,
``KIND_OUTCOME``) and, for ``KIND_STORE``, ``KEYED_STORE_ROW`` = Row(shard, STORE_ROW) with
``STORE_ROW`` = (shard, "", lines), keyed on the JVM for the ClickHouse writer, where lines
are ``table<TAB>row JSON`` lines: the rows of many events of one shard (see
:meth:`CustomerFunction.take_store_rows`).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from pathlib import Path

import orjson
from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs.journey import (
    CustomerLogic,
    CustomerState,
    Decision,
    JourneySettings,
    dump_cart,
    dump_journey,
    dump_profile,
    load_cart,
    load_journey,
    load_profile,
)
from udfs.render import Renderer, TemplateError
from udfs.store import json_ready
from udfs.validation import EventValidator, Invalid, dlq_record

log = logging.getLogger("inboxflow")

RAW_EVENT = Types.ROW([Types.STRING(), Types.LONG(), Types.STRING(), Types.LONG()])
# what io.inboxflow.flink.EnvelopeExtractor emits: Row(key, RAW_EVENT)
KEYED_EVENT = Types.ROW([Types.STRING(), RAW_EVENT])
KEYED_JSON = Types.ROW([Types.STRING(), Types.STRING()])
STORE_ROW = Types.TUPLE([Types.INT(), Types.STRING(), Types.STRING()])
# OutputRouter's main output: Row(shard, STORE_ROW), keyed on the JVM side
KEYED_STORE_ROW = Types.ROW([Types.INT(), STORE_ROW])

ROUTED = Types.TUPLE([Types.INT(), Types.INT(), Types.STRING(), Types.STRING(), Types.STRING()])
# Kinds of ROUTED elements; must match io.inboxflow.flink.OutputRouter. No Python side
# outputs: each one is a separate call into the JVM (15-55 us measured, against next to nothing
# for a main-output element), and one feeding another Python operator can deadlock.
KIND_STORE, KIND_REQUEST, KIND_DLQ, KIND_OUTCOME = 0, 1, 2, 3

# keyed state names of CustomerFunction
PROFILE_STATE = "profile"
CART_STATE = "cart"
JOURNEY_STATE = "journey"

NO_KAFKA_TIME = -1
MAX_WATERMARK = 2**63 - 1
# events whose ClickHouse rows the customer function emits as one element when its buffer
# is drained by io.inboxflow.flink.CustomerOperator (which also drains it every 50 ms, before
# every checkpoint barrier and at the end of the input)
STORE_BUFFER_EVENTS = 200

# The customer function opened on this task thread: io.inboxflow.flink.CustomerOperator
# calls drain_store_rows on the same thread, so it finds its own subtask's function.
_TASK = threading.local()
# appended to each profile row for the writer's freshness measurement, never stored
FRESHNESS_KEY = "source_kafka_ms"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def drain_store_rows(why: str) -> list | None:
    """Called by ``io.inboxflow.flink.CustomerOperator`` on the task thread (``why``: open,
    timer, checkpoint, final watermark, end of input, finish): the buffered ClickHouse rows
    of this thread's customer function as a flat list ``[shard, lines, ...]``, or None when
    no customer function was opened on this thread."""
    function = getattr(_TASK, "function", None)
    return None if function is None else function.take_store_rows()


def shard_of(customer_id: str, shards: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process.
    return zlib.crc32(customer_id.encode()) % shards


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


class CustomerFunction(KeyedProcessFunction):
    """Keyed by customer id. Validates each raw event first (invalid input goes to
    the DLQ with a reason; nothing raised by bad input can fail the job), then runs the
    pure journey logic. Validation lives here rather than in its own operator because in
    thread mode every Python operator costs a trip through one shared interpreter lock.

    State: ``profile`` (always, once seen), ``cart`` (while a cart is open), ``journey``
    (while a reminder is pending); each is cleared when the pure logic sets it to ``None``.
    At most one event-time timer: the journey's ``due_at``."""

    def __init__(self, settings: JourneySettings, template_dir: Path, cart_base_url: str,
                 store_shards: int, schema_dir: Path, max_event_bytes: int,
                 max_future_ms: int, store_buffer_events: int = STORE_BUFFER_EVENTS):
        self.schema_dir = str(schema_dir)
        self.max_event_bytes = max_event_bytes
        self.max_future_ms = max_future_ms
        self.settings = settings
        self.template_dir = str(template_dir)
        self.cart_base_url = cart_base_url
        self.store_shards = store_shards  # 0: no profile store
        self.store_buffer_events = store_buffer_events

    def open(self, runtime_context: RuntimeContext) -> None:
        self.validator = EventValidator(Path(self.schema_dir), self.max_event_bytes,
                                        self.max_future_ms)
        self.logic = CustomerLogic(self.settings)
        self.renderer = Renderer(Path(self.template_dir), self.cart_base_url)
        self.profile = runtime_context.get_state(
            ValueStateDescriptor(PROFILE_STATE, Types.STRING()))
        self.cart = runtime_context.get_state(ValueStateDescriptor(CART_STATE, Types.STRING()))
        self.journey = runtime_context.get_state(
            ValueStateDescriptor(JOURNEY_STATE, Types.STRING()))
        # Plain ints exposed as gauges: a PyFlink counter.inc() is a call into the JVM, and
        # per-event calls into the JVM are what limits thread-mode throughput.
        self.counts = dict.fromkeys((
            "events_valid", "events_invalid", "late", "duplicate", "abandoned", "sent",
            "skipped", "cancelled", "completed", "recovered"), 0)
        # ClickHouse rows per shard, each entry the rows of one event; see take_store_rows
        self._store_buffer: dict[int, list[str]] = {}
        self._buffered_events = 0
        self._drained = False  # True once a CustomerOperator drains the buffer
        _TASK.function = self
        metrics = runtime_context.get_metrics_group()
        for name in self.counts:
            metrics.gauge(name if name.startswith("events") else f"journey_{name}",
                          lambda name=name: self.counts[name])

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        key, _, text, kafka_ts = value
        event = self._validate(key, text)
        if type(event) is tuple:
            yield event
            return
        state, raw, old_timer = self._load()
        decision = self.logic.on_event(state, event, ctx.timer_service().current_watermark())
        yield from self._apply(state, raw, old_timer, decision, ctx, kafka_ts)

    def _validate(self, key: str, text: str) -> dict | tuple:
        """The normalized event, or the ROUTED DLQ element for it."""
        seen_at = now_ms()
        try:
            result = self.validator.validate(text, seen_at)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not take the job down
            result = Invalid("internal_error", "$", f"validator failed: {type(exc).__name__}")
        if not isinstance(result, Invalid) and result["customer_id"] != key:
            # the JVM-side key extraction read the id differently (exotic white space)
            result = Invalid("key_mismatch", "$.customer_id",
                             "customer_id could not be used as the partition key",
                             result["event_id"], result["customer_id"])
        if isinstance(result, Invalid):
            self.counts["events_invalid"] += 1
            log.warning("invalid event customer=%s event_id=%s reason=%s path=%s",
                        result.customer_id, result.event_id, result.reason, result.path)
            record = dlq_record(text, result, seen_at, self.max_event_bytes)
            return (KIND_DLQ, 0, result.customer_id, "", _dumps(record))
        self.counts["events_valid"] += 1
        return result

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        state, raw, old_timer = self._load()
        decision = self.logic.on_timer(state, timestamp)
        yield from self._apply(state, raw, old_timer, decision, ctx, NO_KAFKA_TIME)
        if self._buffered_events and ctx.timer_service().current_watermark() == MAX_WATERMARK:
            # a bounded input ended: the final watermark goes downstream after these timers
            yield from self._emit_store_buffer()

    def close(self) -> None:
        if getattr(_TASK, "function", None) is self:
            del _TASK.function

    def take_store_rows(self) -> list:
        """Empty the row buffer: ``[shard, lines, shard, lines, ...]``.

        Every element handed to the JVM is a round trip through the shared interpreter
        (about 35 us here, against 2 us to build an event's rows); one per event cut the
        job's throughput by a fifth with the store on. So once a ``CustomerOperator`` has
        called this (it does in ``open``), the rows of up to ``store_buffer_events`` events
        travel as one element per shard. The operator calls this before every checkpoint
        barrier, so no checkpoint covers an event whose rows exist only here."""
        self._drained = True
        flat: list = []
        for shard, entries in self._store_buffer.items():
            flat.append(shard)
            flat.append("\n".join(entries))
        self._store_buffer.clear()
        self._buffered_events = 0
        return flat

    def _emit_store_buffer(self):
        flat = self.take_store_rows()
        for i in range(0, len(flat), 2):
            yield (KIND_STORE, flat[i], "", "", flat[i + 1])

    def _load(self) -> tuple[CustomerState, tuple, int | None]:
        """The state, its raw JSON (to skip unchanged writes) and the registered timer."""
        raw = (self.profile.value(), self.cart.value(), self.journey.value())
        journey = load_journey(raw[2]) if raw[2] else None
        state = CustomerState(
            profile=load_profile(raw[0]) if raw[0] else None,
            cart=load_cart(raw[1]) if raw[1] else None,
            journey=journey,
        )
        # read before the logic mutates state.journey in place
        return state, raw, journey.due_at if journey else None

    def _apply(self, state: CustomerState, raw: tuple, old_timer: int | None, d: Decision,
               ctx, kafka_ts: int):
        if old_timer != d.timer:
            if old_timer is not None:
                ctx.timer_service().delete_event_time_timer(old_timer)
            if d.timer is not None:
                ctx.timer_service().register_event_time_timer(d.timer)
        self._save(self.profile, raw[0], state.profile, dump_profile)
        self._save(self.cart, raw[1], state.cart, dump_cart)
        self._save(self.journey, raw[2], state.journey, dump_journey)

        rows = d.rows
        for trigger in d.triggers:
            yield from self._render(trigger, rows)
        for outcome in d.outcomes:
            self.counts[outcome["kind"]] += 1
            yield (KIND_OUTCOME, 0, outcome["customer_id"], "", _dumps(outcome))
        if self.store_shards and rows:
            # All the rows of one event (one customer, so one shard) as one buffer entry.
            lines = []
            for table, row in rows:
                if table == "email_requests" and row["emitted_at"] is None:
                    row["emitted_at"] = now_ms()  # decided (suppressed) now
                json_ready(table, row)
                if table == "customer_profiles":
                    row[FRESHNESS_KEY] = kafka_ts  # last key: the writer cuts it off
                lines.append(f"{table}\t{_dumps(row)}")
            cid = rows[0][1]["customer_id"]
            shard = shard_of(cid, self.store_shards)
            if not self._drained:  # nobody empties a buffer: one element per event
                yield (KIND_STORE, shard, cid, "", "\n".join(lines))
                return
            self._store_buffer.setdefault(shard, []).append("\n".join(lines))
            self._buffered_events += 1
            if self._buffered_events >= self.store_buffer_events:
                yield from self._emit_store_buffer()

    def _render(self, trigger: dict, rows: list):
        emitted = now_ms()
        rid = trigger["request_id"]
        row = next(r for t, r in rows if t == "email_requests" and r["request_id"] == rid)
        try:
            request = self.renderer.render(trigger, emitted)
        except TemplateError as exc:
            log.error("render failed customer=%s request_id=%s reason=%s",
                      trigger["customer_id"], rid, exc)
            self.counts["skipped"] += 1
            row.update(status="suppressed", reason="render_failed")
            yield (KIND_OUTCOME, 0, trigger["customer_id"], "", _dumps({
                "kind": "skipped", "customer_id": trigger["customer_id"],
                "event_time": trigger["due_at"], "step": trigger["step"],
                "request_id": rid, "reason": "render_failed"}))
            return
        row.update(subject=request["subject"], emitted_at=emitted)
        yield (KIND_REQUEST, 0, trigger["customer_id"], "", _dumps(request))

    @staticmethod
    def _save(handle, old_raw, value, dump) -> None:
        if value is None:
            if old_raw is not None:
                handle.clear()
            return
        new_raw = dump(value)
        if new_raw != old_raw:
            handle.update(new_raw)
