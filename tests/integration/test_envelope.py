"""The JVM envelope (io.inboxflow.flink.EnvelopeDeserializer / EnvelopeExtractor) on hostile
Kafka values, through PyFlink's gateway: it never fails, reads only top-level fields, and
never hands Python a string the embedded interpreter cannot take."""

from __future__ import annotations

import pytest

from job.main import create_env, flink_settings
from tests.factories import T0
from tests.integration.envelope import JvmEnvelope

NO_TIME = -(2**63)  # Long.MIN_VALUE: the envelope found no event time


@pytest.fixture(scope="module")
def jvm() -> JvmEnvelope:
    create_env(flink_settings())  # the gateway with the project's jars
    return JvmEnvelope(86_400_000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"customer_id": " c-1 ", "timestamp": %d}' % T0, ("c-1", T0)),
        (b'{"timestamp": "2026-01-05T09:00:00+01:00", "customer_id": "c-1"}', ("c-1", T0)),
        (b'{"timestamp": "2026-01-05t08:00:00.000z", "customer_id": "c-1"}', ("c-1", T0)),
        # members of an object value are not top-level fields
        (b'{"customer_id": {"customer_id": "inner", "timestamp": %d}}' % T0, ("", NO_TIME)),
        (
            b'{"timestamp": [%d], "meta": {"customer_id": "x"}, "customer_id": "c-2"}' % T0,
            ("c-2", NO_TIME),
        ),
        # an unpaired surrogate escape cannot become a key (the interpreter refuses it)
        (b'{"customer_id": "c-\\ud800"}', ("", NO_TIME)),
        (b'{"customer_id": "c-\\ud83d\\ude00"}', ("c-\U0001f600", NO_TIME)),
        # truncated, not JSON, nested beyond Jackson's limit, a tombstone: no key, no time
        (b'{"customer_id": "c-3", "timestamp": %d, "x": [' % T0, ("c-3", T0)),
        (b"\xff\xfe", ("", NO_TIME)),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, ("", NO_TIME)),
        (None, ("", NO_TIME)),
        # far in the future: no event time, so it cannot move the watermark
        (b'{"customer_id": "c-4", "timestamp": 253402300799999}', ("c-4", NO_TIME)),
    ],
)
def test_envelope_key_and_event_time(
    jvm: JvmEnvelope, value: bytes | None, expected: tuple[str, int]
) -> None:
    key, event_time, _ = jvm.envelope(value)
    assert (key, event_time) == expected


def test_a_leading_byte_order_mark_is_dropped(jvm: JvmEnvelope) -> None:
    key, event_time, text = jvm.envelope(
        b'\xef\xbb\xbf{"customer_id": "c-1", "timestamp": %d}' % T0
    )
    assert (key, event_time, text) == ("c-1", T0, f'{{"customer_id": "c-1", "timestamp": {T0}}}')


def test_bytes_that_are_not_utf8_become_replacement_characters(jvm: JvmEnvelope) -> None:
    _, _, text = jvm.envelope(b'{"name": "a\xed\xa0\x80b\xffc"}')
    assert text == '{"name": "a\ufffdb\ufffdc"}'
    text.encode("utf-8")  # never a lone surrogate
