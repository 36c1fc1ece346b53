"""Structured logs of the job's Python functions (pure Python, no pyflink import).

A log call names what happened in its message and passes identifiers as fields::

    log.warning("invalid event", extra=fields(customer_id=cid, event_id=eid, reason=r))

Only the fields in :data:`FIELDS` are written: ids, campaign, step, reason, JSON path,
table, exception type and code location, counts. Never e-mail addresses, names or
payloads: a field outside that list is dropped, and any text that looks like an e-mail
address (in the message or a field) is replaced by ``<email>``, in case an id or an
exception's text carries one.

``json`` format: one JSON object per line with ``time`` (UTC, ms), ``level``, ``logger``,
``message`` and the fields. ``text`` format: ``TIME LEVEL LOGGER MESSAGE key=value ...``.

Where the lines go (:func:`log_path`): in the TaskManager, the Python functions run in an
interpreter embedded in the TaskManager's JVM, whose ``sys.stderr`` is the JVM's
``System.err`` (the TaskManager's ``.out`` file on a cluster; a pipe nobody reads under the
local mini-cluster of ``inboxflow run``). So :func:`configure` writes to a file of its own
next to the TaskManager's log file: ``<TaskManager log>.inboxflow.jsonl`` (``.inboxflow.log``
for text), e.g. ``log/flink-USER-taskexecutor-0-HOST.inboxflow.jsonl`` on a cluster.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Final

LOGGER: Final = "inboxflow"
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS: Final = ("json", "text")
# the only extra fields a record may carry (see the module docstring)
FIELDS: Final = (
    "customer_id",
    "event_id",
    "request_id",
    "campaign",
    "step",
    "reason",
    "path",
    "table",
    "timer",
    "error",
    "location",
    "rows",
    "bytes",
    "limit",
    "attempt",
    "delay_s",
    "route",
    "status",
    "source",
    "records",
)
_EMAIL = re.compile(r"[^\s@\"'<>,;:()\[\]]+@[^\s@\"'<>,;:()\[\]]+\.[A-Za-z]{2,}")
MAX_TEXT: Final = 512  # characters of one message or field value


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``extra=`` for a log call: the structured fields of the record."""
    return {"fields": values}


def scrub(text: str) -> str:
    """``text`` with anything that looks like an e-mail address replaced, cut to
    :data:`MAX_TEXT` characters."""
    text = _EMAIL.sub("<email>", text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The allowed, non-empty fields of ``record``, text values scrubbed."""
    out: dict[str, Any] = {}
    given = getattr(record, "fields", None)
    if not isinstance(given, dict):
        return out
    for key in FIELDS:
        value = given.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = scrub(str(value))
        out[key] = value
    return out


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the record
        message = str(record.msg)
    if record.exc_info and record.exc_info[0] is not None:
        # the exception's type only: its text may quote a payload
        message = f"{message} ({record.exc_info[0].__name__})"
    return scrub(message)


def _time(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises (ASCII JSON, so ids holding unpaired
    surrogates stay encodable)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            **record_fields(record),
        }
        return json.dumps(out, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER MESSAGE key=value ...`` with the same fields as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = f"{_time(record)} {record.levelname} {record.name} {_message(record)}"
        line = f"{line} {pairs}" if pairs else line
        return line.encode("utf-8", "backslashreplace").decode("utf-8")


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def log_path(taskmanager_log: str | None, fmt: str) -> Path | None:
    """The file next to the TaskManager's log file ``taskmanager_log`` (the JVM's
    ``log.file`` property), or None when the JVM has none."""
    if not taskmanager_log:
        return None
    path = Path(taskmanager_log)
    stem = path.name.removesuffix(".log")
    return path.with_name(f"{stem}.inboxflow.{'jsonl' if fmt == 'json' else 'log'}")


_lock = threading.Lock()
_installed: dict[str, Any] = {}


def configure(level: str, fmt: str, path: Path | None = None) -> logging.Logger:
    """The ``inboxflow`` logger at ``level``, writing ``fmt`` lines to ``path`` (appended;
    standard error when None). Called by every Python function's ``open``; all subtasks of a
    TaskManager share one interpreter, so the handler is installed once and replaced only
    when the settings change. Records do not propagate to the root logger."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger(LOGGER)
    key = (level, fmt, str(path) if path else None)
    with _lock:
        if _installed.get("key") == key:
            return logger
        handler: logging.Handler
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
        else:
            handler = logging.StreamHandler()
        handler.setFormatter(formatter(fmt))
        old = _installed.get("handler")
        if old is not None:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
        _installed.update(key=key, handler=handler)
    return logger


def taskmanager_log_file() -> str | None:
    """The JVM's ``log.file`` property when running in thread mode inside a TaskManager (or
    the local mini-cluster); None elsewhere."""
    try:
        from pemja import findClass  # only inside the JVM's embedded interpreter
    except ImportError:
        return None
    try:
        log_file: str | None = findClass("java.lang.System").getProperty("log.file")
    except Exception:  # noqa: BLE001 - no log file is no reason to fail a task
        return None
    return log_file


def configure_in_taskmanager(level: str, fmt: str) -> Path | None:
    """:func:`configure` writing next to the TaskManager's log file (standard error when
    the JVM has none); returns the file."""
    path = log_path(taskmanager_log_file(), fmt)
    try:
        configure(level, fmt, path)
    except OSError:  # the log directory is not writable: standard error (the .out file)
        configure(level, fmt, None)
        return None
    return path
