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
ClickHouse writer: the store rows of all events of one shard in a batch
(:mod:`udfs.core.batch`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueState, ValueStateDescriptor

from udfs import logs, paths
from udfs.clock import wall_ms
from udfs.core import batch
from udfs.core.batch import EVENT, TIMER, Batch, Entry
from udfs.core.customer import COUNTERS, LABELED, CoreSettings, CustomerCore
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

# The customer's encoded state (udfs.core.journey.encode_state), one value per customer:
# read and written on the JVM by io.inboxflow.flink.BatchCustomerOperator (the same name,
# BatchCustomerOperator.CUSTOMER_STATE), here by the plain path. The plain path declares it
# as pickled bytes: PyFlink 2.0.2's thread mode converts a PRIMITIVE_ARRAY(BYTE) value to a
# tuple of ints and fails on an empty one. Both are byte[] on the JVM, and
# udfs.core.journey.decode_state reads the pickled form too.
CUSTOMER_STATE = "customer"
CUSTOMER_BYTES = Types.PICKLED_BYTE_ARRAY()

# events between two pushes of the counters on the plain path; the batched path pushes
# after every batch (only the counters that moved cost a call into the JVM, so a batch of
# 1,000 events pays about what one event used to, and an idle job's metrics are not stale)
PUSH_EVERY = 1000
# the job's own metric group (Prometheus: flink_taskmanager_job_task_operator_inboxflow_...)
METRIC_GROUP = "inboxflow"

# The customer function opened on this task thread: io.inboxflow.flink.BatchCustomerOperator
# calls process_batch on the same thread, so it finds its own subtask's function.
_TASK = threading.local()


def opened(why: str) -> bool | None:
    """Called by ``io.inboxflow.flink.BatchCustomerOperator`` once it opened the function on
    this task thread: True, or None when no customer function was opened here. (One
    argument: pemja's invoke of a function without arguments crashed the JVM,
    docs/DESIGN.md#pemja-calls.)"""
    return None if getattr(_TASK, "function", None) is None else True


def process_batch(payload: bytes) -> bytes:
    """Called by ``io.inboxflow.flink.BatchCustomerOperator`` on the task thread: one batch
    (:mod:`udfs.core.batch`) applied by this thread's customer function."""
    function: CustomerFunction = _TASK.function
    return function.run_payload(payload)


def migrate_states(payload: bytes) -> bytes:
    """Called by ``io.inboxflow.flink.BatchCustomerOperator`` after a restore from a version
    before it: :func:`udfs.core.batch.migrate_states`."""
    return batch.migrate_states(payload)


class CustomerFunction(KeyedProcessFunction):
    """Keyed by customer id. Moves data between Flink and :class:`udfs.core.batch.Batch`,
    which validates each raw event (invalid input goes to the DLQ with a reason), runs the
    journey logic and catches whatever one record makes raise (``processing_error``), so
    only the commit (state writes, timers: calls into the JVM) can fail here, and only for
    reasons outside the record. Validation lives in this operator rather than its own
    because in thread mode every Python operator costs a trip through one shared
    interpreter lock.

    Two ways in: in thread mode ``io.inboxflow.flink.BatchCustomerOperator`` opens this
    function (metrics, files) and then calls :func:`process_batch` with whole batches,
    keeping state and timers on the JVM. Otherwise (PyFlink's own operator, the keyed test
    harness; process mode is refused by job.pipeline)
    PyFlink calls ``process_element`` / ``on_timer``, which apply batches of one: state
    ``customer`` (bytes, cleared when there is nothing to keep) and at most one event-time
    timer, the journey's ``due_at``."""

    def __init__(
        self,
        settings: CoreSettings,
        log_level: str = "INFO",
        log_format: str = "json",
    ):
        self.log_level = log_level
        self.log_format = log_format
        # the files themselves, not their paths (udfs/paths.py); the core gets the paths of
        # their copy on the TaskManager
        self.schema_files = paths.snapshot(settings.schema_dir, "*.json")
        # the templates and their translations (locale/<lang>/LC_MESSAGES/messages.po)
        self.template_files = paths.snapshot(settings.render.template_dir, "*.j2", "*.po")
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        logs.configure_in_taskmanager(self.log_level, self.log_format)
        self._files = self.unpack_files()
        self.core = CustomerCore(
            replace(
                self.settings,
                render=replace(self.settings.render, template_dir=self._files / "templates"),
                schema_dir=self._files / "schemas",
            )
        )
        self.batch = Batch(self.core)
        self._runtime_context = runtime_context
        # the plain path's ValueState, declared on its first use
        self._state: ValueState | None = None
        _TASK.function = self
        # Plain ints, pushed to Flink counters after each batch (PUSH_EVERY events on the
        # plain path): a counter.inc() per event would be a call into the JVM per event.
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
        self._since_push = 0

    # the batched path (thread mode) ----------------------------------------------------------

    def run_payload(self, payload: bytes) -> bytes:
        result = self.batch.run_payload(payload, wall_ms())
        self._push_counts()
        return result

    # the plain path --------------------------------------------------------------------------

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        key, event_time, text, kafka_ts = value
        entry = (EVENT, key, event_time, text, kafka_ts)
        yield from self._apply_one(key, entry, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        key = ctx.get_current_key()
        yield from self._apply_one(key, (TIMER, key, timestamp, None, 0), ctx)

    def _apply_one(self, key: str, entry: Entry, ctx):
        state = self._state
        if state is None:
            state = self._state = self._runtime_context.get_state(
                ValueStateDescriptor(CUSTOMER_STATE, CUSTOMER_BYTES)
            )
        timers = ctx.timer_service()
        result = self.batch.run(
            [entry], {key: state.value()}, timers.current_watermark(), wall_ms()
        )
        # only calls into the JVM with values already encoded
        for _, delete, register in result.timers:
            if delete is not None:
                timers.delete_event_time_timer(delete)
            if register is not None:
                timers.register_event_time_timer(register)
        for _, blob in result.states:
            if blob is None:
                state.clear()
            else:
                state.update(blob)
        self._since_push += 1
        if self._since_push >= PUSH_EVERY:
            self._push_counts()
        yield from result.outputs

    # ------------------------------------------------------------------------------------------

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
        now = wall_ms()
        self._counters.push()
        self._job_counters.push()
        self._labeled.push()
        samples, self.batch.latency = self.batch.latency, []
        self._event_latency.publish(now, samples, force=final)
        lateness, self.core.lateness = self.core.lateness, []
        self._reminder_lateness.publish(now, lateness, force=final)
