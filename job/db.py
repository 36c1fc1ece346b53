"""ClickHouse subcommands of the ``inboxflow`` CLI: ``db migrate``, ``query`` and ``profile``.

``job/cli.py`` calls :func:`register` with its subparsers; each subcommand sets ``func`` to a
function ``(args) -> exit code``. The DSN comes from ``--dsn``, else the environment variable
``INBOXFLOW_CLICKHOUSE_DSN``, else the embedded default ``./var/clickhouse``.

Exit codes: 0 ok, 1 the statement failed or the customer is unknown, 2 the store could not be
used (the chdb directory is locked by the running job, bad DSN, server unreachable).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from job.config import ENV_CLICKHOUSE_DSN, ENV_CLICKHOUSE_PASSWORD
from udfs.clickhouse.client import Store, get_client
from udfs.clickhouse.dsn import DsnError, resolve_dsn
from udfs.clickhouse.errors import StoreError, StoreLockedError, TransientStoreError

DDL_DIR = Path(__file__).resolve().parent.parent / "conf" / "clickhouse"
FORMATS = ("table", "csv", "json")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2


def register(subparsers: Any) -> None:
    """Add ``db migrate``, ``query`` and ``profile`` to an argparse subparsers object."""
    db = subparsers.add_parser("db", help="manage the ClickHouse schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending conf/clickhouse/*.sql migrations")
    _add_dsn(migrate)
    migrate.add_argument(
        "--ddl-dir", type=Path, default=DDL_DIR, help="directory of NNN_name.sql files"
    )
    migrate.set_defaults(func=cmd_migrate)

    query = subparsers.add_parser("query", help="run one SQL statement against ClickHouse")
    query.add_argument("sql", help='e.g. "SELECT * FROM recovery_summary_by_step"')
    query.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    _add_dsn(query)
    query.set_defaults(func=cmd_query)

    profile = subparsers.add_parser(
        "profile", help="show a customer's latest profile, emails and recoveries"
    )
    profile.add_argument("customer_id")
    _add_dsn(profile)
    profile.set_defaults(func=cmd_profile)


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=None,
        help=f"chdb:///path or http(s)://user@host:8123/db "
        f"(default: ${ENV_CLICKHOUSE_DSN}, else ./var/clickhouse); "
        f"the password comes from ${ENV_CLICKHOUSE_PASSWORD}",
    )


def dsn_from_args(args: argparse.Namespace, base_dir: Path | None = None) -> str:
    """``--dsn``, else ``$INBOXFLOW_CLICKHOUSE_DSN``, else the default; relative chdb paths
    resolve against ``base_dir`` (the working directory)."""
    raw = getattr(args, "dsn", None) or os.environ.get(ENV_CLICKHOUSE_DSN) or None
    return resolve_dsn(raw, base_dir or Path.cwd())


def cmd_migrate(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    ddl_dir = getattr(args, "ddl_dir", None) or DDL_DIR
    return _with_store(args, err, lambda store: _migrate(store, ddl_dir, out))


def _migrate(store: Store, ddl_dir: Path, out: TextIO) -> int:
    before = store.schema_version()
    after = store.migrate(ddl_dir)
    print(f"schema version {after} (was {before})", file=out)
    return EXIT_OK


def cmd_query(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    fmt = getattr(args, "format", "table") or "table"

    def run(store: Store) -> int:
        columns, rows = store.query(args.sql)
        out.write(render(columns, rows, fmt))
        return EXIT_OK

    return _with_store(args, err, run)


_HISTORY_SQL = (
    "SELECT due_at, campaign, step, status, reason, subject, cart_id, cart_value, currency, "
    "request_id FROM email_requests FINAL WHERE customer_id = {cid:String} "
    "ORDER BY due_at, request_id"
)
_RECOVERIES_SQL = (
    "SELECT purchased_at, order_id, cart_id, revenue, currency, reminder_step, reminded_at, "
    "seconds_to_purchase, reminder_request_id "
    "FROM cart_recoveries FINAL WHERE customer_id = {cid:String} ORDER BY purchased_at, order_id"
)


def cmd_profile(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    params = {"cid": args.customer_id}

    def run(store: Store) -> int:
        columns, rows = store.query(
            "SELECT * FROM customer_profiles_latest WHERE customer_id = {cid:String}", params
        )
        history = store.query(_HISTORY_SQL, params)
        recoveries = store.query(_RECOVERIES_SQL, params)
        if rows:
            width = max(len(name) for name in columns)
            for name, value in zip(columns, rows[0], strict=True):
                print(f"{name.ljust(width)} : {format_cell(value)}", file=out)
        else:
            print(f"no profile for customer_id={args.customer_id!r}", file=err)
        for title, (cols, data) in (("email history", history), ("cart recoveries", recoveries)):
            print(f"\n{title} ({len(data)}):", file=out)
            if data:
                out.write(_indent(render(cols, data, "table"), "  "))
        return EXIT_OK if rows else EXIT_FAILED

    return _with_store(args, err, run)


def _with_store(args: argparse.Namespace, err: TextIO, action: Callable[[Store], int]) -> int:
    """Run ``action`` on a store handle, turning store failures into a message and exit code."""
    try:
        dsn = dsn_from_args(args)
    except DsnError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_UNAVAILABLE
    try:
        store = get_client(dsn)
    except StoreError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_UNAVAILABLE
    try:
        return action(store)
    except (StoreLockedError, TransientStoreError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except StoreError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    finally:
        store.close()


# --------------------------------------------------------------------------- output


def format_cell(value: Any) -> str:
    """One value as text for the table and key: value output. UTC datetimes end in 'Z'."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return _iso(value, sep=" ")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _iso(value: dt.datetime, sep: str) -> str:
    # clickhouse-connect returns DateTime64(3, 'UTC') columns as naive UTC datetimes.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=sep, timespec="milliseconds") + "Z"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value, sep="T")
    if isinstance(value, (dt.date, UUID, Decimal)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    return value


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as an aligned text table, CSV (with header) or a JSON array of objects."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([("" if v is None else format_cell(v)) for v in row] for row in rows)
        return buffer.getvalue()
    if fmt == "json":
        objects = [
            {name: _jsonable(value) for name, value in zip(columns, row, strict=True)}
            for row in rows
        ]
        return json.dumps(objects, ensure_ascii=False, indent=2) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not columns:
        # chdb sends no header for an empty result, so there is nothing to align.
        return f"({len(rows)} rows)\n"
    cells = [[format_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows)
        and all(
            isinstance(row[i], (int, float, Decimal)) and not isinstance(row[i], bool)
            for row in rows
        )
        for i in range(len(columns))
    ]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip() + "\n"

    text = line(columns) + line(["-" * w for w in widths]) + "".join(line(row) for row in cells)
    return text + f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))
