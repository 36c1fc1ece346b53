"""Epoch-millisecond instants as text, for every output that shows one (email requests,
DLQ records, log descriptions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds (UTC) as ISO 8601 with milliseconds and a four-digit year, the
    ``iso_ms`` format of ``conf/schemas/email_request.json``: ``2026-01-01T00:00:00.000Z``."""
    if isinstance(epoch_ms, bool) or not isinstance(epoch_ms, int):
        raise TypeError(f"epoch ms must be an int, got {type(epoch_ms).__name__}")
    # Integer arithmetic via timedelta: float seconds would round some milliseconds. The
    # fields are formatted by hand: strftime("%Y") does not pad years before 1000.
    t = _EPOCH + timedelta(milliseconds=epoch_ms)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )
