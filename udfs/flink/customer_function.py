"""Thin PyFlink wrappers: they move data between Flink (state, timers, side outputs,
metrics, the wall clock) and the pure modules, and hold no logic of their own.

Streams between operators carry plain types declared on every operator:
``RAW_EVENT`` = Row(key, event time ms, raw event text, Kafka record time ms), read on the JVM
by ``io.inboxflow.flink.EnvelopeExtractor`` (key = trimmed customer_id, "" when unreadable),
``ROUTED`` = (kind, shard, key, payload): everything the customer function emits
(:mod:`udfs.core.contract`), split on the JVM by ``io.inboxflow.flink.OutputRouter`` into
``KEYED_JSON`` = Row(key, JSON text) side outputs for the Kafka sinks (``Kind.REQUEST``,
``Kind.DLQ``, ``Kind.OUTCOME``) and, for ``Kind.STORE``, ``KEYED_STORE_ROW`` =
Row(shard, STORE_ROW) with ``STORE_ROW`` = (shard, rows), keyed on the JVM for the
ClickHouse writer: the store rows of many events of one shard (see
:meth:`CustomerFunction.take_store_rows`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs import logs, paths
from udfs.clock import MAX_WATERMARK, wall_ms
from udfs.core import contract
from udfs.core.customer import COUNTERS, LABELED, CoreSettings, CustomerCore, Step
from udfs.flink.metrics import Counters, LabeledCounters, LatencyGauges

log = logging.getLogger("inboxflow")

RAW_EVENT = Types.ROW([Types.STRING(), Types.LONG(), Types.STRING(), Types.LONG()])
# what io.inboxflow.flink.EnvelopeExtractor emits: Row(key, RAW_EVENT)
KEYED_EVENT = Types.ROW([Types.STRING(), RAW_EVENT])
KEYED_JSON = Types.ROW([Types.STRING(), Types.STRING()])
STORE_ROW = Types.TUPLE([Types.INT(), Types.STRING()])
# OutputRouter's main output: Row(shard, STORE_ROW), keyed on the JVM side
KEYED_STORE_ROW = Types.ROW([Types.INT(), STORE_ROW])

# Everything the customer function emits (udfs.core.contract). No Python side outputs: each
# one is a separate call into the JVM, and one feeding another Python operator can deadlock.
ROUTED = Types.TUPLE([Types.INT(), Types.INT(), Types.STRING(), Types.STRING()])

# keyed state names of CustomerFunction
PROFILE_STATE = "profile"
CART_STATE = "cart"
JOURNEY_STATE = "journey"

# events whose ClickHouse rows the customer function emits as one element when its buffer
# is drained by io.inboxflow.flink.CustomerOperator (which also drains it every 50 ms, before
# every checkpoint barrier and at the end of the input)
STORE_BUFFER_EVENTS = 200
# events between two pushes of the counters when no CustomerOperator drains (and pushes)
PUSH_EVERY = 1000
# the job's own metric group (Prometheus: flink_taskmanager_job_task_operator_inboxflow_...)
METRIC_GROUP = "inboxflow"

# The customer function opened on this task thread: io.inboxflow.flink.CustomerOperator
# calls drain_store_rows on the same thread, so it finds its own subtask's function.
_TASK = threading.local()


def drain_store_rows(why: str) -> list | None:
    """Called by ``io.inboxflow.flink.CustomerOperator`` on the task thread (``why``: open,
    timer, checkpoint, final watermark, end of input, finish): the buffered ClickHouse rows
    of this thread's customer function as a flat list ``[shard, rows, ...]``, or None when
    no customer function was opened on this thread."""
    function = getattr(_TASK, "function", None)
    return None if function is None else function.take_store_rows()


class CustomerFunction(KeyedProcessFunction):
    """Keyed by customer id. Moves data between Flink and :class:`udfs.core.customer.CustomerCore`,
    which validates each raw event (invalid input goes to the DLQ with a reason), runs the
    journey logic and catches whatever one record makes raise (``processing_error``), so
    only the commit of a finished step (state writes, timers: calls into the JVM) can fail
    here, and only for reasons outside the record. Validation lives in this operator rather
    than its own because in thread mode every Python operator costs a trip through one
    shared interpreter lock.

    State: ``profile`` (always, once seen), ``cart`` (while a cart is open), ``journey``
    (while a reminder is pending); each is cleared when the pure logic sets it to ``None``.
    At most one event-time timer: the journey's ``due_at``."""

    def __init__(
        self,
        settings: CoreSettings,
        store_buffer_events: int = STORE_BUFFER_EVENTS,
        log_level: str = "INFO",
        log_format: str = "json",
    ):
        self.log_level = log_level
        self.log_format = log_format
        # the files themselves, not their paths (udfs/paths.py); the core gets the paths of
        # their copy on the TaskManager
        self.schema_files = paths.snapshot(settings.schema_dir, "*.json")
        self.template_files = paths.snapshot(settings.template_dir, "*.j2")
        self.settings = settings
        self.store_buffer_events = store_buffer_events

    def open(self, runtime_context: RuntimeContext) -> None:
        logs.configure_in_taskmanager(self.log_level, self.log_format)
        self._files = self.unpack_files()
        self.core = CustomerCore(
            replace(
                self.settings,
                template_dir=self._files / "templates",
                schema_dir=self._files / "schemas",
            )
        )
        self.profile = runtime_context.get_state(
            ValueStateDescriptor(PROFILE_STATE, Types.STRING())
        )
        self.cart = runtime_context.get_state(ValueStateDescriptor(CART_STATE, Types.STRING()))
        self.journey = runtime_context.get_state(
            ValueStateDescriptor(JOURNEY_STATE, Types.STRING())
        )
        # ClickHouse rows per shard, each entry the rows of one event; see take_store_rows
        self._store_buffer: dict[int, list[str]] = {}
        self._buffered_events = 0
        self._drained = False  # True once a CustomerOperator drains the buffer
        _TASK.function = self
        # Plain ints, pushed to Flink counters every PUSH_EVERY events and whenever the
        # operator drains the row buffer (every 50 ms): a counter.inc() per event would be a
        # call into the JVM per event, which is what limits thread-mode throughput.
        metrics = runtime_context.get_metrics_group()
        self._counters = Counters(
            metrics,
            [
                (name, name if name.startswith(("events", "processing")) else f"journey_{name}")
                for name in COUNTERS
            ],
            self.core.counts,
        )
        # The job's own metrics, labelled (README "Metrics"): pushed with the counters above.
        group = metrics.add_group(METRIC_GROUP)
        self._job_counters = Counters(
            group, [("late", "late"), ("duplicate", "duplicates")], self.core.counts
        )
        self._labeled = LabeledCounters(group, LABELED, self.core.labeled)
        # Latency percentiles over a sliding window (udfs.flink.metrics.LatencyWindow):
        # event_latency: wall clock when this function handles an event (the `emitted_at`
        #   of what it emits) minus the event's Kafka record timestamp, for every event;
        # reminder_lateness: wall clock when an email request is emitted minus its due time
        #   (event time), for every request, whether a timer or an event fired it.
        self._event_latency = LatencyGauges(group, "event_latency")
        self._reminder_lateness = LatencyGauges(group, "reminder_lateness")
        self._latency_samples: list[int] = []
        self._since_push = 0

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        key, _, text, kafka_ts = value
        now = wall_ms()
        if kafka_ts > 0:
            self._latency_samples.append(now - kafka_ts)
        self._since_push += 1
        if self._since_push >= PUSH_EVERY:
            self._push_counts()
        event = self.core.validate(key, text, now)
        if type(event) is Step:
            yield from event.outputs
            return
        raw = (self.profile.value(), self.cart.value(), self.journey.value())
        step = self.core.on_event(
            event, text, raw, ctx.timer_service().current_watermark(), kafka_ts, now
        )
        yield from self._commit(step, raw, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        raw = (self.profile.value(), self.cart.value(), self.journey.value())
        step = self.core.on_timer(ctx.get_current_key(), timestamp, raw, wall_ms())
        yield from self._commit(step, raw, ctx)
        if self._buffered_events and ctx.timer_service().current_watermark() == MAX_WATERMARK:
            # a bounded input ended: the final watermark goes downstream after these timers
            yield from self._emit_store_buffer()

    def unpack_files(self) -> Path:
        """The schemas and templates this function carries, in a new directory of its own
        (``schemas/``, ``templates/``)."""
        return paths.materialize(
            {
                **{f"schemas/{name}": data for name, data in self.schema_files.items()},
                **{f"templates/{name}": data for name, data in self.template_files.items()},
            }
        )

    def close(self) -> None:
        self._push_counts(final=True)
        if getattr(self, "_files", None) is not None:
            shutil.rmtree(self._files, ignore_errors=True)
        if getattr(_TASK, "function", None) is self:
            del _TASK.function

    def _push_counts(self, final: bool = False) -> None:
        """Counters and latency gauges to Flink, from the task thread (never a gauge that
        Flink's metric thread would call into Python: udfs.flink.metrics)."""
        self._since_push = 0
        self._counters.push()
        self._job_counters.push()
        self._labeled.push()
        now = wall_ms()
        samples, self._latency_samples = self._latency_samples, []
        self._event_latency.publish(now, samples, force=final)
        lateness, self.core.lateness = self.core.lateness, []
        self._reminder_lateness.publish(now, lateness, force=final)

    def _commit(self, step: Step, raw: tuple, ctx):
        """Apply a finished step: only calls into the JVM with values already encoded."""
        if step.timers is not None:
            old, new = step.timers
            if old is not None:
                ctx.timer_service().delete_event_time_timer(old)
            if new is not None:
                ctx.timer_service().register_event_time_timer(new)
        if step.state is not None:
            for handle, old_raw, new_raw in zip(
                (self.profile, self.cart, self.journey), raw, step.state, strict=True
            ):
                if new_raw is None:
                    if old_raw is not None:
                        handle.clear()
                elif new_raw != old_raw:
                    handle.update(new_raw)
        yield from step.outputs
        if step.store is None:
            return
        shard, rows = step.store
        if not self._drained:  # nobody empties a buffer: one element per event
            yield contract.encode_store(shard, rows)
            return
        self._store_buffer.setdefault(shard, []).append(rows)
        self._buffered_events += 1
        if self._buffered_events >= self.store_buffer_events:
            yield from self._emit_store_buffer()

    def take_store_rows(self) -> list:
        """Empty the row buffer: ``[shard, rows, shard, rows, ...]``.

        Every element handed to the JVM is a round trip through the shared interpreter, far
        dearer than building an event's rows. So once a ``CustomerOperator`` has called this
        (it does in ``open``), the rows of up to ``store_buffer_events`` events travel as one
        element per shard. The operator calls this before every checkpoint barrier, so no
        checkpoint covers an event whose rows exist only here."""
        self._drained = True
        self._push_counts()
        flat: list = []
        for shard, entries in self._store_buffer.items():
            flat.append(shard)
            flat.append(contract.join_store_rows(entries))
        self._store_buffer.clear()
        self._buffered_events = 0
        return flat

    def _emit_store_buffer(self):
        flat = self.take_store_rows()
        for i in range(0, len(flat), 2):
            yield contract.encode_store(flat[i], flat[i + 1])
