"""Flink's Prometheus reporter for the local mini-cluster, and reading its endpoint.

A Flink process started from a distribution loads metric reporters from ``plugins/``. The
local mini-cluster of ``inboxflow run`` (and of the tests) runs inside the PyFlink gateway's
JVM, which has no plugin manager: it finds reporter factories only on the classpath of the
thread that starts it. :func:`add_reporters_to_classpath` puts the reporter jars there when
the settings configure a reporter, so the shipped ``flink-conf.yaml`` works both ways.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "flink_taskmanager_job_task_operator_"
_FACTORY = re.compile(r"^metrics\.reporter\.[^.]+\.factory\.class$")
# factory class -> the plugin directory that holds it
_PLUGINS = {"org.apache.flink.metrics.prometheus.PrometheusReporterFactory": "metrics-prometheus"}


def plugins_dir() -> Path:
    """``FLINK_PLUGINS_DIR`` or the ``plugins/`` directory of the installed PyFlink."""
    if os.environ.get("FLINK_PLUGINS_DIR"):
        return Path(os.environ["FLINK_PLUGINS_DIR"])
    import pyflink

    return Path(pyflink.__file__).resolve().parent / "plugins"


def reporter_jars(settings: Mapping[str, str]) -> list[Path]:
    """The plugin jars of the reporters that ``settings`` configure."""
    jars: list[Path] = []
    for key, value in settings.items():
        plugin = _PLUGINS.get(value.strip()) if _FACTORY.match(key) else None
        if plugin:
            jars += sorted((plugins_dir() / plugin).glob("*.jar"))
    return jars


def add_reporters_to_classpath(settings: Mapping[str, str]) -> None:
    """For the local mini-cluster: the configured reporters' jars on the classpath that
    starts it (the gateway thread's context class loader, as for ``pipeline.jars``)."""
    jars = reporter_jars(settings)
    if jars:
        from pyflink.util.java_utils import add_jars_to_context_class_loader

        add_jars_to_context_class_loader([j.as_uri() for j in jars])


def port_range(spec: str) -> list[int]:
    """``"9249"``, ``"9249-9299"`` or ``"9249,9300-9310"`` as a list of ports."""
    ports: list[int] = []
    for part in str(spec).split(","):
        low, _, high = part.strip().partition("-")
        ports += range(int(low), int(high or low) + 1)
    return ports


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[Sample]:
    """Samples of the Prometheus text exposition format (comments skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        pairs = {
            k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(labels or "")
        }
        samples.append(Sample(name, pairs, float(value)))
    return samples


def scrape(url: str, timeout_s: float = 10) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(response.read().decode("utf-8", "replace"))


def endpoints(ports: Iterable[int], job_id: str, host: str = "127.0.0.1") -> list[str]:
    """The ``/metrics`` URLs among ``ports`` that export metrics of job ``job_id``: each
    Flink process (JobManager, every TaskManager) serves its own, on the first free port of
    the configured range."""
    found = []
    for port in ports:
        url = f"http://{host}:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if f'job_id="{job_id}"' in response.read().decode("utf-8", "replace"):
                    found.append(url)
        except OSError:
            continue
    return found


def find_endpoint(
    ports: Iterable[int], job_id: str, host: str = "127.0.0.1", timeout_s: float = 60
) -> str:
    """The first of :func:`endpoints`, waiting up to ``timeout_s`` for one."""
    ports = list(ports)
    deadline = time.monotonic() + timeout_s
    while not (found := endpoints(ports, job_id, host)):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no Prometheus endpoint on {host} ports {ports[0]}-{ports[-1]} "
                f"exports job {job_id}"
            )
        time.sleep(0.5)
    return found[0]


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of ``name`` (without the ``flink_taskmanager_job_task_operator_`` prefix when it
    has none) over every sample whose labels include ``labels`` (e.g. all subtasks)."""
    full = name if name.startswith("flink_") else PREFIX + name
    return sum(
        s.value
        for s in samples
        if s.name == full and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by_label(
    samples: Iterable[Sample], name: str, *keys: str, **labels: str
) -> dict[tuple[str, ...] | str, float]:
    """``name`` summed per value of the label(s) ``keys``, zero totals left out."""
    full = name if name.startswith("flink_") else PREFIX + name
    out: dict = {}
    for s in samples:
        if s.name == full and all(s.labels.get(k) == v for k, v in labels.items()):
            key = tuple(s.labels.get(k, "") for k in keys)
            out[key[0] if len(keys) == 1 else key] = (
                out.get(key[0] if len(keys) == 1 else key, 0) + s.value
            )
    return {k: v for k, v in out.items() if v}


def announce(settings: Mapping[str, str], job_id: str, log) -> None:
    """Logs, from a daemon thread, the local run's Prometheus URL once the job's metrics are
    served there (the reporter takes the first free port of its range)."""
    spec = next(
        (
            v
            for k, v in settings.items()
            if k.startswith("metrics.reporter.") and k.endswith(".port")
        ),
        None,
    )
    if not spec or not reporter_jars(settings):
        return
    import threading

    def find() -> None:
        try:
            url = find_endpoint(port_range(spec), job_id, timeout_s=120)
        except (TimeoutError, ValueError):
            log.warning("Prometheus: no endpoint on ports %s exports job %s", spec, job_id)
            return
        log.info("Prometheus metrics of job %s: %s", job_id, url)

    threading.Thread(target=find, name="inboxflow-prometheus", daemon=True).start()
