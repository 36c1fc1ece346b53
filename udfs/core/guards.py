"""The send guards as pure functions: quiet hours, the frequency cap and event dedup.

Every function here is deterministic: time comes in as epoch milliseconds (event time),
never from a clock, so a replay of the same events decides the same way.

* :func:`zone_or_none` turns a customer's time zone name (untrusted input) into a
  :class:`~zoneinfo.ZoneInfo`, or None for anything that is not a valid IANA key. It never
  raises: a name such as ``../../etc/passwd`` gives None.
* :func:`quiet_until` is the quiet-hours guard: a window of local wall-clock minutes
  ``[start, end)`` (spanning midnight when start > end). Inside it, the answer is the
  first instant the window is over: local ``end`` on the right date. DST is handled on the
  UTC timeline: an ``end`` that a spring-forward skips gives the instant the gap ends; an
  ``end`` that an autumn fold repeats gives its first occurrence at or after the step.
* :func:`cap_until` / :func:`remember_send` are the frequency cap: at most ``limit``
  marketing emails in any rolling ``window_ms``. The memory holds send times, ascending,
  bounded by the window and by ``limit``.
* :func:`is_duplicate` / :func:`remember_event` are dedup of redelivered events: a
  customer's recently seen event ids, bounded by a TTL (in event time, relative to the
  customer's newest event) and by a maximum count.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_ZONE_NAME: Final = 64  # longer names are refused before any file system lookup
MINUTES_PER_DAY: Final = 1440

_MINUTE_MS: Final = 60_000
_DAY_MS: Final = 86_400_000
_ONE_MS: Final = timedelta(milliseconds=1)
# Offset changes a quiet_until call may step through before it settles for the plain
# answer; a real zone has at most one or two within the day a quiet window can last.
_MAX_TRANSITIONS: Final = 8


# --- time zones -----------------------------------------------------------------------------


def zone_or_none(name: object) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when it is not a usable key: not a str, empty,
    longer than :data:`MAX_ZONE_NAME`, or refused by :mod:`zoneinfo` (unknown key, a
    path outside the zone directories, a directory, a file that is not TZif, bad text).
    Never raises: the name comes from customer data. Lookups are cached per name."""
    if not isinstance(name, str) or not name or len(name) > MAX_ZONE_NAME:
        return None
    return _load_zone(name)


@lru_cache(maxsize=1024)
def _load_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    # ZoneInfoNotFoundError: unknown key; ValueError (UnicodeError among them): absolute,
    # non-normalised or escaping path, NUL byte, not a TZif file; OSError: a directory
    # (IsADirectoryError) or an unreadable file.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


# --- quiet hours ----------------------------------------------------------------------------


def _offset_ms(t_ms: int, zone: ZoneInfo) -> int:
    """The zone's UTC offset at the instant ``t_ms``. Offsets change on whole seconds, so
    the second of ``t_ms`` (floored, also before 1970) decides; no float is involved."""
    offset = datetime.fromtimestamp(t_ms // 1000, tz=zone).utcoffset()
    return 0 if offset is None else offset // _ONE_MS


def _in_window(minute: int, start: int, end: int) -> bool:
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def _next_change(lo_ms: int, hi_ms: int, offset: int, zone: ZoneInfo) -> int:
    """The first instant in (lo_ms, hi_ms] whose offset is not ``offset``, given that
    lo_ms has it and hi_ms has not: a binary search over whole seconds."""
    lo, hi = lo_ms // 1000, hi_ms // 1000
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_ms(mid * 1000, zone) == offset:
            lo = mid
        else:
            hi = mid
    return hi * 1000


def quiet_until(t_ms: int, zone: ZoneInfo, start_minute: int, end_minute: int) -> int | None:
    """Quiet hours ``[start_minute, end_minute)``, local wall-clock minutes after midnight
    in ``zone`` (start > end: the window spans midnight, e.g. 21:00-08:00 is 1260, 480).

    None when the local time of the instant ``t_ms`` is outside the window (start == end:
    an empty window, never quiet). Otherwise the UTC epoch ms of the first instant at or
    after ``t_ms`` at which the local clock reads ``end`` (HH:MM:00.000) on the right date:
    the same local date, or the next one when the window spans midnight and ``t_ms`` is
    before it. DST: when the clock skips ``end`` (spring forward), the instant the gap ends
    (first existing local time after it); when ``end`` happens twice (autumn fold), its
    first occurrence at or after ``t_ms``. Should an offset change move the clock out of
    the window before ``end`` (a fold back to a time before ``start``), that instant.

    Raises ValueError for a minute outside 0..1439 or an instant outside datetime's years
    1..9999."""
    for minute in (start_minute, end_minute):
        if not 0 <= minute < MINUTES_PER_DAY:
            raise ValueError(f"quiet hours: minute of day out of range 0..1439: {minute}")
    if start_minute == end_minute:
        return None
    # Local wall time as "local epoch ms" (the instant plus the offset): integer
    # arithmetic, so no millisecond is lost and days are exact multiples of _DAY_MS.
    at, offset = t_ms, _offset_ms(t_ms, zone)
    wall = at + offset
    if not _in_window(wall // _MINUTE_MS % MINUTES_PER_DAY, start_minute, end_minute):
        return None
    candidate = at
    for _ in range(_MAX_TRANSITIONS):
        # the next local `end` at or after the wall time (inside the window, so after it)
        end_wall = wall - wall % _DAY_MS + end_minute * _MINUTE_MS
        if end_wall < wall:
            end_wall += _DAY_MS
        candidate = end_wall - offset
        if _offset_ms(candidate, zone) == offset:
            return candidate  # no offset change on the way: the clock reads `end` then
        change = _next_change(at, candidate, offset, zone)
        new_offset = _offset_ms(change, zone)
        new_wall = change + new_offset
        if new_offset > offset and end_wall < new_wall:
            return change  # the clock jumps over `end`: the gap's end is the answer
        if not _in_window(new_wall // _MINUTE_MS % MINUTES_PER_DAY, start_minute, end_minute):
            return change  # the change moved the clock out of the window
        at, offset, wall = change, new_offset, new_wall
    return candidate


# --- frequency cap --------------------------------------------------------------------------


def cap_until(sends: Sequence[int], t_ms: int, limit: int, window_ms: int) -> int | None:
    """Frequency cap: at most ``limit`` marketing emails in the rolling window
    ``(t_ms - window_ms, t_ms]`` (a send at exactly ``t_ms - window_ms`` no longer counts).

    ``sends``: the event times (ms) of the marketing emails already sent, ascending. Sends
    later than ``t_ms`` (events out of order) count as inside the window: they happened.
    None when fewer than ``limit`` sends are in the window, or when there is no cap
    (``limit <= 0`` or ``window_ms <= 0``); otherwise the first instant the cap allows the
    next email: the ``limit``-th most recent send in the window plus ``window_ms``."""
    if limit <= 0 or window_ms <= 0:
        return None
    first_in = bisect_right(sends, t_ms - window_ms)
    if len(sends) - first_in < limit:
        return None
    return sends[-limit] + window_ms


def remember_send(sends: list[int], t_ms: int, limit: int, window_ms: int) -> None:
    """Record a marketing send at ``t_ms`` in ``sends`` (ascending), in place. Then drop
    the sends at or before ``max(sends) - window_ms`` (out of any later window) and keep at
    most ``max(limit, 1)`` most recent ones: only the last ``limit`` can decide the cap, so
    the list stays bounded. (``window_ms <= 0``, no cap: nothing is kept.) Dropping by
    the newest send rather than ``t_ms`` keeps the list right for a later step; a step
    older than the newest send may no longer see a send the window has just left."""
    insort(sends, t_ms)
    expired = bisect_right(sends, sends[-1] - window_ms)
    drop = max(expired, len(sends) - max(limit, 1))
    if drop > 0:
        del sends[:drop]


# --- dedup ----------------------------------------------------------------------------------


def is_duplicate(ids: Sequence[str], event_id: str) -> bool:
    """Whether ``event_id`` is in the dedup memory (a redelivered event)."""
    return event_id in ids


def remember_event(
    ids: list[str], times: list[int], event_id: str, ts: int, ttl_ms: int, max_ids: int
) -> None:
    """Add ``event_id`` seen with event time ``ts`` to the dedup memory, in place: two
    parallel lists, ``ids[i]`` seen at ``times[i]``, in insertion order.

    Then drop every entry older than ``newest - ttl_ms``, ``newest`` being the latest
    event time held (event time, not a clock, so the result is deterministic). Trade-off:
    an event redelivered after the customer's events moved on by more than the TTL is no
    longer recognised (a new event older than that is forgotten at once). Then, while more
    than ``max_ids`` remain, drop the oldest by time (ties: the earliest inserted).
    O(n) per call: a memory kept by this function is over ``max_ids`` by at most one, so
    one eviction (k evictions cost O(n log k)). Negative ``ttl_ms`` and ``max_ids`` count
    as 0. Raises ValueError when the lists are not the same length."""
    if len(ids) != len(times):
        raise ValueError(f"dedup memory: {len(ids)} ids but {len(times)} times")
    ids.append(event_id)
    times.append(ts)
    cutoff = max(times) - max(ttl_ms, 0)
    if len(times) <= max(max_ids, 0) and min(times) >= cutoff:
        return  # the common case: nothing expired, nothing over the bound (C-speed checks)
    keep = [i for i, t in enumerate(times) if t >= cutoff]
    excess = len(keep) - max(max_ids, 0)
    if excess > 0:
        evicted = set(heapq.nsmallest(excess, keep, key=lambda i: (times[i], i)))
        keep = [i for i in keep if i not in evicted]
    if len(keep) < len(times):
        ids[:] = [ids[i] for i in keep]
        times[:] = [times[i] for i in keep]
