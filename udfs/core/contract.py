"""What the customer function emits, in one place (pure Python, no pyflink import): the kinds
of its output elements, how each record is encoded into one and decoded again, and the
ClickHouse row lines the writer reads.

Every output travels as one Flink type, ``ROUTED`` = ``(kind, shard, key, payload)``
(``udfs.flink.customer_function``), split on the JVM by ``io.inboxflow.flink.OutputRouter``
(``tests/unit/test_contract.py`` checks the Java side against this module):

* :attr:`Kind.REQUEST`, :attr:`Kind.OUTCOME`, :attr:`Kind.DLQ`: a Kafka record, ``key`` the
  customer id (None for a DLQ record without one), ``payload`` the record's JSON; ``shard``
  is 0.
* :attr:`Kind.STORE`: ClickHouse rows for the writer, keyed by ``shard``; ``key`` is "" and
  ``payload`` holds store rows: one line per row, ``table<TAB>source<TAB>row JSON``, lines
  joined by a newline (the rows of one event, or of many events of one shard). ``source``
  is the Kafka record time (ms) of the event behind a ``customer_profiles`` row, for the
  writer's freshness measurement (never stored; 0 or below when the source gave the record
  no time), and empty on other rows and on rows a timer wrote. Neither separator can
  occur in a field: table names hold none, and JSON escapes both inside strings and puts
  no white space between tokens.

A DLQ record has one shape wherever it is built: the dict of
:func:`udfs.core.validation.dlq_record` (the customer function for events and timers, the
writer for rows ClickHouse refused, and ``OutputRouter`` for an element it cannot route).

Encoders take what the caller already has (a dict, or JSON it measured) and do one JSON
encoding at most; decoders exist for the writer (store rows) and for tests and tools.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any, Final, NamedTuple

import orjson


class Kind(IntEnum):
    """The kind of a ``ROUTED`` element (``OutputRouter.STORE`` ...)."""

    STORE = 0
    REQUEST = 1
    DLQ = 2
    OUTCOME = 3


class Table:
    """The ClickHouse table of a store row (``udfs.clickhouse.schema.TABLES``); plain
    strings, compared per row."""

    PROFILES: Final = "customer_profiles"
    REQUESTS: Final = "email_requests"
    RECOVERIES: Final = "cart_recoveries"
    ALL: Final = (PROFILES, REQUESTS, RECOVERIES)


# DLQ reasons of records that validation does not produce
PROCESSING_ERROR: Final = "processing_error"  # something raised on one record's content
STORE_REJECTED: Final = "store_rejected"  # ClickHouse refused a row for its content
# A DLQ record's payload is cut to this many UTF-8 bytes where nothing smaller bounds it
# (ClickHouse rows): escaped once more inside the record (at most doubling, as rows are JSON
# already), it stays below Kafka's default max.request.size (1,048,576 bytes), above which
# the sink would fail on every replay.
MAX_DLQ_PAYLOAD_BYTES: Final = 500_000

# (kind, shard, key, payload)
Routed = tuple[int, int, str | None, str]

# Elements carry plain ints, not enum members, into the conversion to Java values.
_STORE: Final = Kind.STORE.value
_REQUEST: Final = Kind.REQUEST.value
_DLQ: Final = Kind.DLQ.value
_OUTCOME: Final = Kind.OUTCOME.value
_TABLES: Final = frozenset(Table.ALL)
_FIELD: Final = "\t"
_ROW: Final = "\n"
_NOT_AN_INTEGER: Final = "a store row line has a source time that is not an integer"


class ContractError(ValueError):
    """An element or a store row line that this contract does not describe. The message
    never quotes the content (it may hold personal data)."""


class Keyed(NamedTuple):
    """A decoded Kafka-bound output: its record key (the customer id) and its JSON value."""

    key: str | None
    value: dict[str, Any]


class StoreRow(NamedTuple):
    """One decoded store row line."""

    table: str
    row_json: str  # the row as the writer inserts it
    source_kafka_ms: int | None  # Kafka record time of the event behind a profile row


class Store(NamedTuple):
    """A decoded ``Kind.STORE`` element."""

    shard: int
    rows: list[StoreRow]


class Grouped(NamedTuple):
    """Store rows decoded for insertion (:func:`group_store_rows`)."""

    by_table: dict[str, list[str]]  # table -> row JSON, in the order received
    sources: list[int]  # the source Kafka times the rows carry
    bad: list[tuple[str, str]]  # (line, why) of each line that is no store row


def safe_dumps(obj: object) -> str:
    """JSON text that never raises for str content: orjson, or, for text that UTF-8 cannot
    encode (unpaired surrogates), ASCII JSON with escapes."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, ensure_ascii=True, default=repr)


# --- Kafka-bound records ------------------------------------------------------------------


def encode_request(customer_id: str, request_json: bytes) -> Routed:
    """An email request, already encoded (its size is checked before it is emitted)."""
    return (_REQUEST, 0, customer_id, request_json.decode())


def encode_outcome(outcome: Mapping[str, Any]) -> Routed:
    """A journey outcome (``kind``, ``customer_id``, ...); never raises (the firewall emits
    one for a timer that failed)."""
    return (_OUTCOME, 0, outcome["customer_id"], safe_dumps(outcome))


def encode_dlq(record: Mapping[str, Any]) -> Routed:
    """A DLQ record (:func:`udfs.core.validation.dlq_record`); never raises."""
    return (_DLQ, 0, record["customer_id"], safe_dumps(record))


def decode_request(element: Routed) -> Keyed:
    return _decode(element, Kind.REQUEST)


def decode_outcome(element: Routed) -> Keyed:
    return _decode(element, Kind.OUTCOME)


def decode_dlq(element: Routed) -> Keyed:
    return _decode(element, Kind.DLQ)


def _decode(element: Routed, kind: Kind) -> Keyed:
    if element[0] != kind:
        raise ContractError(f"expected a {kind.name} element, got kind {element[0]!r}")
    value = orjson.loads(element[3])
    if not isinstance(value, dict):
        raise ContractError(f"the payload of a {kind.name} element is not a JSON object")
    return Keyed(element[2], value)


# --- ClickHouse rows ----------------------------------------------------------------------
# The encoders spell the separators (_FIELD, _ROW) as literals: they run for every row.


def encode_store_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]], source_kafka_ms: int | None
) -> str:
    """The ``(table, row)`` pairs of one event as one payload, ``source_kafka_ms`` (the
    event's Kafka record time; None for a timer) on its profile row. Raises TypeError for
    text UTF-8 cannot encode."""
    source = "" if source_kafka_ms is None else source_kafka_ms
    profiles = Table.PROFILES
    return "\n".join(
        [
            f"{table}\t{source if table == profiles else ''}\t{orjson.dumps(row).decode()}"
            for table, row in rows
        ]
    )


def encode_store_row(table: str, row: Mapping[str, Any], source_kafka_ms: int | None = None) -> str:
    """One store row line; unlike :func:`encode_store_rows`, any row may carry a source
    time (for tests and tools)."""
    source = "" if source_kafka_ms is None else source_kafka_ms
    return f"{table}\t{source}\t{orjson.dumps(row).decode()}"


def join_store_rows(lines: Iterable[str]) -> str:
    """Store row lines (or joined groups of them) as one payload."""
    return _ROW.join(lines)


def split_store_rows(rows: str) -> list[str]:
    return rows.split(_ROW)


def count_store_rows(rows: str) -> int:
    return rows.count(_ROW) + 1


def decode_store_row(line: str) -> StoreRow:
    parts = line.split(_FIELD, 2)
    if len(parts) != 3 or parts[0] not in _TABLES:
        raise ContractError(_unknown(parts))
    table, source, row_json = parts
    if not source:
        return StoreRow(table, row_json, None)
    try:
        return StoreRow(table, row_json, int(source))
    except ValueError:
        raise ContractError(_NOT_AN_INTEGER) from None


def group_store_rows(texts: Iterable[str]) -> Grouped:
    """The rows of ``texts`` (each from :func:`join_store_rows`) grouped by table, for one
    insert per table: :func:`decode_store_row` for every line, without an object per row."""
    by_table: dict[str, list[str]] = {}
    sources: list[int] = []
    bad: list[tuple[str, str]] = []
    for text in texts:
        for line in text.split(_ROW):
            parts = line.split(_FIELD, 2)
            if len(parts) == 2 and parts[0] in _TABLES:
                parts = _previous_format(parts)
            if len(parts) != 3 or parts[0] not in _TABLES:
                bad.append((line, _unknown(parts)))
                continue
            if parts[1]:
                try:
                    sources.append(int(parts[1]))
                except ValueError:
                    bad.append((line, _NOT_AN_INTEGER))
                    continue
            by_table.setdefault(parts[0], []).append(parts[2])
    return Grouped(by_table, sources, bad)


# The line format of version 0.1.0 (``table<TAB>row JSON`` with the source time as the
# profile JSON's last field), which a savepoint taken then may still hold in the writer's
# pending rows: read so that a restore across the upgrade inserts them.
_PREVIOUS_SOURCE_FIELD: Final = ',"source_kafka_ms":'


def _previous_format(parts: list[str]) -> list[str]:
    table, row_json = parts
    cut = row_json.rfind(_PREVIOUS_SOURCE_FIELD)
    if cut > 0 and row_json.endswith("}"):
        source = row_json[cut + len(_PREVIOUS_SOURCE_FIELD) : -1]
        if source.lstrip("-").isdigit():
            return [table, source, row_json[:cut] + "}"]
    return [table, "", row_json]


def _unknown(parts: list[str]) -> str:
    if len(parts) != 3:
        return "a store row line has fewer than three fields"
    return "a store row line names no known table"


def encode_store(shard: int, rows: str) -> Routed:
    """A ``Kind.STORE`` element: ``rows`` from :func:`join_store_rows`."""
    return (_STORE, shard, "", rows)


def decode_store(element: Routed) -> Store:
    if element[0] != Kind.STORE:
        raise ContractError(f"expected a STORE element, got kind {element[0]!r}")
    return Store(element[1], [decode_store_row(line) for line in split_store_rows(element[3])])
