"""``iso_ms``: the one text form of an epoch-ms instant in the job's outputs (email requests,
DLQ records)."""

from __future__ import annotations

import pytest

from udfs.core.instant import iso_ms


@pytest.mark.parametrize(
    ("epoch_ms", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_767_225_600_000, "2026-01-01T00:00:00.000Z"),
        (1_767_225_600_123, "2026-01-01T00:00:00.123Z"),
        (1_767_603_600_123, "2026-01-05T09:00:00.123Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        # four-digit years throughout, as the email_request schema's pattern requires
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    ],
)
def test_formats_epoch_ms_as_utc_iso(epoch_ms: int, iso: str) -> None:
    assert iso_ms(epoch_ms) == iso


@pytest.mark.parametrize("value", [1.5, True, "0", None])
def test_refuses_what_is_not_an_int(value: object) -> None:
    with pytest.raises(TypeError):
        iso_ms(value)  # type: ignore[arg-type]
