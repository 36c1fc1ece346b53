"""How ClickHouse failures are sorted, so the Flink writer can act on them.

- :class:`TransientStoreError`: connection refused/reset, timeouts, server busy. Retry
  (:func:`udfs.clickhouse.writer.write_batch` does, with exponential backoff and full jitter).
- :class:`RowRejected`: ClickHouse (or the row conversion) rejected the content. Retrying
  cannot help; the bad rows go to the dead-letter queue.
- :class:`StoreError` (anything else, e.g. unknown table, authentication, the chdb lock): a
  configuration problem. Raised as is so the job fails loudly; pending rows stay in Flink state.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Mapping


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
    message = short_reason(str(exc)) or type(exc).__name__
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


def short_reason(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."
