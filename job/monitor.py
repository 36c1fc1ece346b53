"""Watch a running Flink job through the REST API of its cluster (the local mini-cluster of
``inboxflow run`` serves the same API): status, restart count and the failures behind the
restarts.

Why: a job whose task fails on every attempt restarts forever while its process stays
alive; nothing looks wrong from outside unless someone reads the restart count. ``inboxflow
run`` logs every restart loudly with what :class:`JobMonitor` reports, and tests and the
bench assert "0 restarts" with it.

Sources: ``numRestarts`` is Flink's own job metric (``GET /jobs/ID/metrics``; the REST
server refreshes metrics every ``metrics.fetcher.update-interval``); the exception history
(``GET /jobs/ID/exceptions``) lists each failure at once, with its exception class. Only
the class name and the first line of a failure's message are logged: a message may quote
a record.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("inboxflow")

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})
_FIRST_LINE_CHARS = 200


@dataclass(frozen=True)
class Failure:
    """One failure from the job's exception history."""

    timestamp_ms: int
    exception: str  # class name of the root exception
    summary: str  # first line of its message, cut to 200 characters
    task: str | None


class JobMonitor:
    """Reads one job's state from ``rest_url`` (e.g. ``http://127.0.0.1:8081``)."""

    def __init__(self, rest_url: str, job_id: str, timeout_s: float = 5.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.job_id = job_id
        self.timeout_s = timeout_s

    def _get(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=self.timeout_s) as resp:
            return json.loads(resp.read())

    def status(self) -> str:
        """RUNNING, RESTARTING, FAILED, ... as Flink names it."""
        data = self._get(f"/jobs/{self.job_id}")
        assert isinstance(data, dict)
        return str(data["state"])

    def restarts(self) -> int | None:
        """The ``numRestarts`` metric, or None while the REST server has not fetched it."""
        data = self._get(f"/jobs/{self.job_id}/metrics?get=numRestarts")
        for metric in data if isinstance(data, list) else []:
            if metric.get("id") == "numRestarts" and "value" in metric:
                return int(float(metric["value"]))
        return None

    def operator_metric(self, name: str) -> int | None:
        """Sum over all subtasks of the operator metric whose id ends with ``.name`` (e.g. the
        customer function's ``events_valid`` gauge), or None while it is not reported."""
        data = self._get(f"/jobs/{self.job_id}")
        assert isinstance(data, dict)
        total, found = 0, False
        for vertex in data.get("vertices", []):
            base = f"/jobs/{self.job_id}/vertices/{vertex['id']}/subtasks/metrics"
            listed = self._get(base)
            ids = (
                [
                    m["id"]
                    for m in listed
                    if isinstance(m, dict) and str(m.get("id", "")).endswith(f".{name}")
                ]
                if isinstance(listed, list)
                else []
            )
            if not ids:
                continue
            values = self._get(f"{base}?get={','.join(ids)}&agg=sum")
            for metric in values if isinstance(values, list) else []:
                if "sum" in metric:
                    total += int(float(metric["sum"]))
                    found = True
        return total if found else None

    def failures(self) -> list[Failure]:
        """Every failure in the job's exception history, oldest first."""
        data = self._get(f"/jobs/{self.job_id}/exceptions?maxExceptions=100")
        assert isinstance(data, dict)
        entries = (data.get("exceptionHistory") or {}).get("entries") or []
        found = []
        for entry in entries:
            name = str(entry.get("exceptionName") or "?")
            trace = str(entry.get("stacktrace") or "")
            first = trace.splitlines()[0] if trace else name
            found.append(
                Failure(
                    int(entry.get("timestamp") or 0),
                    name.rsplit(".", 1)[-1],
                    first[:_FIRST_LINE_CHARS],
                    entry.get("taskName"),
                )
            )
        return sorted(found, key=lambda f: f.timestamp_ms)

    def wait_until_terminal(
        self,
        interval_s: float = 2.0,
        on_restart: Callable[[int, list[Failure]], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> str:
        """Poll until the job is in a terminal state (or ``stop()``); call ``on_restart``
        with the restart count and the new failures whenever either grows. Returns the last
        status seen."""
        seen_restarts, seen_failures, status = 0, 0, "UNKNOWN"
        while not stop():
            try:
                status = self.status()
                failures = self.failures()
                restarts = max(self.restarts() or 0, len(failures))
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                if status in TERMINAL:
                    return status
                time.sleep(interval_s)  # the REST server is starting or already gone
                continue
            if restarts > seen_restarts or len(failures) > seen_failures:
                if on_restart is not None:
                    on_restart(restarts, failures[seen_failures:])
                seen_restarts, seen_failures = restarts, len(failures)
            if status in TERMINAL:
                return status
            time.sleep(interval_s)
        return status


def log_restart(restarts: int, new: list[Failure]) -> None:
    """The loud message ``inboxflow run`` writes when its job restarts."""
    for failure in new:
        log.error(
            "JOB RESTART #%d: task %s failed with %s: %s",
            restarts,
            failure.task,
            failure.exception,
            failure.summary,
        )
    if not new:
        log.error("JOB RESTART #%d (no failure recorded in the exception history yet)", restarts)
    log.error(
        "The job restarted %d time(s). A restart replays input since the last "
        "checkpoint; repeated restarts mean no email goes out. See the Flink log.",
        restarts,
    )
