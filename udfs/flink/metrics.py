"""Metrics from Python functions that Flink may read from any thread (PyFlink 2.0).

PyFlink's ``MetricGroup.gauge(name, callable)`` in thread mode hands Flink a Java gauge that
calls the Python callable from whichever thread reads metrics (the REST server's metric
fetcher, a reporter). That thread does not own the embedded interpreter, and reading metrics
while the job ran crashed the JVM (docs/DESIGN.md#python-gauges). So values are pushed, on
the task thread: counters get the increments since the last push (``Counters``), levels are
set on a Java-side gauge that Flink reads without Python. In thread mode PyFlink's
``distribution`` is exactly that (``MetricDistribution``: a ``Gauge<Long>`` holding the
last value set; PyFlink 2.0.2). In process mode, where Python runs in its own process and
PyFlink's gauges are safe, the plain Python gauge is used."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Protocol


class Counter(Protocol):
    """What is used of PyFlink's ``Counter`` (PyFlink ships no type information)."""

    def inc(self, n: int = 1) -> None: ...


def level(group, name: str) -> Callable[[int], None]:
    """A gauge ``name`` in ``group``; returns the function that sets its value."""
    if type(group).__module__.endswith("embedded.metric_impl"):
        return group.distribution(name).update
    box = [0]
    group.gauge(name, lambda: box[0])

    def set_value(value: int) -> None:
        box[0] = value

    return set_value


class Counters:
    """Flink counters fed from plain Python ints: ``counts`` is updated per event at no
    cost, :meth:`push` adds what changed since the last push to the Flink counters (one call
    into the JVM per changed counter)."""

    def __init__(self, group, names: Iterable[tuple[str, str]], counts: dict[str, int]):
        """``names``: (key in ``counts``, metric name) pairs."""
        self.counts = counts
        self._counters = {key: group.counter(metric) for key, metric in names}
        self._pushed = dict.fromkeys(self._counters, 0)

    def push(self) -> None:
        for key, counter in self._counters.items():
            value = self.counts[key]
            delta = value - self._pushed[key]
            if delta:
                counter.inc(delta)
                self._pushed[key] = value


class LabeledCounters:
    """Flink counters with labels: for each metric name, the label keys (``spec``) and a dict
    of per-label-value counts (``values[metric]``, keyed by the label value, or by a tuple of
    values when there are several keys) that the caller updates per event at no cost.
    :meth:`push` creates each counter the first time its labels appear, as a chain of Flink
    key/value groups (``group.add_group(key, value)``), which Prometheus exports as labels:
    metric ``requests`` with keys ``("campaign", "step")`` in group ``inboxflow`` becomes
    ``flink_taskmanager_job_task_operator_inboxflow_campaign_step_requests{campaign=..,step=..}``.
    """

    def __init__(self, group, spec: Mapping[str, tuple[str, ...]], values: Mapping[str, dict]):
        self.group = group
        self.spec = dict(spec)
        self.values = values
        self._counters: dict[tuple, Counter] = {}
        self._pushed: dict[tuple, int] = {}

    def push(self) -> None:
        for metric, keys in self.spec.items():
            for labels, value in self.values[metric].items():
                ident = (metric, labels)
                delta = value - self._pushed.get(ident, 0)
                if not delta:
                    continue
                counter = self._counters.get(ident)
                if counter is None:
                    counter = self._counters[ident] = self._create(metric, keys, labels)
                counter.inc(delta)
                self._pushed[ident] = value

    def _create(self, metric: str, keys: tuple[str, ...], labels):
        group = self.group
        for key, value in zip(
            keys, labels if isinstance(labels, tuple) else (labels,), strict=True
        ):
            group = group.add_group(key, str(value))
        return group.counter(metric)


def percentile(ordered: list[int], q: int) -> int:
    """Nearest-rank percentile ``q`` (1..100) of a non-empty sorted list."""
    return ordered[max(1, -(-q * len(ordered) // 100)) - 1]


class LatencyWindow:
    """Latency samples (ms) of a sliding window of wall-clock time: the samples added in the
    last ``span_ms``, at most the newest ``max_samples`` of them. Samples arrive in batches
    (:meth:`add`, called when the caller pushes its metrics), so the per-event cost is the
    caller's ``list.append``. :meth:`summary` gives ``p50``/``p95``/``p99`` (nearest rank),
    ``max`` and ``count`` (samples in the window); all 0 for an empty window."""

    STATS = ("p50", "p95", "p99", "max", "count")

    def __init__(self, span_ms: int = 60_000, max_samples: int = 10_000):
        self.span_ms = span_ms
        self.max_samples = max_samples
        self._batches: deque[tuple[int, list[int]]] = deque()
        self._size = 0
        self.total = 0  # samples ever added

    def add(self, now_ms: int, samples: list[int]) -> None:
        if samples:
            self._batches.append((now_ms, samples))
            self._size += len(samples)
            self.total += len(samples)
        self._evict(now_ms)

    def _evict(self, now_ms: int) -> None:
        batches = self._batches
        while batches and batches[0][0] <= now_ms - self.span_ms:
            self._size -= len(batches.popleft()[1])
        excess = self._size - self.max_samples
        while excess > 0:
            added, oldest = batches[0]
            if len(oldest) <= excess:
                batches.popleft()
                excess -= len(oldest)
                self._size -= len(oldest)
            else:
                batches[0] = (added, oldest[excess:])
                self._size -= excess
                excess = 0

    def summary(self, now_ms: int) -> dict[str, int]:
        self._evict(now_ms)
        if not self._size:
            return dict.fromkeys(self.STATS, 0)
        ordered = list(chain.from_iterable(batch for _, batch in self._batches))
        ordered.sort()
        return {
            "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "max": ordered[-1],
            "count": len(ordered),
        }


class LatencyGauges:
    """A :class:`LatencyWindow` published as gauges ``NAME_p50_ms``, ``NAME_p95_ms``,
    ``NAME_p99_ms``, ``NAME_max_ms`` and ``NAME_count`` in ``group``. :meth:`publish` takes
    the samples gathered since the last call; the percentiles are recomputed (one sort of
    the window) at most every ``every_ms``, or at once with ``force``."""

    def __init__(self, group, name: str, window: LatencyWindow | None = None, every_ms: int = 1000):
        self.window = window or LatencyWindow()
        self.every_ms = every_ms
        self._set = {
            stat: level(group, f"{name}_{stat}" if stat == "count" else f"{name}_{stat}_ms")
            for stat in LatencyWindow.STATS
        }
        self._published_at: int | None = None
        self._dirty = False

    def publish(self, now_ms: int, samples: list[int], force: bool = False) -> None:
        if samples:
            self.window.add(now_ms, samples)
            self._dirty = True
        due = self._published_at is None or now_ms - self._published_at >= self.every_ms
        if not (force or due):
            return
        if not (force or self._dirty or self.window._size):
            return  # empty and already published as empty
        self._published_at = now_ms
        self._dirty = False
        for stat, value in self.window.summary(now_ms).items():
            self._set[stat](value)
