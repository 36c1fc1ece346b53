"""Metrics from Python functions that Flink may read from any thread (PyFlink 2.0).

PyFlink's ``MetricGroup.gauge(name, callable)`` in thread mode hands Flink a Java gauge that
calls the Python callable from whichever thread reads metrics (the REST server's metric
fetcher, a reporter). That thread does not own the embedded interpreter, and reading metrics
while the job ran crashed the JVM (SIGSEGV in libpython). So values are pushed instead, on
the task thread: counters get the increments since the last push (``Counters``), levels are
set on a Java-side gauge that Flink reads without Python. In thread mode PyFlink's
``distribution`` is exactly that (``MetricDistribution``: a ``Gauge<Long>`` holding the
last value set; PyFlink 2.0.2). In process mode, where Python runs in its own process and
PyFlink's gauges are safe, the plain Python gauge is used."""

from __future__ import annotations

from collections.abc import Callable, Iterable


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
