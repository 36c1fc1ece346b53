"""io.inboxflow.flink.OutputRouter's DLQ record for an element it cannot route, through
PyFlink's gateway: field for field the record :func:`udfs.core.validation.dlq_record` builds
for the same content, so every DLQ record has one shape."""

from __future__ import annotations

import json

import pytest

from job.main import create_env, flink_settings
from udfs.core.contract import PROCESSING_ERROR
from udfs.core.validation import Invalid, dlq_record

SEEN_AT = 1_767_603_600_123  # 2026-01-05T09:00:00.123Z


@pytest.fixture(scope="module")
def jvm():
    from pyflink.java_gateway import get_gateway

    create_env(flink_settings())  # the gateway with the project's jars
    return get_gateway().jvm


@pytest.mark.parametrize(
    ("kind", "key", "payload"),
    [
        (9, "c-1", 'tab\t quote" backslash\\ newline\n é € 🛒 \x00'),
        (-1, None, ""),
        (None, "ü", '{"customer_id":"ü"}'),
    ],
)
def test_an_element_of_unknown_kind_becomes_the_common_dlq_record(jvm, kind, key, payload):
    element = jvm.org.apache.flink.api.java.tuple.Tuple4.of(kind, 0, key, payload)
    text = jvm.io.inboxflow.flink.OutputRouter.malformed(element, SEEN_AT)
    java_kind = "null" if kind is None else kind
    expected = dlq_record(
        payload,
        Invalid(
            PROCESSING_ERROR,
            "$",
            f"output element of unknown kind {java_kind} (OutputRouter)",
            None,
            key,
        ),
        SEEN_AT,
        len(payload.encode()),
    )
    assert text.isascii()
    record = json.loads(text)
    assert list(record) == list(expected)
    assert record == expected
