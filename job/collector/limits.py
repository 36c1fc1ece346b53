"""Token-bucket rate limits of the collector, per write key and per source address.

A bucket holds up to ``burst`` tokens and gains ``rate`` per second; a request takes one.
An empty bucket answers how long until the next token, which becomes ``Retry-After``. The
buckets live in the collector process: with several collector processes behind a load
balancer, each enforces its own share (README "Collector").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Buckets by key (a write key's source name, a client address), at most ``max_keys``
    of them (the least recently used is forgotten: a forgotten key starts with a full
    bucket again, which only ever lets more through). ``rate`` 0 turns the limit off."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate < 0 or burst < 0:
            raise ValueError("rate and burst must not be negative")
        self.rate = float(rate)
        self.burst = float(max(burst, rate, 1.0)) if rate else 0.0
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float) -> float:
        """Takes a token for ``key`` at ``now`` (monotonic seconds): 0.0 when allowed,
        else the seconds until a token is available (nothing is taken then)."""
        if not self.rate:
            return 0.0
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets[key] = b
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
