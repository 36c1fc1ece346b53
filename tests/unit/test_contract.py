"""What the customer function emits (udfs/core/contract.py): every kind of record survives
encode -> decode unchanged, store row lines keep their table and source Kafka time as fields
whatever the row's text holds, and the Java classes that route and drain the elements agree
with the Python constants (parsed from the Java source, so a change on one side alone fails
here)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from udfs.clickhouse.schema import TABLES
from udfs.core import batch, contract, journey
from udfs.core.contract import ContractError, Keyed, Kind, Store, StoreRow, Table
from udfs.core.validation import Invalid, dlq_record
from udfs.flink import customer_function

ROOT = Path(__file__).resolve().parents[2]
JAVA = ROOT / "java" / "io" / "inboxflow" / "flink"
SEEN_AT = 1_767_603_600_000  # 2026-01-05T09:00:00.000Z

# text UTF-8 can encode (the JVM hands Python no unpaired surrogate), with the separators of
# store rows and the characters JSON escapes drawn often
ODD = "\t\n\r\"\\'{},:\x00\u2028é€🛒"
texts = st.text(
    st.one_of(st.sampled_from(ODD), st.characters(blacklist_categories=("Cs",))), max_size=40
)
ids = texts.filter(bool)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
rows = st.dictionaries(texts, json_values, max_size=6)


# --------------------------------------------------------------------------- round trips


@given(customer_id=ids, request=st.dictionaries(texts, json_values, max_size=6))
def test_request_round_trip(customer_id, request):
    element = contract.encode_request(customer_id, orjson.dumps(request))
    assert element[:3] == (Kind.REQUEST, 0, customer_id)
    assert contract.decode_request(element) == Keyed(customer_id, request)


@given(
    customer_id=ids,
    kind=st.sampled_from(["sent", "skipped", "cancelled", "completed", "recovered"]),
    event_time=st.integers(-(2**63), 2**63 - 1),
    extra=st.dictionaries(st.sampled_from(["reason", "step", "request_id"]), json_values),
)
def test_outcome_round_trip(customer_id, kind, event_time, extra):
    outcome = {"kind": kind, "customer_id": customer_id, "event_time": event_time, **extra}
    element = contract.encode_outcome(outcome)
    assert element[:3] == (Kind.OUTCOME, 0, customer_id)
    assert contract.decode_outcome(element) == Keyed(customer_id, outcome)


@given(
    payload=texts,
    reason=st.sampled_from(["not_json", contract.PROCESSING_ERROR, contract.STORE_REJECTED]),
    path=texts,
    event_id=st.none() | ids,
    customer_id=st.none() | ids,
)
def test_dlq_round_trip(payload, reason, path, event_id, customer_id):
    record = dlq_record(
        payload, Invalid(reason, path, "a message", event_id, customer_id), SEEN_AT, 65_536
    )
    element = contract.encode_dlq(record)
    assert element[:3] == (Kind.DLQ, 0, customer_id)
    assert contract.decode_dlq(element) == Keyed(customer_id, record)


def test_dlq_record_with_text_utf8_cannot_encode_is_ascii_json_not_an_error():
    record = {"customer_id": "c\ud800", "payload": "x\udfff", "reason": "processing_error"}
    _, _, key, payload = contract.encode_dlq(record)
    assert key == "c\ud800"
    assert payload.isascii() and json.loads(payload) == record


sources = st.none() | st.integers(-(2**63), 2**63 - 1)
event_rows = st.lists(st.tuples(st.sampled_from(Table.ALL), rows), min_size=1, max_size=6)


@given(
    shard=st.integers(0, 2**31 - 1),
    events=st.lists(st.tuples(event_rows, sources), min_size=1, max_size=4),
)
def test_store_round_trip(shard, events):
    """The rows of several events, encoded per event and joined per element (as the
    customer function buffers them), come back as the same rows in the same order, each
    event's source time on its profile rows; grouped for the writer they agree."""
    element = contract.encode_store(
        shard,
        contract.join_store_rows(
            contract.encode_store_rows(event, source) for event, source in events
        ),
    )
    assert element[:3] == (Kind.STORE, shard, "")
    expected = [
        StoreRow(table, orjson.dumps(row).decode(), source if table == Table.PROFILES else None)
        for event, source in events
        for table, row in event
    ]
    assert contract.count_store_rows(element[3]) == len(expected)
    decoded = contract.decode_store(element)
    assert decoded == Store(shard, expected)
    assert [json.loads(r.row_json) for r in decoded.rows] == [
        row for event, _ in events for _, row in event
    ]
    by_table: dict[str, list[str]] = {}
    for r in expected:
        by_table.setdefault(r.table, []).append(r.row_json)
    assert contract.group_store_rows([element[3]]) == (
        by_table,
        [r.source_kafka_ms for r in expected if r.source_kafka_ms is not None],
        [],
    )


@given(table=st.sampled_from(Table.ALL), row=rows, source=sources)
def test_store_row_round_trip(table, row, source):
    line = contract.encode_store_row(table, row, source)
    assert contract.decode_store_row(line) == StoreRow(table, orjson.dumps(row).decode(), source)


def test_store_row_line_holds_the_source_as_a_field_not_in_the_row():
    line = contract.encode_store_row(Table.PROFILES, {"customer_id": "c-1", "version": 3}, 17)
    assert line == 'customer_profiles\t17\t{"customer_id":"c-1","version":3}'
    assert contract.decode_store_row(line) == StoreRow(
        "customer_profiles", '{"customer_id":"c-1","version":3}', 17
    )
    line = contract.encode_store_row(Table.REQUESTS, {"subject": "a\tb\nc"})
    assert line == 'email_requests\t\t{"subject":"a\\tb\\nc"}'
    assert contract.decode_store_row(line).source_kafka_ms is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('customer_profiles\t{"customer_id":"c-1"}', "fewer than three fields"),
        ("customer_profiles", "fewer than three fields"),
        ('nope\t\t{"customer_id":"c-1"}', "no known table"),
        ('customer_profiles\t12x\t{"customer_id":"c-1"}', "not an integer"),
    ],
)
def test_a_line_that_is_no_store_row_raises_without_quoting_it(line, message):
    with pytest.raises(ContractError, match=message) as raised:
        contract.decode_store_row(line)
    assert "c-1" not in str(raised.value)


def test_group_store_rows_for_the_writer():
    """Rows by table in the order received, the source times the rows carry (also from a
    line of the previous format, pending in a restored writer state), and each line that is
    no store row set apart."""
    first = contract.join_store_rows(
        [
            contract.encode_store_row(Table.PROFILES, {"customer_id": "a", "version": 1}, 100),
            contract.encode_store_row(Table.REQUESTS, {"request_id": "r1"}),
        ]
    )
    second = contract.join_store_rows(
        [
            contract.encode_store_row(Table.PROFILES, {"customer_id": "b", "version": 1}, -1),
            'customer_profiles\t{"customer_id":"c","source_kafka_ms":7}',
            'email_requests\t{"request_id":"r0"}',
            "cart_recoveries",
            contract.encode_store_row(Table.PROFILES, {"customer_id": "a", "version": 2}),
            contract.encode_store_row(Table.RECOVERIES, {"order_id": "o\t1"}),
        ]
    )
    assert contract.group_store_rows([first, second]) == (
        {
            "customer_profiles": [
                '{"customer_id":"a","version":1}',
                '{"customer_id":"b","version":1}',
                '{"customer_id":"c"}',
                '{"customer_id":"a","version":2}',
            ],
            "email_requests": ['{"request_id":"r1"}', '{"request_id":"r0"}'],
            "cart_recoveries": ['{"order_id":"o\\t1"}'],
        },
        [100, -1, 7],
        [("cart_recoveries", "a store row line has fewer than three fields")],
    )
    assert contract.group_store_rows([]) == ({}, [], [])


def test_decoding_an_element_of_another_kind_raises():
    element = contract.encode_outcome({"kind": "sent", "customer_id": "c-1"})
    with pytest.raises(ContractError, match="expected a REQUEST element, got kind 3"):
        contract.decode_request(element)
    with pytest.raises(ContractError, match="expected a STORE element"):
        contract.decode_store(element)


def test_elements_carry_plain_ints_for_the_jvm():
    elements = [
        contract.encode_request("c", b"{}"),
        contract.encode_outcome({"customer_id": "c"}),
        contract.encode_dlq({"customer_id": "c"}),
        contract.encode_store(1, 'email_requests\t\t{"a":1}'),
    ]
    assert [(type(e[0]), type(e[1])) for e in elements] == [(int, int)] * 4
    assert [e[0] for e in elements] == [Kind.REQUEST, Kind.OUTCOME, Kind.DLQ, Kind.STORE]


def test_store_tables_are_the_clickhouse_tables():
    assert Table.ALL == TABLES


# --------------------------------------------------------------------------- the Java side


def java(name: str) -> str:
    return (JAVA / f"{name}.java").read_text(encoding="utf-8")


def java_constant(source: str, name: str) -> str:
    """The initializer of ``static final <type> NAME = ...;`` in ``source``."""
    found = re.findall(rf"static final \w+ {name} =\s*(.+?);", source)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def java_long(expression: str) -> int:
    """A constant long expression of literals, Long.MIN_VALUE/MAX_VALUE, + - * and unary -."""
    text = expression.replace("Long.MIN_VALUE", f"({-(2**63)})")
    text = re.sub(r"(\d)L\b", r"\1", text.replace("Long.MAX_VALUE", str(2**63 - 1)))
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult)
    assert all(isinstance(n, allowed + (ast.USub,)) for n in ast.walk(tree)), expression
    value = eval(compile(tree, "<java>", "eval"))  # literals and + - * only (checked above)
    assert -(2**63) <= value < 2**63, expression
    return value


def java_string(expression: str) -> str:
    assert re.fullmatch(r'"[^"\\]*"', expression), expression
    return expression[1:-1]


def test_kinds_match_the_output_router():
    router = java("OutputRouter")
    kinds = dict(re.findall(r"public static final int (\w+) = (-?\d+);", router))
    assert {name: int(value) for name, value in kinds.items()} == {k.name: k.value for k in Kind}


def test_customer_operator_constants_match_the_python_side():
    operator = java("BatchCustomerOperator")
    assert java_long(java_constant(operator, "RESCHEDULE_CHECK")) == journey.RESCHEDULE_CHECK
    assert java_string(java_constant(operator, "CUSTOMER_STATE")) == (
        customer_function.CUSTOMER_STATE
    )
    assert int(java_constant(operator, "EVENT")) == batch.EVENT
    assert int(java_constant(operator, "TIMER")) == batch.TIMER
    # the module the operator imports, and the functions it calls there
    assert java_string(java_constant(operator, "MODULE")) == customer_function.__name__
    opened = java_string(java_constant(operator, "OPENED"))
    assert getattr(customer_function, opened) is customer_function.opened
    process = java_string(java_constant(operator, "PROCESS_BATCH"))
    assert getattr(customer_function, process) is customer_function.process_batch
    migrate = java_string(java_constant(operator, "MIGRATE_STATES"))
    assert getattr(customer_function, migrate) is customer_function.migrate_states
    # an entry is the five values udfs.core.batch reads
    append = operator[operator.index("private void append(") :]
    append = append[: append.index("entryCount++")]
    assert len(re.findall(r"entries\.\w+\(", append)) == batch.ENTRY_FIELDS


def test_the_java_element_types_match_the_flink_types():
    routed = [str(t) for t in customer_function.ROUTED.get_field_types()]
    store_row = [str(t) for t in customer_function.STORE_ROW.get_field_types()]
    for name in ("OutputRouter", "BatchCustomerOperator"):
        # every tuple type named in the class is ROUTED
        declared = re.findall(r"\bTuple(\d+)<([^<>]*)>", java(name))
        assert declared, name
        for arity, fields in declared:
            assert (int(arity), [f.strip() for f in fields.split(",")]) == (
                len(routed),
                routed,
            ), name
    # the router's STORE output: Tuple2 of ROUTED fields, typed as STORE_ROW
    (store,) = re.findall(r"\bTuple(\d+)\.of\(([^()]*)\)", java("OutputRouter"))
    picked = [int(f) for f in re.findall(r"in\.f(\d+)", store[1])]
    assert picked == [1, 3]  # shard, payload
    assert (int(store[0]), [routed[i] for i in picked]) == (len(store_row), store_row)
    # the operator's element: (kind, shard, key, payload), ROUTED's arity
    (emitted,) = re.findall(
        r"\bTuple(\d+)\.of\(kind, shard, key, payload\)", java("BatchCustomerOperator")
    )
    assert int(emitted) == len(routed)


def test_the_output_router_dlq_record_has_the_fields_of_every_dlq_record():
    source = java("OutputRouter")
    body = source[source.index("String malformed(") :]
    body = body[: body.index("\n    }\n")]
    fields = re.findall(r'\\"(\w+)\\":', body)
    record = dlq_record("", Invalid("processing_error", "$", "m"), SEEN_AT, 1)
    assert fields == list(record)
