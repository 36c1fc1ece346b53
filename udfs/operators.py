"""Thin PyFlink wrappers: they move data between Flink (state, timers, side outputs,
metrics, the wall clock) and the pure modules, and hold no logic of their own.

Streams between operators carry plain types declared on every operator:
``VALID_EVENT`` = (customer_id, event time ms, normalized event JSON, Kafka record time ms),
``KEYED_EVENT`` = Row(customer_id, VALID_EVENT) out of the validator,
``KEYED_JSON`` = Row(key, JSON text) for every Kafka sink,
``STORE_ROW`` = (shard, table, row JSON) for the ClickHouse writer.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs.journey import (CustomerLogic, CustomerState, Decision, JourneySettings,
                          dump_cart, dump_journey, dump_profile, load_cart, load_journey,
                          load_profile)
from udfs.render import Renderer, TemplateError
from udfs.validation import EventValidator, Invalid, dlq_record

log = logging.getLogger("inboxflow")

VALID_EVENT = Types.TUPLE([Types.STRING(), Types.LONG(), Types.STRING(), Types.LONG()])
# what the validator emits: Row(customer_id, VALID_EVENT), ready to be keyed on the JVM side
KEYED_EVENT = Types.ROW([Types.STRING(), VALID_EVENT])
KEYED_JSON = Types.ROW([Types.STRING(), Types.STRING()])
STORE_ROW = Types.TUPLE([Types.INT(), Types.STRING(), Types.STRING()])

DLQ_TAG = OutputTag("dlq", KEYED_JSON)
OUTCOME_TAG = OutputTag("outcomes", KEYED_JSON)
STORE_TAG = OutputTag("store", STORE_ROW)

# keyed state names of CustomerFunction
PROFILE_STATE = "profile"
CART_STATE = "cart"
JOURNEY_STATE = "journey"

NO_KAFKA_TIME = -1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def shard_of(customer_id: str, shards: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process.
    return zlib.crc32(customer_id.encode()) % shards


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


class ValidateFunction(ProcessFunction):
    """Parses, validates and normalizes raw events. Invalid input goes to ``DLQ_TAG`` with a
    reason; nothing raised here can fail the job."""

    def __init__(self, schema_dir: Path, max_event_bytes: int, max_future_ms: int):
        self.schema_dir = str(schema_dir)
        self.max_event_bytes = max_event_bytes
        self.max_future_ms = max_future_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.validator = EventValidator(Path(self.schema_dir), self.max_event_bytes,
                                        self.max_future_ms)
        metrics = runtime_context.get_metrics_group()
        self.valid = metrics.counter("events_valid")
        self.invalid = metrics.counter("events_invalid")

    def process_element(self, value, ctx: ProcessFunction.Context):
        seen_at = now_ms()
        try:
            result = self.validator.validate(value, seen_at)
        except Exception as exc:  # a validator bug must not take the job down
            result = Invalid("internal_error", "$", f"validator failed: {type(exc).__name__}")
        if isinstance(result, Invalid):
            self.invalid.inc()
            log.warning("invalid event customer=%s event_id=%s reason=%s path=%s",
                        result.customer_id, result.event_id, result.reason, result.path)
            record = dlq_record(value, result, seen_at, self.max_event_bytes)
            yield DLQ_TAG, Row(result.customer_id, _dumps(record))
            return
        self.valid.inc()
        # ctx.timestamp() is still the Kafka record time here (event time is assigned
        # after this operator); it is kept only to measure freshness.
        kafka_ts = ctx.timestamp()
        cid = result["customer_id"]
        yield Row(cid, (cid, result["timestamp"], _dumps(result),
                        kafka_ts if kafka_ts is not None else NO_KAFKA_TIME))


class CustomerFunction(KeyedProcessFunction):
    """Keyed by customer id. State: ``profile`` (always, once seen), ``cart`` (while a cart
    is open), ``journey`` (while a reminder is pending); each is cleared when the pure logic
    sets it to ``None``. At most one event-time timer: the journey's ``due_at``."""

    def __init__(self, settings: JourneySettings, template_dir: Path, cart_base_url: str,
                 store_shards: int):
        self.settings = settings
        self.template_dir = str(template_dir)
        self.cart_base_url = cart_base_url
        self.store_shards = store_shards  # 0: no profile store

    def open(self, runtime_context: RuntimeContext) -> None:
        self.logic = CustomerLogic(self.settings)
        self.renderer = Renderer(Path(self.template_dir), self.cart_base_url)
        self.profile = runtime_context.get_state(
            ValueStateDescriptor(PROFILE_STATE, Types.STRING()))
        self.cart = runtime_context.get_state(ValueStateDescriptor(CART_STATE, Types.STRING()))
        self.journey = runtime_context.get_state(
            ValueStateDescriptor(JOURNEY_STATE, Types.STRING()))
        metrics = runtime_context.get_metrics_group()
        self.counters = {kind: metrics.counter(f"journey_{kind}") for kind in (
            "late", "duplicate", "abandoned", "sent", "skipped", "cancelled", "completed",
            "recovered")}

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        event = orjson.loads(value[2])
        state, raw = self._load()
        decision = self.logic.on_event(state, event, ctx.timer_service().current_watermark())
        yield from self._apply(state, raw, decision, ctx, value[3])

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        state, raw = self._load()
        decision = self.logic.on_timer(state, timestamp)
        yield from self._apply(state, raw, decision, ctx, NO_KAFKA_TIME)

    def _load(self) -> tuple[CustomerState, tuple]:
        raw = (self.profile.value(), self.cart.value(), self.journey.value())
        return CustomerState(
            profile=load_profile(raw[0]) if raw[0] else None,
            cart=load_cart(raw[1]) if raw[1] else None,
            journey=load_journey(raw[2]) if raw[2] else None,
        ), raw

    def _apply(self, state: CustomerState, raw: tuple, d: Decision, ctx, kafka_ts: int):
        old_journey = load_journey(raw[2]) if raw[2] else None
        old_timer = old_journey.due_at if old_journey else None
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
            self.counters[outcome["kind"]].inc()
            yield OUTCOME_TAG, Row(outcome["customer_id"], _dumps(outcome))
        if self.store_shards:
            for table, row in rows:
                if table == "customer_profiles":
                    row["source_kafka_ms"] = kafka_ts
                elif table == "email_requests" and row["emitted_at"] is None:
                    row["emitted_at"] = now_ms()  # decided (suppressed) now
                shard = shard_of(row["customer_id"], self.store_shards)
                yield STORE_TAG, (shard, table, _dumps(row))

    def _render(self, trigger: dict, rows: list):
        emitted = now_ms()
        rid = trigger["request_id"]
        row = next(r for t, r in rows if t == "email_requests" and r["request_id"] == rid)
        try:
            request = self.renderer.render(trigger, emitted)
        except TemplateError as exc:
            log.error("render failed customer=%s request_id=%s reason=%s",
                      trigger["customer_id"], rid, exc)
            self.counters["skipped"].inc()
            row.update(status="suppressed", reason="render_failed")
            yield OUTCOME_TAG, Row(trigger["customer_id"], _dumps({
                "kind": "skipped", "customer_id": trigger["customer_id"],
                "event_time": trigger["due_at"], "step": trigger["step"],
                "request_id": rid, "reason": "render_failed"}))
            return
        row.update(subject=request["subject"], emitted_at=emitted)
        yield Row(trigger["customer_id"], _dumps(request))

    @staticmethod
    def _save(handle, old_raw, value, dump) -> None:
        if value is None:
            if old_raw is not None:
                handle.clear()
            return
        new_raw = dump(value)
        if new_raw != old_raw:
            handle.update(new_raw)
