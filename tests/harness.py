"""A keyed test harness for PyFlink ``KeyedProcessFunction`` s, in the spirit of Flink's
``KeyedOneInputStreamOperatorTestHarness`` (flink-training's harness tests): it drives the
real function (``open``, ``process_element``, ``on_timer``, ``close``) in this process, with
no JVM, and shows what a test must see to say that nothing is left behind:

* keyed ``ValueState``: one value per (state name, key); the handles the function gets in
  ``open`` read and write the slot of the key being processed, as Flink's do;
* event-time timers per key, a set per key as in Flink (registering a timer twice keeps one,
  deleting a timer that is not there does nothing);
* a watermark: :meth:`KeyedHarness.advance_watermark` fires every timer at or below it in
  timestamp order, with the watermark already advanced and each timer removed before its
  ``on_timer`` runs (so timers registered meanwhile at or below it fire too), like Flink's
  ``InternalTimerServiceImpl.advanceWatermark``.

Fakes stand in for exactly what the wrapper calls: ``RuntimeContext.get_state`` /
``get_metrics_group``, ``ValueState.value`` / ``update`` / ``clear``,
``ctx.timer_service()`` (``current_watermark``, ``register_event_time_timer``,
``delete_event_time_timer``), ``ctx.get_current_key()``, ``ctx.timestamp()`` and a metric
group (:class:`FakeGroup`). Anything else a function asks of its runtime context raises, so
a wrapper that starts using more of PyFlink fails here loudly rather than being faked
silently. Processing-time timers are not supported (the wrapper uses none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pyflink.datastream import TimeDomain, TimerService
from pyflink.datastream.functions import KeyedProcessFunction
from pyflink.datastream.state import ValueState, ValueStateDescriptor

from tests.factories import MIN_WATERMARK
from udfs import logs

# --------------------------------------------------------------------------- metrics


class FakeCounter:
    """PyFlink's ``Counter``: ``count`` is its value, ``calls`` how often it was called."""

    def __init__(self) -> None:
        self.count = 0
        self.calls = 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1


class FakeGroup:
    """PyFlink's ``MetricGroup`` (the methods the job calls). Records metrics by their full
    path, key/value groups as ``key=value`` parts."""

    def __init__(self, registry: dict | None = None, path: tuple = ()) -> None:
        self.registry = {} if registry is None else registry
        self.path = path

    def add_group(self, name: str, extra: str | None = None) -> FakeGroup:
        part = name if extra is None else f"{name}={extra}"
        return FakeGroup(self.registry, (*self.path, part))

    def counter(self, name: str) -> FakeCounter:
        return self.registry.setdefault((*self.path, name), FakeCounter())

    def gauge(self, name: str, read) -> None:
        self.registry[(*self.path, name)] = read

    def value(self, *path: str):
        metric = self.registry[path]
        return metric() if callable(metric) else metric.count


# --------------------------------------------------------------------------- keyed runtime


class _KeyedValueState(ValueState):
    """One ``ValueState`` handle: the slot of the harness's current key."""

    def __init__(self, harness: KeyedHarness, name: str) -> None:
        self._harness, self._name = harness, name

    def value(self) -> Any:
        return self._slots().get(self._name)

    def update(self, value: Any) -> None:
        if value is None:  # Flink: update(null) clears the state
            self.clear()
        else:
            self._slots()[self._name] = value

    def clear(self) -> None:
        self._slots().pop(self._name, None)

    def _slots(self) -> dict[str, Any]:
        return self._harness._state.setdefault(self._harness._current_key(), {})


class _TimerService(TimerService):
    def __init__(self, harness: KeyedHarness) -> None:
        self._harness = harness

    def current_watermark(self) -> int:
        return self._harness.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self._harness._timers.setdefault(self._harness._current_key(), set()).add(timestamp)

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._harness._timers.get(self._harness._current_key(), set()).discard(timestamp)

    def current_processing_time(self) -> int:
        raise NotImplementedError("processing time: the harness has event time only")

    def register_processing_time_timer(self, timestamp: int) -> None:
        raise NotImplementedError("processing time: the harness has event time only")


class _Context(KeyedProcessFunction.OnTimerContext):
    """The context of one ``process_element`` (``timestamp``: the record's event time) or
    ``on_timer`` call (``timestamp``: the timer's)."""

    def __init__(self, harness: KeyedHarness, key: str, timestamp: int | None) -> None:
        self._harness, self._key, self._timestamp = harness, key, timestamp

    def get_current_key(self) -> str:
        return self._key

    def timer_service(self) -> TimerService:
        return self._harness._timer_service

    def timestamp(self) -> int | None:
        return self._timestamp

    def time_domain(self) -> TimeDomain:
        return TimeDomain.EVENT_TIME


class _RuntimeContext:
    """The two calls the wrapper makes in ``open``; any other raises ``AttributeError``."""

    def __init__(self, harness: KeyedHarness) -> None:
        self._harness = harness

    def get_state(self, descriptor: ValueStateDescriptor) -> ValueState:
        name = descriptor.get_name()
        assert name not in self._harness.descriptors, f"state {name!r} declared twice"
        self._harness.descriptors[name] = descriptor
        return _KeyedValueState(self._harness, name)

    def get_metrics_group(self) -> FakeGroup:
        return self._harness.metrics


class KeyedHarness:
    """Drives one keyed function, as one subtask of its operator. Use as a context manager
    (``open`` on entry; ``close`` on exit, which also puts back the ``inboxflow`` logger
    that ``open`` configures).

    ``emitted`` holds every element the function yielded, in order; ``timer_peak`` per key
    the most timers that key ever had pending at once."""

    def __init__(self, function: KeyedProcessFunction, watermark: int = MIN_WATERMARK) -> None:
        self.function = function
        self.watermark = watermark
        self.metrics = FakeGroup()
        self.descriptors: dict[str, ValueStateDescriptor] = {}
        self.emitted: list[tuple] = []
        self.timer_peak: dict[str, int] = {}
        self._state: dict[str, dict[str, Any]] = {}
        self._timers: dict[str, set[int]] = {}
        self._timer_service = _TimerService(self)
        self._key: str | None = None
        self._logger_before: tuple | None = None

    # lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> KeyedHarness:
        logger = logging.getLogger(logs.LOGGER)
        self._logger_before = (
            list(logger.handlers),
            logger.level,
            logger.propagate,
            dict(logs._installed),
        )
        self.function.open(_RuntimeContext(self))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.function.close()
        finally:
            self._restore_logger()

    # input -----------------------------------------------------------------------------------

    def process(self, key: str, text: str, event_time: int, kafka_ms: int = -1) -> list[tuple]:
        """One record as ``io.inboxflow.flink.EnvelopeExtractor`` hands it over: Row(key,
        event time, raw text, Kafka record time); what the function yielded for it."""
        value = (key, event_time, text, kafka_ms)
        return self._call(key, self.function.process_element, value, self._ctx(key, event_time))

    def advance_watermark(self, watermark: int) -> list[tuple]:
        """Moves the watermark (never back) and fires every timer at or below it, earliest
        first (equal times: by key); what the function yielded while they fired."""
        assert watermark >= self.watermark, (watermark, self.watermark)
        self.watermark = watermark
        out: list[tuple] = []
        while due := sorted(
            (ts, key) for key, pending in self._timers.items() for ts in pending if ts <= watermark
        ):
            ts, key = due[0]
            self._timers[key].discard(ts)
            out += self._call(key, self.function.on_timer, ts, self._ctx(key, ts))
        return out

    # what is left ----------------------------------------------------------------------------

    def state(self, key: str) -> dict[str, Any]:
        """Every state value ``key`` holds, by state name (a cleared value is absent)."""
        return dict(self._state.get(key, {}))

    def timers(self, key: str) -> list[int]:
        """The event-time timers pending for ``key``, earliest first."""
        return sorted(self._timers.get(key, ()))

    def keys(self) -> set[str]:
        """Every key that holds state or a pending timer."""
        return {k for k, v in self._state.items() if v} | {k for k, v in self._timers.items() if v}

    # ----------------------------------------------------------------------------------------

    def _ctx(self, key: str, timestamp: int | None) -> _Context:
        return _Context(self, key, timestamp)

    def _current_key(self) -> str:
        assert self._key is not None, "keyed state or timers used outside a keyed call"
        return self._key

    def _call(
        self, key: str, callback: Callable[..., Iterable[tuple] | None], *args
    ) -> list[tuple]:
        """Runs ``callback(*args)`` (a generator, or a function returning its elements or
        None) with ``key`` current; the elements."""
        self._key = key
        try:
            got = list(callback(*args) or ())
        finally:
            self._key = None
        self.emitted += got
        pending = len(self._timers.get(key, ()))
        self.timer_peak[key] = max(self.timer_peak.get(key, 0), pending)
        return got

    def _restore_logger(self) -> None:
        if self._logger_before is None:
            return
        handlers, level, propagate, installed = self._logger_before
        logger = logging.getLogger(logs.LOGGER)
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        logs._installed.clear()
        logs._installed.update(installed)
