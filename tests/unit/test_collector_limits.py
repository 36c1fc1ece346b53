"""The collector's token buckets (pure: the clock is passed in)."""

from __future__ import annotations

import pytest

from job.collector.limits import RateLimiter, retry_after


def test_a_bucket_lets_a_burst_through_then_one_request_per_token() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.take("web", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("web", 100.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.take("web", 100.25) == pytest.approx(0.25)
    assert limiter.take("web", 100.5) == 0.0
    assert limiter.take("web", 100.5) == pytest.approx(0.5)


def test_refill_stops_at_the_burst_and_keys_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("b", 0.0) == 0.0
    # an hour later "a" holds 2 tokens, not 3,600
    assert [limiter.take("a", 3600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_a_nothing_rate_is_off_and_a_burst_below_the_rate_is_raised_to_it() -> None:
    off = RateLimiter(rate=0, burst=0)
    assert not off.enabled and all(off.take("x", 0.0) == 0.0 for _ in range(10_000))
    limiter = RateLimiter(rate=5, burst=1)
    assert [limiter.take("x", 0.0) for _ in range(6)][-2:] == [0.0, pytest.approx(0.2)]


def test_the_least_recently_used_key_is_forgotten_beyond_max_keys() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=2)
    for key in ("a", "b"):
        assert limiter.take(key, 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0  # "a" is now the most recently used
    assert limiter.take("c", 0.0) == 0.0  # evicts "b"
    assert limiter.take("b", 0.0) == 0.0  # "b" starts over with a full bucket, evicting "a"
    assert limiter.take("c", 0.0) > 0  # "c" was kept: its bucket is still empty
    assert limiter.take("a", 0.0) == 0.0


def test_negative_settings_are_refused_and_retry_after_rounds_up() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=-1, burst=1)
    assert [retry_after(x) for x in (0.01, 0.5, 1.0, 1.01, 29.2)] == ["1", "1", "1", "2", "30"]
