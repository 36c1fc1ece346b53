"""Opening a clickhouse-connect client for a DSN in this process (no pyflink).

In-process means the CLI, the tests and the chdb host process; never the Flink JVM, which runs
the chdb engine in a child process instead (:mod:`udfs.clickhouse.host`,
docs/DESIGN.md#chdb-signals).
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any
from urllib.parse import urlsplit

from udfs.clickhouse.dsn import ENV_CLICKHOUSE_PASSWORD, chdb_path
from udfs.clickhouse.errors import StoreError, StoreLockedError, classify_error, short_reason


def open_client(dsn: str) -> Any:
    """A clickhouse-connect client for a canonical DSN; failures leave as :class:`StoreError`."""
    import clickhouse_connect

    path = chdb_path(dsn)
    try:
        if path is not None:
            return clickhouse_connect.get_client(dsn="chdb://" + path)
        parts = urlsplit(dsn)
        return clickhouse_connect.get_client(
            dsn=dsn,
            # The driver ignores the DSN scheme; without this https would speak http.
            interface=parts.scheme.lower(),
            password=os.environ.get(ENV_CLICKHOUSE_PASSWORD, ""),
            # Sessions would forbid the two writer subtasks' (serialised) calls from
            # sharing the client; nothing here needs session state.
            autogenerate_session_id=False,
        )
    except StoreError:
        raise
    except Exception as exc:
        if path is not None:
            raise chdb_open_error(path, exc) from exc
        raise classify_error(exc) from exc


def chdb_open_error(path: str, exc: Exception) -> StoreError:
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
    return StoreError(f"could not open the chdb engine at {path}: {short_reason(text)}")


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
