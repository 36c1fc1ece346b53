"""The wall clock, read only here and by the callers of :func:`wall_ms`: the Flink wrappers,
the job and the development tools. The pure rules in ``udfs/core`` are given the time as an
argument, so they stay deterministic under test."""

from __future__ import annotations

import time

# Flink's watermark at the end of a bounded input (Long.MAX_VALUE): an event-time timer at
# this instant fires only then.
MAX_WATERMARK = 2**63 - 1


def wall_ms() -> int:
    """Epoch milliseconds now (integer arithmetic: no float rounding)."""
    return time.time_ns() // 1_000_000
