"""The send guards (``udfs/core/guards.py``): quiet hours across DST, the frequency cap and
the dedup memory, with exact instants; then seeded property tests against brute force."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from udfs.core.guards import (
    cap_until,
    is_duplicate,
    quiet_until,
    remember_event,
    remember_send,
    zone_or_none,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KOLKATA = ZoneInfo("Asia/Kolkata")

NIGHT = (21 * 60, 8 * 60)  # 21:00-08:00, spans midnight
LUNCH = (13 * 60, 14 * 60)  # 13:00-14:00, inside one day


def ms(iso: str) -> int:
    """``"2026-03-28T22:30:00Z"`` (or with an offset) -> epoch ms."""
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(milliseconds=1)


def local_minute(t_ms: int, zone: ZoneInfo) -> int:
    local = (_EPOCH + timedelta(milliseconds=t_ms)).astimezone(zone)
    return local.hour * 60 + local.minute


# --- zone_or_none ---------------------------------------------------------------------------


def test_zone_or_none_loads_an_iana_zone() -> None:
    zone = zone_or_none("Europe/Berlin")
    assert zone is not None
    assert zone.key == "Europe/Berlin"
    assert zone_or_none("Europe/Berlin") is zone  # cached


@pytest.mark.parametrize(
    "name",
    [
        "",
        None,
        42,
        b"UTC",
        "Not/AZone",
        "../../etc/passwd",
        "../etc/passwd",
        "/etc/passwd",
        "Europe",  # a directory
        "Europe/",
        "zone1970.tab",  # a file in the zone directory that is not TZif
        "a\x00b",
        "\udcff",
        "x" * 100,
    ],
)
def test_zone_or_none_refuses_what_is_not_a_zone_without_raising(name: object) -> None:
    assert zone_or_none(name) is None


# --- quiet_until: exact instants ------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "until"),
    [
        # winter, CET (UTC+1)
        ("2026-01-15T23:10:00+01:00", "2026-01-16T07:00:00Z"),  # 23:10 -> 08:00 next day
        ("2026-01-16T07:59:00+01:00", "2026-01-16T07:00:00Z"),  # 07:59 -> 08:00 same day
        ("2026-01-16T07:59:59.999+01:00", "2026-01-16T07:00:00Z"),
        ("2026-01-15T21:00:00+01:00", "2026-01-16T07:00:00Z"),  # the window's first minute
        ("2026-01-16T00:30:00+01:00", "2026-01-16T07:00:00Z"),  # after midnight: same date
        ("2026-01-16T00:00:00+01:00", "2026-01-16T07:00:00Z"),
        # summer, CEST (UTC+2)
        ("2026-07-01T23:10:00+02:00", "2026-07-02T06:00:00Z"),
    ],
)
def test_quiet_night_in_berlin_lasts_until_local_8(at: str, until: str) -> None:
    assert quiet_until(ms(at), BERLIN, *NIGHT) == ms(until)


@pytest.mark.parametrize(
    "at",
    [
        "2026-01-16T08:00:00+01:00",  # the end is not quiet
        "2026-01-15T20:59:00+01:00",
        "2026-01-15T20:59:59.999+01:00",
        "2026-01-15T12:00:00+01:00",
    ],
)
def test_outside_the_night_in_berlin_is_not_quiet(at: str) -> None:
    assert quiet_until(ms(at), BERLIN, *NIGHT) is None


def test_spring_forward_night_ends_at_8_cest() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: 08:00 local is 06:00 UTC, not 07:00
    assert quiet_until(ms("2026-03-28T23:00:00+01:00"), BERLIN, *NIGHT) == ms(
        "2026-03-29T06:00:00Z"
    )


def test_autumn_back_night_ends_at_8_cet() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 08:00 local is 07:00 UTC
    assert quiet_until(ms("2026-10-24T23:00:00+02:00"), BERLIN, *NIGHT) == ms(
        "2026-10-25T07:00:00Z"
    )


def test_an_end_in_the_spring_gap_is_the_end_of_the_gap() -> None:
    # window 01:00-02:30 local; 02:30 does not exist on 2026-03-29 in Berlin: the gap ends
    # at 03:00 CEST = 01:00 UTC
    t = ms("2026-03-29T00:00:00Z")  # 01:00 CET
    assert quiet_until(t, BERLIN, 60, 150) == ms("2026-03-29T01:00:00Z")
    assert quiet_until(ms("2026-03-29T00:59:59.999Z"), BERLIN, 60, 150) == ms(
        "2026-03-29T01:00:00Z"
    )


def test_an_ambiguous_end_is_its_first_occurrence_after_the_step() -> None:
    # window 01:00-02:30 local; 02:30 happens twice on 2026-10-25 in Berlin
    first_0230 = ms("2026-10-25T02:30:00+02:00")
    assert first_0230 == ms("2026-10-25T00:30:00Z")
    assert quiet_until(ms("2026-10-24T23:30:00Z"), BERLIN, 60, 150) == first_0230  # 01:30 CEST
    # after the fold, 02:10 CET is in the window again: the second 02:30 ends it
    assert quiet_until(ms("2026-10-25T01:10:00Z"), BERLIN, 60, 150) == ms(
        "2026-10-25T02:30:00+01:00"
    )


def test_a_fold_back_out_of_the_window_ends_it() -> None:
    # window 02:30-03:30; at 02:45 CEST the clock goes back from 03:00 CEST to 02:00 CET,
    # before the window's start: quiet hours end then, not at 03:30 CET
    assert quiet_until(ms("2026-10-25T02:45:00+02:00"), BERLIN, 150, 210) == ms(
        "2026-10-25T01:00:00Z"
    )


@pytest.mark.parametrize(
    ("at", "until"),
    [
        # DST starts 2026-03-08 02:00 EST -> 03:00 EDT
        ("2026-03-07T23:00:00-05:00", "2026-03-08T12:00:00Z"),  # 08:00 EDT
        ("2026-03-08T01:59:00-05:00", "2026-03-08T12:00:00Z"),
        ("2026-03-08T03:00:00-04:00", "2026-03-08T12:00:00Z"),
        # DST ends 2026-11-01 02:00 EDT -> 01:00 EST
        ("2026-10-31T23:00:00-04:00", "2026-11-01T13:00:00Z"),  # 08:00 EST
        ("2026-11-01T01:30:00-04:00", "2026-11-01T13:00:00Z"),
        ("2026-11-01T01:30:00-05:00", "2026-11-01T13:00:00Z"),
    ],
)
def test_quiet_night_in_new_york_across_dst(at: str, until: str) -> None:
    assert quiet_until(ms(at), NEW_YORK, *NIGHT) == ms(until)


@pytest.mark.parametrize(
    ("at", "until"),
    [
        ("2026-01-15T13:00:00+01:00", "2026-01-15T13:00:00Z"),
        ("2026-01-15T13:20:00+01:00", "2026-01-15T13:00:00Z"),
        ("2026-01-15T13:59:59.999+01:00", "2026-01-15T13:00:00Z"),
        ("2026-01-15T12:59:00+01:00", None),
        ("2026-01-15T14:00:00+01:00", None),
        ("2026-01-15T01:00:00+01:00", None),
        ("2026-01-15T23:00:00+01:00", None),
    ],
)
def test_a_window_inside_one_day(at: str, until: str | None) -> None:
    assert quiet_until(ms(at), BERLIN, *LUNCH) == (None if until is None else ms(until))


def test_quiet_hours_in_utc_and_a_half_hour_zone() -> None:
    utc = ZoneInfo("UTC")
    assert quiet_until(ms("2026-01-15T23:00:00Z"), utc, 22 * 60, 6 * 60) == ms(
        "2026-01-16T06:00:00Z"
    )
    assert quiet_until(ms("2026-01-16T05:59:59.999Z"), utc, 22 * 60, 6 * 60) == ms(
        "2026-01-16T06:00:00Z"
    )
    assert quiet_until(ms("2026-01-16T06:00:00Z"), utc, 22 * 60, 6 * 60) is None
    # Asia/Kolkata is UTC+05:30: 01:30 IST -> 08:00 IST = 02:30 UTC
    assert quiet_until(ms("2026-01-15T20:00:00Z"), KOLKATA, *NIGHT) == ms("2026-01-16T02:30:00Z")


def test_an_empty_window_is_never_quiet_and_bad_minutes_are_refused() -> None:
    assert quiet_until(ms("2026-01-15T23:00:00Z"), BERLIN, 600, 600) is None
    with pytest.raises(ValueError):
        quiet_until(0, BERLIN, 1440, 480)
    with pytest.raises(ValueError):
        quiet_until(0, BERLIN, 1260, -1)


# --- quiet_until: property ------------------------------------------------------------------


def _offset(t_ms: int, zone: ZoneInfo) -> int:
    off = (_EPOCH + timedelta(milliseconds=t_ms)).astimezone(zone).utcoffset()
    assert off is not None
    return off // timedelta(milliseconds=1)


def _inside(t_ms: int, zone: ZoneInfo, start: int, end: int) -> bool:
    m = local_minute(t_ms, zone)
    return start <= m < end if start < end else (m >= start or m < end)


def _skips_end(x: int, zone: ZoneInfo, end: int) -> bool:
    """Whether the clock jumps forward at ``x`` (on the minute grid) over local ``end``."""
    before, after = _offset(x - 1, zone), _offset(x, zone)
    if after <= before:
        return False
    first = (x + before) // MINUTE
    skipped = {(first + k) % 1440 for k in range((after - before) // MINUTE)}
    return end in skipped


def _transitions_2026(zone: ZoneInfo) -> list[int]:
    """The instants (whole minutes) at which ``zone`` changes offset in 2026."""
    out, t, off = [], ms("2026-01-01T00:00:00Z"), None
    while t < ms("2027-01-01T00:00:00Z"):
        o = _offset(t, zone)
        if off is not None and o != off:
            x = t - 30 * MINUTE  # the change is somewhere in the last 30 minutes
            while _offset(x, zone) == off:
                x += MINUTE
            out.append(x)
        off, t = o, t + 30 * MINUTE
    return out


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, LORD_HOWE, KOLKATA], ids=str)
def test_quiet_until_is_the_first_allowed_minute(zone: ZoneInfo) -> None:
    rng = random.Random(7)
    transitions = _transitions_2026(zone)
    assert len(transitions) == (0 if zone is KOLKATA else 2)
    windows = [NIGHT, LUNCH, (60, 150), (150, 210), (120, 150), (90, 180), (1380, 0), (165, 150)]
    windows += [(s, e) for s, e in ((rng.randrange(1440), rng.randrange(1440)) for _ in range(8))]
    windows = [(s, e) for s, e in windows if s != e]
    year = ms("2026-01-01T00:00:00Z")
    quiet = {"spans midnight": 0, "one day": 0}
    for start, end in windows:
        instants = [year + rng.randrange(365 * DAY) for _ in range(8)]
        for _ in range(6):  # near the window's start on a random day: mostly inside
            day = year + rng.randrange(365) * DAY
            length = (end - start) % 1440
            local = start * MINUTE + rng.randrange(length * MINUTE)
            instants.append(day + local - _offset(day, zone))
        for change in transitions:
            instants += [change + rng.randrange(-26 * HOUR, 2 * HOUR) for _ in range(10)]
            instants += [change - rng.randrange(0, 26 * 60) * MINUTE for _ in range(5)]
            instants += [change - 1, change]
        for t in instants:
            result = quiet_until(t, zone, start, end)
            if not _inside(t, zone, start, end):
                assert result is None, (t, start, end)
                continue
            assert result is not None, (t, start, end)
            assert result >= t
            assert result % MINUTE == 0
            assert result - t <= 25 * HOUR
            gap_rule = _skips_end(result, zone, end)
            assert not _inside(result, zone, start, end) or gap_rule, (t, start, end)
            # every minute strictly between t and the result is quiet, and no gap there
            # skips the end
            x = -(-t // MINUTE) * MINUTE
            if x == t:
                x += MINUTE
            while x < result:
                assert _inside(x, zone, start, end), (t, start, end, x)
                assert not _skips_end(x, zone, end), (t, start, end, x)
                x += MINUTE
            quiet["spans midnight" if start > end else "one day"] += 1
    assert min(quiet.values()) >= 50, quiet  # both window kinds were exercised


# --- frequency cap --------------------------------------------------------------------------


TWO_A_DAY = (2, DAY)


def test_cap_reached_waits_for_the_oldest_counted_send_to_leave_the_window() -> None:
    sends = [ms("2026-01-15T10:00:00Z"), ms("2026-01-15T15:00:00Z")]
    assert cap_until(sends, ms("2026-01-15T16:00:00Z"), *TWO_A_DAY) == ms("2026-01-16T10:00:00Z")
    assert cap_until(sends, ms("2026-01-16T09:59:59.999Z"), *TWO_A_DAY) == ms(
        "2026-01-16T10:00:00Z"
    )
    # exactly 24 h after the 10:00 send, it no longer counts
    assert cap_until(sends, ms("2026-01-16T10:00:00Z"), *TWO_A_DAY) is None


def test_cap_below_the_limit_or_off() -> None:
    sends = [ms("2026-01-15T10:00:00Z"), ms("2026-01-15T15:00:00Z")]
    t = ms("2026-01-15T16:00:00Z")
    assert cap_until(sends, t, 3, DAY) is None
    assert cap_until(sends, t, 0, DAY) is None
    assert cap_until(sends, t, -1, DAY) is None
    assert cap_until([], t, 2, DAY) is None
    # limit 1: the most recent send decides
    assert cap_until(sends, t, 1, DAY) == ms("2026-01-16T15:00:00Z")


def test_cap_counts_sends_later_than_the_step() -> None:
    t = ms("2026-01-15T16:00:00Z")
    later = ms("2026-01-15T18:00:00Z")  # an out-of-order event already sent
    assert cap_until([later], t, 1, DAY) == later + DAY


def test_remember_send_keeps_order_and_drops_what_left_the_window() -> None:
    sends = [ms("2026-01-15T10:00:00Z"), ms("2026-01-15T15:00:00Z")]
    remember_send(sends, ms("2026-01-15T12:00:00Z"), 3, DAY)  # out of order
    assert sends == [
        ms("2026-01-15T10:00:00Z"),
        ms("2026-01-15T12:00:00Z"),
        ms("2026-01-15T15:00:00Z"),
    ]
    # the 10:00 send is exactly a window older than the new one: dropped
    remember_send(sends, ms("2026-01-16T10:00:00Z"), 3, DAY)
    assert sends == [
        ms("2026-01-15T12:00:00Z"),
        ms("2026-01-15T15:00:00Z"),
        ms("2026-01-16T10:00:00Z"),
    ]


def test_remember_send_keeps_at_most_limit_sends() -> None:
    base = ms("2026-01-15T00:00:00Z")
    sends: list[int] = []
    for i in range(100):
        remember_send(sends, base + i * MINUTE, 2, DAY)
        assert len(sends) <= 2
    assert sends == [base + 98 * MINUTE, base + 99 * MINUTE]
    # out of order: an older send than both is inserted, then the limit drops it
    remember_send(sends, base, 2, DAY)
    assert sends == [base + 98 * MINUTE, base + 99 * MINUTE]
    # no cap still keeps one
    remember_send(sends, base + 100 * MINUTE, 0, DAY)
    assert sends == [base + 100 * MINUTE]


# --- dedup ----------------------------------------------------------------------------------


def test_a_redelivered_event_is_a_duplicate() -> None:
    ids: list[str] = []
    times: list[int] = []
    t = ms("2026-01-15T10:00:00Z")
    assert not is_duplicate(ids, "e1")
    remember_event(ids, times, "e1", t, DAY, 500)
    assert is_duplicate(ids, "e1")
    assert not is_duplicate(ids, "e2")
    assert (ids, times) == (["e1"], [t])


def test_dedup_forgets_ids_older_than_the_ttl_before_the_newest_event() -> None:
    ids: list[str] = []
    times: list[int] = []
    t0 = ms("2026-01-15T10:00:00Z")
    remember_event(ids, times, "a", t0, DAY, 500)
    remember_event(ids, times, "b", t0 + HOUR, DAY, 500)
    remember_event(ids, times, "c", t0 + 25 * HOUR, DAY, 500)
    # cutoff t0 + 1 h: "a" is older, "b" is exactly at it and stays
    assert (ids, times) == (["b", "c"], [t0 + HOUR, t0 + 25 * HOUR])
    assert not is_duplicate(ids, "a")  # a redelivery after expiry is not recognised
    # an event already older than the TTL is forgotten at once
    remember_event(ids, times, "old", t0, DAY, 500)
    assert (ids, times) == (["b", "c"], [t0 + HOUR, t0 + 25 * HOUR])


def test_dedup_evicts_the_oldest_by_time_even_when_inserted_out_of_order() -> None:
    ids: list[str] = []
    times: list[int] = []
    t0 = ms("2026-01-15T10:00:00Z")
    for event_id, minute in [("a", 5), ("b", 1), ("c", 3)]:
        remember_event(ids, times, event_id, t0 + minute * MINUTE, DAY, 3)
    remember_event(ids, times, "d", t0 + 4 * MINUTE, DAY, 3)
    assert ids == ["a", "c", "d"]  # "b" has the oldest time though inserted second
    assert times == [t0 + 5 * MINUTE, t0 + 3 * MINUTE, t0 + 4 * MINUTE]
    remember_event(ids, times, "e", t0, DAY, 3)  # older than everything: evicted itself
    assert ids == ["a", "c", "d"]


def test_dedup_eviction_ties_go_to_the_earliest_inserted() -> None:
    ids: list[str] = []
    times: list[int] = []
    t0 = ms("2026-01-15T10:00:00Z")
    for event_id in ["a", "b", "c"]:
        remember_event(ids, times, event_id, t0, DAY, 2)
    assert (ids, times) == (["b", "c"], [t0, t0])


def test_dedup_refuses_lists_that_are_not_parallel() -> None:
    ids, times = ["a"], [1, 2]
    with pytest.raises(ValueError):
        remember_event(ids, times, "b", 3, DAY, 500)
    assert (ids, times) == (["a"], [1, 2])


def test_remember_event_matches_a_sorting_model() -> None:
    rng = random.Random(7)
    for run in range(40):
        ttl = rng.choice([0, MINUTE, HOUR, DAY, rng.randrange(1, 2 * DAY)])
        max_ids = rng.randrange(1, 12)
        ids: list[str] = []
        times: list[int] = []
        model: list[tuple[int, int, str]] = []  # (time, insertion number, id)
        base, newest = ms("2026-01-15T00:00:00Z"), None
        for n in range(rng.randrange(1, 80)):
            base += rng.randrange(0, 2 * HOUR)
            ts = base - rng.randrange(0, 3 * ttl + 1)  # some late, some too late
            event_id = f"r{run}e{n}"
            remember_event(ids, times, event_id, ts, ttl, max_ids)
            newest = ts if newest is None else max(newest, ts)
            model.append((ts, n, event_id))
            model = [m for m in model if m[0] >= newest - ttl]
            model = sorted(sorted(model)[-max_ids:], key=lambda m: m[1])
            assert len(ids) == len(times) <= max_ids
            assert all(t >= max(times) - ttl for t in times)
            assert max(times) == newest  # the newest is always kept
            assert list(zip(ids, times, strict=True)) == [(i, t) for t, _, i in model]
