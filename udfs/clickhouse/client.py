"""The process-wide ClickHouse connection per DSN and the :class:`Store` handles on it (no pyflink).

Migrations, typed batched inserts and queries go through a :class:`Store`; every error leaves as
one of the kinds in :mod:`udfs.clickhouse.errors`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from udfs.clickhouse.dsn import DsnError, chdb_path, redact, resolve_dsn
from udfs.clickhouse.engine import chdb_open_error, open_client
from udfs.clickhouse.errors import RowRejected, StoreError, classify_error
from udfs.clickhouse.host import HostedClient
from udfs.clickhouse.migrations import (
    MIGRATIONS_DDL,
    MIGRATIONS_TABLE,
    discover_migrations,
    read_version,
    split_sql,
)
from udfs.clickhouse.schema import COLUMN_NAMES, columns_of, convert_row, json_ready, row_label

logger = logging.getLogger(__name__)


class _Connection:
    """One clickhouse-connect client per DSN in this process, shared by all Store handles.

    The client is created lazily under ``lock`` (so an unreachable server is a transient error
    inside the retry loop, not a crash at start-up) and every call on it holds ``lock``: in
    Flink thread mode two writer subtasks share this process and this connection.

    ``hosted``: a chdb engine runs in a child process (:mod:`udfs.clickhouse.host`) instead of
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
        path = chdb_path(self.dsn)
        if path is None or not self.hosted:
            return open_client(self.dsn)
        try:
            return HostedClient(path)
        except StoreError:
            raise
        except Exception as exc:
            raise chdb_open_error(path, exc) from exc

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                client.close()
            except Exception:  # closing must not mask the job's own shutdown
                logger.warning(
                    "closing the ClickHouse client for %s failed", redact(self.dsn), exc_info=True
                )


_REGISTRY: dict[tuple[str, bool], _Connection] = {}
_REGISTRY_LOCK = threading.Lock()


def get_client(dsn: str, hosted: bool = False) -> Store:
    """A Store handle on the process-wide connection for ``dsn`` (created on first use).

    Every handle must be closed once; the shared connection (and for chdb the directory lock)
    is released when the last handle closes. ``hosted=True`` runs a chdb engine in a child
    process (:mod:`udfs.clickhouse.host`): required inside the Flink JVM, whose own use of
    SIGSEGV cannot coexist with chdb's signal handlers. It changes nothing for a server DSN.
    """
    key = _registry_key(dsn)
    hosted = hosted and chdb_path(key) is not None
    with _REGISTRY_LOCK:
        connection = _REGISTRY.get((key, hosted))
        if connection is None:
            connection = _REGISTRY[(key, hosted)] = _Connection(key, hosted)
        connection.refs += 1
    return Store(connection)


def _registry_key(dsn: str) -> str:
    path = chdb_path(dsn)
    if path is not None:
        if not os.path.isabs(dsn.removeprefix("chdb:").removeprefix("//")):
            raise DsnError(f"ClickHouse DSN {dsn!r} is relative; pass it through resolve_dsn first")
        return "chdb://" + path
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
            client.command(MIGRATIONS_DDL)
            current = read_version(client)
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in split_sql(migration.path.read_text(encoding="utf-8")):
                    try:
                        client.command(statement)
                    except Exception as exc:
                        error = classify_error(exc)
                        raise type(error)(
                            f"migration {migration.path.name} failed: {error}"
                        ) from exc
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
        return int(self._call(read_version))

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (dicts keyed by column name) as one batch.

        Every row is converted before anything is sent: if any fails, RowRejected lists all
        failing indices and nothing is written.
        """
        columns_of(table)  # raises the StoreError naming an unknown table
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
        names = COLUMN_NAMES[table]
        # The same transport as the writer's: JSON parsed by the engine, far cheaper per row
        # than the driver's Python-side Native encoding (docs/PERFORMANCE.md), the same for
        # chdb and a server.
        self.insert_json_lines(
            table,
            [
                orjson.dumps(json_ready(table, dict(zip(names, values, strict=True)))).decode()
                for values in data
            ],
        )

    def insert_json_lines(self, table: str, lines: Sequence[str]) -> None:
        """Insert rows given as JSON objects (one per line, from :func:`json_ready`) in one
        batch, parsed by the engine: no per-row work in Python. The engine checks every
        value; it rejects the whole batch for one bad row (``write_batch`` then bisects)."""
        columns_of(table)
        if not lines:
            return
        body = "\n".join(lines).encode()
        self._call(
            lambda client: client.raw_insert(
                table, column_names=COLUMN_NAMES[table], insert_block=body, fmt="JSONEachRow"
            )
        )

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a SELECT-like statement; return (column names, rows). UTC datetimes come back
        naive."""

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
