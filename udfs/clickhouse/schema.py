"""The tables the job writes and how one row is converted for ClickHouse (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from udfs.clickhouse.errors import StoreError

TABLES = ("customer_profiles", "email_requests", "cart_recoveries")
VIEWS = (
    "customer_profiles_latest",
    "recovery_summary_by_step",
    "campaign_decisions",
    "campaign_summary",
    "campaign_suppressions",
)


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
        "UInt16": _uint(16),
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
        # 006_campaign_guards.sql
        _col("category", "LowCardinality(String)"),  # 'marketing' | 'transactional'
        _col("deferrals", "UInt16"),  # times the step was deferred before this row
        _col("deferred_until", f"Nullable({_TS})"),  # status 'deferred': due again at
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
    columns = columns_of(table)
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


COLUMN_NAMES = {table: [c.name for c in columns] for table, columns in COLUMNS.items()}
_CONVERTERS = {
    table: tuple((c.name, c.convert) for c in columns) for table, columns in COLUMNS.items()
}


# Columns holding epoch milliseconds in row dicts; as JSON lines (insert_json_lines) they
# are numbers of seconds with a fraction, see json_ready.
TIMESTAMP_COLUMNS = {
    table: tuple(c.name for c in columns if _TS in c.ch_type) for table, columns in COLUMNS.items()
}


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
        columns_of(table)  # raises the StoreError naming the table
        raise


def columns_of(table: str) -> tuple[Column, ...]:
    try:
        return COLUMNS[table]
    except KeyError:
        raise StoreError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}") from None
