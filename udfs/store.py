"""ClickHouse store: schema migrations, typed batched inserts and queries (no pyflink).

One DSN selects the backend and the rest of the code path is shared:

- ``chdb:///abs/path``: the embedded ClickHouse engine (chdb) through clickhouse-connect's own
  chdb client. chdb locks its directory: one process at a time, and a process can host the
  engine for one path only (DESIGN.md trap 8).
- ``http(s)://user@host:8123/database``: a ClickHouse server; the password comes from the
  environment variable ``INBOXFLOW_CLICKHOUSE_PASSWORD``, never from the DSN.

Failures are sorted into three kinds so the Flink writer can act on them:

- :class:`TransientStoreError`: connection refused/reset, timeouts, server busy. Retry
  (:func:`write_batch` does, with exponential backoff and full jitter).
- :class:`RowRejected`: ClickHouse (or the row conversion here) rejected the content. Retrying
  cannot help; :func:`write_batch` isolates the bad rows for the dead-letter queue.
- :class:`StoreError` (anything else, e.g. unknown table, authentication, the chdb lock): a
  configuration problem. Raised as is so the job fails loudly; pending rows stay in Flink state.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

logger = logging.getLogger(__name__)

TABLES = ("customer_profiles", "email_requests", "cart_recoveries")
VIEWS = ("customer_profiles_latest", "recovery_summary_by_step")
PASSWORD_ENV = "INBOXFLOW_CLICKHOUSE_PASSWORD"
DEFAULT_CHDB_DIR = Path("var") / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"

# Bootstrapped by the migrator itself: it has to exist before any file can be recorded.
_MIGRATIONS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
    "(version UInt32, name String, applied_at DateTime64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)
_MIGRATION_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """A store failure that neither a retry nor dropping rows can fix (configuration, SQL)."""


class TransientStoreError(StoreError):
    """The store could not be reached or was busy; the same call may succeed later."""


class RowRejected(StoreError):
    """ClickHouse, or the conversion before it, refused the content of an insert.

    ``row_errors`` maps batch index -> reason when the bad rows are known (they failed the
    conversion in :meth:`Store.insert_rows`, before anything was sent, so nothing of the
    batch was written). It is None when the server refused the batch as a whole.
    """

    def __init__(self, message: str, row_errors: Mapping[int, str] | None = None):
        super().__init__(message)
        self.row_errors = dict(row_errors) if row_errors else None


class StoreLockedError(StoreError):
    """The chdb directory is held by another process (or this process hosts another path)."""


# Server error codes (ClickHouse ErrorCodes.cpp), checked with errorCodeToName() on 26.9.
_TRANSIENT_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE: connection cut mid-stream
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        159,  # TIMEOUT_EXCEEDED
        198,  # DNS_ERROR
        201,  # QUOTA_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (replica lost its keeper session)
        252,  # TOO_MANY_PARTS: the server asks clients to slow down
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        373,  # SESSION_IS_LOCKED
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION (network layer)
    }
)
# Content errors. A code here that was in fact transient costs little: bisection re-inserts
# the halves, and a row only reaches the DLQ if it fails again on its own.
_REJECT_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        469,  # VIOLATED_CONSTRAINT: a CHECK constraint on the table refuses the row
        691,  # UNKNOWN_ELEMENT_OF_ENUM
    }
)
_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
_MAX_REASON_CHARS = 500


def classify_error(exc: BaseException) -> StoreError:
    """Map an exception from clickhouse-connect (HTTP or chdb) or the OS to a store error kind."""
    # Imported here so unit tests of the pure parts do not pay for the driver import.
    from clickhouse_connect.driver.exceptions import (
        DatabaseError,
        DataError,
        OperationalError,
    )

    if isinstance(exc, StoreError):
        return exc
    message = _short(str(exc)) or type(exc).__name__
    if isinstance(exc, OperationalError):
        # Connection problems, and HTTP 429/503/504 after the driver's own retries.
        return TransientStoreError(message)
    if isinstance(exc, DataError):
        # Raised client-side while serialising a column: the content does not fit the type.
        return RowRejected(message)
    if isinstance(exc, DatabaseError):
        code = exc.code if exc.code is not None else _code_from_message(str(exc))
        if code in _TRANSIENT_CODES:
            return TransientStoreError(message)
        if code in _REJECT_CODES:
            return RowRejected(message)
        return StoreError(message)
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
        return TransientStoreError(message)
    if isinstance(exc, (ValueError, TypeError, OverflowError, struct.error)):
        return RowRejected(message)
    return StoreError(message)


def _code_from_message(message: str) -> int | None:
    match = _CODE_RE.search(message)
    return int(match.group(1)) if match else None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


# --------------------------------------------------------------------------- DSN


class DsnError(ValueError):
    """The ClickHouse DSN is malformed or uses an unsupported scheme."""


_DSN_FORMS = "chdb:///absolute/path, chdb://relative/path, http(s)://user@host:8123/database"


def resolve_dsn(dsn: str | None, base_dir: Path) -> str:
    """Return a canonical DSN: chdb paths absolute, http(s) DSNs checked and returned unchanged.

    None or "" selects the embedded default ``chdb:///<base_dir>/var/clickhouse``. A chdb path
    not starting with "/" is relative to ``base_dir``, so the job and the CLI agree on one
    directory whatever their working directory (chdb compares paths literally).
    """
    if not dsn:
        return "chdb://" + str((Path(base_dir) / DEFAULT_CHDB_DIR).resolve())
    scheme, sep, rest = dsn.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise DsnError(f"ClickHouse DSN {dsn!r} has no scheme; expected one of: {_DSN_FORMS}")
    if scheme == "chdb":
        path = rest.removeprefix("//")
        if not path or path in ("memory", ":memory:") or path.startswith(("memory/", ":memory:")):
            raise DsnError(
                f"ClickHouse DSN {dsn!r}: an in-memory chdb engine loses every row at exit; "
                "give a directory, e.g. chdb:///var/lib/inboxflow/clickhouse"
            )
        if "?" in path or "#" in path:
            raise DsnError(f"ClickHouse DSN {dsn!r}: chdb options (?...) are not supported")
        return "chdb://" + str((Path(base_dir) / path).resolve())
    if scheme in ("http", "https"):
        parts = urlsplit(dsn)
        if not parts.hostname:
            raise DsnError(f"ClickHouse DSN {dsn!r} has no host; expected {_DSN_FORMS}")
        if parts.password is not None:
            raise DsnError(
                f"ClickHouse DSN for host {parts.hostname!r} contains a password; "
                f"put it in the environment variable {PASSWORD_ENV} instead"
            )
        try:
            parts.port  # noqa: B018 - property raises on a non-numeric port
        except ValueError as exc:
            raise DsnError(f"ClickHouse DSN {dsn!r}: {exc}") from None
        return dsn
    raise DsnError(f"ClickHouse DSN scheme {scheme!r} is not supported; expected one of: {_DSN_FORMS}")


def _chdb_path(dsn: str) -> str | None:
    """The engine directory of a canonical chdb DSN, None for http(s)."""
    if not dsn.startswith("chdb:"):
        return None
    rest = dsn[len("chdb:") :]
    return os.path.realpath(rest.removeprefix("//"))


# --------------------------------------------------------------------------- row conversion


class _Bad(Exception):
    """A value does not fit its column; the message names the expected type, never the value."""


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _string(value: Any) -> Any:
    if type(value) is not str:
        raise _Bad(f"expected a string, got {_kind(value)}")
    return value


def _float(value: Any) -> Any:
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise _Bad("expected a finite number, got a non-finite float")
    if type(value) is int:
        return float(value)
    raise _Bad(f"expected a number, got {_kind(value)}")


def _uint(bits: int) -> Callable[[Any], Any]:
    limit = 1 << bits

    def convert(value: Any) -> Any:
        # bool is an int subclass; True as a step or a count is a bug upstream, not a 1.
        if type(value) is not int:
            raise _Bad(f"expected an integer (UInt{bits}), got {_kind(value)}")
        if not 0 <= value < limit:
            raise _Bad(f"integer out of range for UInt{bits}")
        return value

    return convert


# DateTime64 covers 1900-01-01 .. 2299-12-31; outside it ClickHouse would silently wrap.
_MIN_TS_MS = -2_208_988_800_000
_MAX_TS_MS = 10_413_791_999_999


def _epoch_ms(value: Any) -> Any:
    # clickhouse-connect writes ints to DateTime64(3) as raw ticks, i.e. epoch milliseconds:
    # no datetime objects, no timezone guesswork.
    if type(value) is not int:
        raise _Bad(f"expected epoch milliseconds (int), got {_kind(value)}")
    if not _MIN_TS_MS <= value <= _MAX_TS_MS:
        raise _Bad("epoch milliseconds outside 1900..2299")
    return value


def _boolean(value: Any) -> Any:
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise _Bad(f"expected a bool, got {_kind(value)}")


def _string_array(value: Any) -> Any:
    if type(value) not in (list, tuple):
        raise _Bad(f"expected a list of strings, got {_kind(value)}")
    for item in value:
        if type(item) is not str:
            raise _Bad(f"expected a list of strings, got an item of type {_kind(item)}")
    return list(value)


def _counts_map(value: Any) -> Any:
    if type(value) is not dict:
        raise _Bad(f"expected a dict of string -> count, got {_kind(value)}")
    for key, count in value.items():
        if type(key) is not str:
            raise _Bad(f"expected string keys, got a key of type {_kind(key)}")
        if type(count) is not int or not 0 <= count < 1 << 64:
            raise _Bad(f"expected UInt64 counts, got {_kind(count)} for key {key!r}")
    return value


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def nullable(value: Any) -> Any:
        return None if value is None else convert(value)

    return nullable


@dataclass(frozen=True)
class Column:
    """One table column: its name (= the row dict key), ClickHouse type and converter."""

    name: str
    ch_type: str
    convert: Callable[[Any], Any]


_TS = "DateTime64(3, 'UTC')"


def _col(name: str, ch_type: str) -> Column:
    nullable = ch_type.startswith("Nullable(")
    base = ch_type[len("Nullable(") : -1] if nullable else ch_type
    converters: dict[str, Callable[[Any], Any]] = {
        "String": _string,
        "LowCardinality(String)": _string,
        "Float64": _float,
        "UInt8": _uint(8),
        "UInt32": _uint(32),
        "UInt64": _uint(64),
        "Bool": _boolean,
        _TS: _epoch_ms,
        "Array(String)": _string_array,
        "Map(String, UInt64)": _counts_map,
    }
    convert = converters[base]
    return Column(name, ch_type, _nullable(convert) if nullable else convert)


# Must match conf/clickhouse/*.sql; tests compare this with system.columns.
COLUMNS: dict[str, tuple[Column, ...]] = {
    "customer_profiles": (
        _col("customer_id", "String"),
        _col("email", "Nullable(String)"),
        _col("first_name", "Nullable(String)"),
        _col("locale", "Nullable(String)"),
        _col("timezone", "Nullable(String)"),
        _col("first_seen", _TS),
        _col("last_seen", _TS),
        _col("event_counts", "Map(String, UInt64)"),
        _col("revenue_total", "Float64"),
        _col("order_count", "UInt64"),
        _col("avg_order_value", "Float64"),
        _col("last_purchase_at", f"Nullable({_TS})"),
        _col("recent_products", "Array(String)"),
        _col("favourite_categories", "Array(String)"),
        _col("cart_value", "Float64"),
        _col("cart_items", "UInt32"),
        _col("journey_status", "LowCardinality(String)"),
        _col("emails_sent", "UInt32"),
        _col("unsubscribed", "Bool"),
        _col("updated_at", _TS),
        _col("version", "UInt64"),
    ),
    "email_requests": (
        _col("request_id", "String"),
        _col("campaign", "String"),
        _col("step", "UInt8"),
        _col("customer_id", "String"),
        _col("status", "LowCardinality(String)"),
        _col("reason", "String"),
        _col("subject", "String"),
        _col("due_at", _TS),
        _col("emitted_at", _TS),
        _col("cart_id", "Nullable(String)"),
        _col("cart_value", "Float64"),
        _col("currency", "String"),
        _col("product_ids", "Array(String)"),
    ),
    "cart_recoveries": (
        _col("customer_id", "String"),
        _col("cart_id", "Nullable(String)"),
        _col("order_id", "String"),
        _col("reminder_step", "UInt8"),
        _col("reminder_request_id", "String"),
        _col("reminded_at", _TS),
        _col("purchased_at", _TS),
        _col("revenue", "Float64"),
        _col("currency", "String"),
        _col("seconds_to_purchase", "Float64"),
    ),
}
# Keys that identify a row in error messages (ids only: no personal data in logs).
_ROW_IDS = {
    "customer_profiles": ("customer_id", "version"),
    "email_requests": ("request_id", "customer_id"),
    "cart_recoveries": ("customer_id", "order_id"),
}


def row_label(table: str, row: Any) -> str:
    """``customer_id='c1' version=3`` style identification of a row for messages."""
    if isinstance(row, str):
        try:
            row = orjson.loads(row)
        except orjson.JSONDecodeError:
            return "row that is not JSON"
    if not isinstance(row, Mapping):
        return f"row of type {type(row).__name__}"
    return " ".join(f"{key}={row.get(key)!r}" for key in _ROW_IDS.get(table, ()))


def convert_row(table: str, row: Any) -> tuple[Any, ...]:
    """Convert one row dict to insert values in column order; raise ValueError naming the column.

    The row must have exactly the table's columns as keys: a missing or unknown key means
    the job and the schema disagree, which should be seen, not silently defaulted.
    """
    converters = _converters(table)
    if type(row) is dict and len(row) == len(converters):
        # Fast path (this runs for every row of every batch); any problem falls through to
        # the slow path below, which finds and names it.
        try:
            return tuple([convert(row[name]) for name, convert in converters])
        except (KeyError, _Bad):
            pass
    return _convert_row_checked(table, row)


def _convert_row_checked(table: str, row: Any) -> tuple[Any, ...]:
    columns = _columns(table)
    if not isinstance(row, Mapping):
        # ValueError like every other conversion failure: callers catch one type per row.
        raise ValueError(f"expected a dict, got {type(row).__name__}")  # noqa: TRY004
    values = []
    for column in columns:
        try:
            value = row[column.name]
        except KeyError:
            raise ValueError(f"missing column {column.name!r}") from None
        try:
            values.append(column.convert(value))
        except _Bad as exc:
            raise ValueError(f"column {column.name!r}: {exc}") from None
    if len(row) != len(columns):
        known = {column.name for column in columns}
        unknown = sorted(str(key) for key in row if key not in known)
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))}")
    return tuple(values)


_NAMES = {table: [c.name for c in columns] for table, columns in COLUMNS.items()}
_CONVERTERS = {table: tuple((c.name, c.convert) for c in columns) for table, columns in COLUMNS.items()}


# Columns holding epoch milliseconds in row dicts; as JSON lines (insert_json_lines) they
# are numbers of seconds with a fraction, see json_ready.
TIMESTAMP_COLUMNS = {table: tuple(c.name for c in columns if _TS in c.ch_type)
                     for table, columns in COLUMNS.items()}


def json_ready(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a dict with every column of ``table``, times in epoch ms) made ready for
    :meth:`Store.insert_json_lines`, in place: times become seconds (the engine reads a
    DateTime64 JSON number as seconds; ms / 1000 has an exact 3-decimal repr)."""
    for name in TIMESTAMP_COLUMNS[table]:
        value = row[name]
        if value is not None:
            row[name] = value / 1000
    return row


def _converters(table: str) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    try:
        return _CONVERTERS[table]
    except KeyError:
        _columns(table)  # raises the StoreError naming the table
        raise


def _columns(table: str) -> tuple[Column, ...]:
    try:
        return COLUMNS[table]
    except KeyError:
        raise StoreError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}") from None


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One ``NNN_name.sql`` file; applied once, in version order, recorded in schema_migrations."""

    version: int
    name: str
    path: Path


def discover_migrations(ddl_dir: Path) -> list[Migration]:
    """The migration files of ``ddl_dir`` sorted by version; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(ddl_dir).glob("*.sql")):
        match = _MIGRATION_FILE_RE.match(path.name)
        if not match:
            raise StoreError(f"migration file {path} is not named NNN_name.sql")
        version = int(match.group(1))
        if version == 0 or version in found:
            raise StoreError(f"migration version {version} of {path.name} is 0 or used twice")
        found[version] = Migration(version, match.group(2), path)
    if not found:
        raise StoreError(f"no NNN_name.sql migration files in {ddl_dir}")
    return [found[version] for version in sorted(found)]


def split_sql(text: str) -> list[str]:
    """Split a SQL script on top-level ``;``, ignoring those inside quotes and comments.

    Statements that are only comments are dropped; comments inside a statement are kept
    (ClickHouse accepts them).
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            current.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            current.append(text[i:end])
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            current.append(text[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return bool(without_comments.strip())


# --------------------------------------------------------------------------- connections


class _Connection:
    """One clickhouse-connect client per DSN in this process, shared by all Store handles.

    The client is created lazily under ``lock`` (so an unreachable server is a transient error
    inside the retry loop, not a crash at start-up) and every call on it holds ``lock``: in
    Flink thread mode two writer subtasks share this process and this connection.

    ``hosted``: a chdb engine runs in a child process (:mod:`udfs.store_host`) instead of
    this one; the writer inside the Flink JVM needs that. A host that died is replaced on
    the next call.
    """

    def __init__(self, dsn: str, hosted: bool = False):
        self.dsn = dsn
        self.hosted = hosted
        self.lock = threading.Lock()
        self.refs = 0
        self.client: Any = None

    def acquire(self) -> Any:
        """Return the client, connecting first if needed; the caller holds ``lock``."""
        if self.client is not None and getattr(self.client, "dead", False):
            logger.warning("the chdb host process for %s is gone; starting a new one", self.dsn)
            self.close()
        if self.client is None:
            self.client = self._connect()
        return self.client

    def _connect(self) -> Any:
        import clickhouse_connect

        chdb_path = _chdb_path(self.dsn)
        try:
            if chdb_path is not None and self.hosted:
                from udfs.store_host import HostedClient

                return HostedClient(chdb_path)
            if chdb_path is not None:
                # In-process: the CLI, the tests, the host process. Never inside the JVM
                # (udfs/store_host.py says why).
                return clickhouse_connect.get_client(dsn="chdb://" + chdb_path)
            parts = urlsplit(self.dsn)
            return clickhouse_connect.get_client(
                dsn=self.dsn,
                # The driver ignores the DSN scheme; without this https would speak http.
                interface=parts.scheme.lower(),
                password=os.environ.get(PASSWORD_ENV, ""),
                # Sessions would forbid the two writer subtasks' (serialised) calls from
                # sharing the client; nothing here needs session state.
                autogenerate_session_id=False,
            )
        except StoreError:
            raise
        except Exception as exc:
            if chdb_path is not None:
                raise _chdb_open_error(chdb_path, exc) from exc
            raise classify_error(exc) from exc

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                client.close()
            except Exception:  # closing must not mask the job's own shutdown
                logger.warning("closing the ClickHouse client for %s failed", _redact(self.dsn), exc_info=True)


def _chdb_open_error(path: str, exc: Exception) -> StoreError:
    text = str(exc)
    if "already initialized with path" in text:
        return StoreLockedError(
            f"this process already has the chdb engine open at another path; chdb hosts one "
            f"path per process, so {path} cannot be opened until that one is closed"
        )
    if _locked_by_other_process(path):
        return StoreLockedError(
            f"the chdb directory {path} is in use by another process. chdb lets one process "
            "at a time open a path: stop the running inboxflow job (or other client) first, "
            "or point the job at a ClickHouse server (http://...)"
        )
    return StoreError(f"could not open the chdb engine at {path}: {_short(text)}")


def _locked_by_other_process(path: str) -> bool:
    """Probe the lock ClickHouse keeps on ``<path>/status`` (flock, exclusive, non-blocking).

    Only called after the engine failed to open here, so the probe cannot steal a start-up
    from anyone in this process.
    """
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.username:
        return dsn.replace(parts.username + "@", "***@", 1)
    return dsn


_REGISTRY: dict[tuple[str, bool], _Connection] = {}
_REGISTRY_LOCK = threading.Lock()


def get_client(dsn: str, hosted: bool = False) -> Store:
    """A Store handle on the process-wide connection for ``dsn`` (created on first use).

    Every handle must be closed once; the shared connection (and for chdb the directory lock)
    is released when the last handle closes. ``hosted=True`` runs a chdb engine in a child
    process (:mod:`udfs.store_host`): required inside the Flink JVM, whose own use of
    SIGSEGV cannot coexist with chdb's signal handlers. It changes nothing for a server DSN.
    """
    key = _registry_key(dsn)
    hosted = hosted and _chdb_path(key) is not None
    with _REGISTRY_LOCK:
        connection = _REGISTRY.get((key, hosted))
        if connection is None:
            connection = _REGISTRY[(key, hosted)] = _Connection(key, hosted)
        connection.refs += 1
    return Store(connection)


def _registry_key(dsn: str) -> str:
    chdb_path = _chdb_path(dsn)
    if chdb_path is not None:
        if not os.path.isabs(dsn.removeprefix("chdb:").removeprefix("//")):
            raise DsnError(f"ClickHouse DSN {dsn!r} is relative; pass it through resolve_dsn first")
        return "chdb://" + chdb_path
    resolve_dsn(dsn, Path("/"))  # validates http(s)
    return dsn


class Store:
    """A handle on the shared ClickHouse connection of one DSN.

    Invariants: every call is serialised on the shared connection's lock; errors leave as
    :class:`TransientStoreError`, :class:`RowRejected` or :class:`StoreError`; a closed handle
    refuses further calls, closing it twice is harmless.
    """

    def __init__(self, connection: _Connection):
        self._connection = connection
        self._closed = False

    @property
    def dsn(self) -> str:
        return self._connection.dsn

    def _call(self, action: Callable[[Any], Any]) -> Any:
        if self._closed:
            raise StoreError("the store handle is closed")
        with self._connection.lock:
            client = self._connection.acquire()
            try:
                return action(client)
            except Exception as exc:
                raise classify_error(exc) from exc

    def migrate(self, ddl_dir: Path) -> int:
        """Apply the not-yet-applied ``NNN_name.sql`` files in order; return the schema version.

        Statements are idempotent (IF NOT EXISTS / OR REPLACE), so a migration interrupted
        before it was recorded is simply re-run.
        """
        migrations = discover_migrations(ddl_dir)

        def apply(client: Any) -> int:
            client.command(_MIGRATIONS_DDL)
            current = _read_version(client)
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in split_sql(migration.path.read_text(encoding="utf-8")):
                    try:
                        client.command(statement)
                    except Exception as exc:
                        error = classify_error(exc)
                        raise type(error)(f"migration {migration.path.name} failed: {error}") from exc
                client.command(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) "
                    "VALUES ({v:UInt32}, {n:String}, now64(3))",
                    parameters={"v": migration.version, "n": migration.name},
                )
                logger.info("applied ClickHouse migration %s", migration.path.name)
                current = migration.version
            return current

        return int(self._call(apply))

    def schema_version(self) -> int:
        """Highest applied migration version, 0 for an empty database."""
        return int(self._call(_read_version))

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (dicts keyed by column name) as one batch.

        Every row is converted before anything is sent: if any fails, RowRejected lists all
        failing indices and nothing is written.
        """
        _columns(table)  # raises the StoreError naming an unknown table
        if not rows:
            return
        data: list[tuple[Any, ...]] = []
        row_errors: dict[int, str] = {}
        for index, row in enumerate(rows):
            try:
                data.append(convert_row(table, row))
            except ValueError as exc:
                row_errors[index] = f"{table} {row_label(table, row)}: {exc}"
        if row_errors:
            first = row_errors[min(row_errors)]
            raise RowRejected(f"{len(row_errors)} row(s) rejected, first: {first}", row_errors)
        names = _NAMES[table]
        # The same transport as the writer's: JSON parsed by the engine, ~10x cheaper per row
        # than the driver's Python-side Native encoding, the same for chdb and a server.
        self.insert_json_lines(table, [
            orjson.dumps(json_ready(table, dict(zip(names, values, strict=True)))).decode()
            for values in data])

    def insert_json_lines(self, table: str, lines: Sequence[str]) -> None:
        """Insert rows given as JSON objects (one per line, from :func:`json_ready`) in one
        batch, parsed by the engine: no per-row work in Python. The engine checks every
        value; it rejects the whole batch for one bad row (``write_batch`` then bisects)."""
        _columns(table)
        if not lines:
            return
        body = "\n".join(lines).encode()
        self._call(lambda client: client.raw_insert(
            table, column_names=_NAMES[table], insert_block=body, fmt="JSONEachRow"))

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a SELECT-like statement; return (column names, rows). UTC datetimes come back naive."""

        def run(client: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
            result = client.query(sql, parameters=parameters)
            return list(result.column_names), [tuple(row) for row in result.result_rows]

        columns_rows: tuple[list[str], list[tuple[Any, ...]]] = self._call(run)
        return columns_rows

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed (TRUNCATE, OPTIMIZE, DDL)."""
        self._call(lambda client: client.command(sql, parameters=parameters))

    def close(self) -> None:
        """Release this handle; the last handle of a DSN closes the connection (and chdb lock)."""
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        with _REGISTRY_LOCK:
            connection.refs -= 1
            if connection.refs > 0:
                return
            if _REGISTRY.get((connection.dsn, connection.hosted)) is connection:
                del _REGISTRY[(connection.dsn, connection.hosted)]
        with connection.lock:
            connection.close()


def _read_version(client: Any) -> int:
    if not client.command(f"EXISTS TABLE {MIGRATIONS_TABLE}"):
        return 0
    result = client.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE}")
    return int(result.result_rows[0][0] or 0)


# --------------------------------------------------------------------------- retrying writer


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient store errors.

    The n-th retry (0-based) sleeps ``rand() * min(cap_ms, base_ms * 2**n)`` ms.
    ``max_attempts`` counts insert attempts including the first; None retries forever, which
    is the default because a row must never be dropped for an outage.
    """

    base_ms: int = 100
    cap_ms: int = 10_000
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base_ms <= 0 or self.cap_ms < self.base_ms:
            raise ValueError(f"RetryPolicy needs 0 < base_ms <= cap_ms, got {self.base_ms}, {self.cap_ms}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be None or >= 1, got {self.max_attempts}")


def backoff_ceiling_ms(retry_index: int, policy: RetryPolicy) -> int:
    """Upper bound of the ``retry_index``-th (0-based) backoff: min(cap, base * 2**index)."""
    # The exponent is clamped so a retry-forever loop never builds huge integers.
    return min(policy.cap_ms, policy.base_ms << min(retry_index, 62))


def backoff_ms(retry_index: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full-jitter backoff: uniformly spread over [0, ceiling) so writers do not retry in step."""
    return rand() * backoff_ceiling_ms(retry_index, policy)


OnRetry = Callable[[int, float, TransientStoreError], None]


def write_batch(
    store: Any,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
    json_lines: bool = False,
) -> list[tuple[Any, str]]:
    """Insert ``rows`` into ``table``; return the rejected rows as ``[(row, reason)]``.
    ``rows`` are dicts (:meth:`Store.insert_rows`) or, with ``json_lines``, JSON texts
    (:meth:`Store.insert_json_lines`).

    Transient errors are retried with backoff (``on_retry(attempt, delay_s, error)`` is told
    before each sleep) until ``retry.max_attempts``, then re-raised: nothing is dropped.
    Rejected content is isolated by bisection: the good rows are inserted, each bad row is
    returned once with its reason, for the caller's dead-letter queue. Any other StoreError is
    raised. Because every table deduplicates on its key, re-running a partly written batch
    after an exception is harmless.
    """
    rejected: list[tuple[Any, str]] = []
    stack = [list(rows)]
    while stack:
        batch = stack.pop()
        if not batch:
            continue
        try:
            _insert_retrying(store, table, batch, retry, sleep, rand, on_retry, json_lines)
        except RowRejected as exc:
            if exc.row_errors:
                # The bad rows are known and nothing was written: drop them, retry the rest.
                rejected.extend((batch[i], reason) for i, reason in sorted(exc.row_errors.items()))
                stack.append([row for i, row in enumerate(batch) if i not in exc.row_errors])
            elif len(batch) == 1:
                reason = f"{table} {row_label(table, batch[0])}: {exc}"
                logger.warning("ClickHouse rejected a row: %s", reason)
                rejected.append((batch[0], reason))
            else:
                middle = len(batch) // 2
                stack.append(batch[middle:])
                stack.append(batch[:middle])  # popped first: rows keep their order
    return rejected


def _insert_retrying(
    store: Any,
    table: str,
    batch: list[Mapping[str, Any]],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    rand: Callable[[], float],
    on_retry: OnRetry | None,
    json_lines: bool = False,
) -> None:
    insert = store.insert_json_lines if json_lines else store.insert_rows
    attempt = 0
    while True:
        attempt += 1
        try:
            insert(table, batch)
            return
        except TransientStoreError as exc:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise
            delay_s = backoff_ms(attempt - 1, policy, rand) / 1000.0
            logger.warning(
                "ClickHouse insert of %d row(s) into %s failed (attempt %d), retrying in %.3f s: %s",
                len(batch), table, attempt, delay_s, exc,
            )
            if on_retry is not None:
                on_retry(attempt, delay_s, exc)
            sleep(delay_s)
