"""One customer event or timer, end to end, as pure Python (no pyflink import): validate,
load state, journey logic, render, dump state, build the ClickHouse rows, and the firewall
around all of it.

A batch (:mod:`udfs.core.batch`) holds each customer's encoded state in a :class:`Slot`
and calls :meth:`CustomerCore.on_event` / :meth:`CustomerCore.on_timer` per event or timer;
each returns a :class:`Step` (outputs, store rows) and leaves the new state and timer in the
slot only once everything succeeded, so a failure leaves the customer's state and timer
exactly as they were.

Firewall (the content of one record can never stop the job):

* **Event**: whatever raises while one event is applied, the event goes to the DLQ with
  reason ``processing_error``, a message naming the exception type and the code location
  (never the exception's text, which may quote the payload), and the slot keeps the state
  and timer it had before the event. The job goes on with the next event.
* **Timer**: a step that raises while it fires would raise again on every later event of
  that customer (an event first fires a due step). So the journey is dropped instead (its
  state cleared, no timer left), profile and cart are kept as they were, a DLQ record
  describes the timer, and a ``skipped`` outcome with reason ``processing_error`` says
  which reminder was not sent.
* Both count ``processing_errors``. A DLQ record itself is always encodable (ids that are
  not encodable are left out by the validator; the last resort is ASCII JSON).

The outputs are ``ROUTED`` elements, encoded by :mod:`udfs.core.contract`.
"""

from __future__ import annotations

import logging
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

import orjson

from udfs.clickhouse.schema import json_ready
from udfs.core import contract, journey
from udfs.core.contract import PROCESSING_ERROR, Routed, Table, safe_dumps
from udfs.core.instant import iso_ms
from udfs.core.render import Renderer, RenderSettings, TemplateError
from udfs.core.validation import EventValidator, Invalid, dlq_record
from udfs.logs import fields

log = logging.getLogger("inboxflow")

RENDER_FAILED: Final = "render_failed"
# A rendered email request larger than this (bytes of its JSON) is not sent: reason
# request_too_large. Kafka's producer refuses a record above max.request.size (default
# 1,048,576 bytes, key and record overhead included) and the sink then fails the job, which
# replays the same record after every restart. Cart lines are unbounded and each may carry
# a 512-character name and a 2,048-character image URL, escaped again in the HTML: about 45
# such lines reached the limit (found by the fuzz tests' output size check, issue 9). Mail
# clients clip far smaller messages anyway (Gmail at about 100 KB).
MAX_REQUEST_BYTES: Final = 1_000_000
REQUEST_TOO_LARGE: Final = "request_too_large"
COUNTERS: Final = (
    "events_valid",
    "events_invalid",
    "processing_errors",
    "late",
    "duplicate",
    "abandoned",
    "sent",
    "deferred",
    "skipped",
    "cancelled",
    "completed",
    "recovered",
)
# Counters with labels (CustomerCore.labeled): metric -> label keys. Every label value comes
# from a fixed set (event types of the schemas, DLQ and outcome reasons, configured campaign
# and steps), never from a record's free text, so the number of series stays bounded.
LABELED: Final = {
    "events": ("event_type",),  # valid events by type
    "invalid": ("reason",),  # events sent to the DLQ by validation, by reason
    "requests": ("campaign", "step"),  # email requests emitted
    "deferred": ("reason",),  # steps deferred by a guard, by reason
    "skipped": ("reason",),  # steps not sent (suppressed or skipped), by reason
    "cancelled": ("reason",),  # journeys ended before their last step, by reason
}
_LATENESS: Final = "_lateness"  # a reminder lateness sample in Step building (see _step)
_OWN_CODE: Final = ("udfs/", "job/")

# A label value of a LABELED metric: the value, or a tuple of one per label key.
Label = str | tuple[Any, ...]
# What _step counts once nothing can raise: a COUNTERS name, or (LABELED metric, Label),
# or (_LATENESS, lateness ms).
Counted = str | tuple[str, Any]


@dataclass(frozen=True)
class CoreSettings:
    """What a :class:`CustomerCore` is built from (``job.pipeline.core_settings``)."""

    journey: journey.JourneySettings
    render: RenderSettings
    store_shards: int  # 0: no profile store
    schema_dir: Path
    max_event_bytes: int
    max_future_ms: int


@final  # the wrapper tests `type(x) is Step`, which narrows only for a final class
@dataclass
class Step:
    """What one event or timer emits: ``outputs`` in order, then its ClickHouse ``store``
    rows (``(shard, rows)``, rows joined by :func:`udfs.core.contract.join_store_rows`).
    State and timer changes are left in the :class:`Slot`."""

    outputs: list[Routed] = field(default_factory=list)
    store: tuple[int, str] | None = None


_UNKNOWN: Final = object()


class Slot:
    """One customer's state while a batch (:mod:`udfs.core.batch`) is applied: ``blob`` is
    the encoded state after the last step that succeeded (what Flink keeps), ``state`` the
    same decoded (``None``: decode ``blob`` on next use; a step that fails drops it, so the
    next one starts again from ``blob``), ``timer`` the one event-time timer that must be
    registered after that step, and ``first_blob`` / ``first_timer`` what Flink held when
    the batch began, so the batch reports only what changed."""

    __slots__ = ("blob", "first_blob", "first_timer", "snapshot", "source", "state", "timer")

    def __init__(self, blob: bytes | None) -> None:
        self.blob = self.first_blob = blob
        self.state: journey.CustomerState | None = None
        self.timer: int | None = None
        self.first_timer: object = _UNKNOWN
        # the time of the newest profile version (None: no new one), and the Kafka record
        # time of the newest event that made one: its row goes out once, after the batch
        self.snapshot: int | None = None
        self.source: int | None = None

    def load(self) -> journey.CustomerState:
        state = self.state
        if state is None:
            state = self.state = journey.decode_state(self.blob)
            if self.first_timer is _UNKNOWN:
                self.first_timer = self.timer = state.next_due()
        return state

    def timer_change(self) -> tuple[int | None, int | None] | None:
        """``(delete, register)`` for Flink, or None when the timer stays as it was."""
        first = self.first_timer
        if first is _UNKNOWN or first == self.timer:
            return None
        assert first is None or isinstance(first, int)
        return first, self.timer


def shard_of(customer_id: str, shards: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process.
    return zlib.crc32(customer_id.encode()) % shards


def where(exc: BaseException) -> str:
    """``file.py:LINE in function`` of the deepest frame of this project's code in the
    traceback (the deepest frame at all when there is none)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    own = [f for f in frames if any(part in f.filename.replace("\\", "/") for part in _OWN_CODE)]
    frame = (own or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


class CustomerCore:
    """Per-subtask processing of customer events and timers. Holds no per-customer state:
    that comes in a :class:`Slot`. ``counts`` are plain counters the
    wrapper exposes as gauges. ``on_event`` / ``on_timer`` never raise."""

    def __init__(self, settings: CoreSettings) -> None:
        self.validator = EventValidator(
            Path(settings.schema_dir), settings.max_event_bytes, settings.max_future_ms
        )
        self.logic = journey.CustomerLogic(settings.journey)
        self.renderer = Renderer(settings.render)
        self.store_shards = settings.store_shards  # 0: no profile store
        self.max_event_bytes = settings.max_event_bytes
        self.counts = dict.fromkeys(COUNTERS, 0)
        # label value (a tuple for several label keys) -> count, per metric of LABELED
        self.labeled: dict[str, dict[Label, int]] = {name: {} for name in LABELED}
        # wall clock at emit minus due time (ms) of every email request emitted since the
        # wrapper last took them (reminder lateness; see udfs.flink.customer_function)
        self.lateness: list[int] = []

    # entry points --------------------------------------------------------------------------

    def validate(self, key: str, text: str, now: int) -> dict[str, Any] | Step:
        """The normalized event, or the Step that sends it to the DLQ."""
        try:
            result = self.validator.validate(text, now)
            if not isinstance(result, Invalid) and result["customer_id"] != key:
                # the JVM-side key extraction read the id differently (exotic white space)
                result = Invalid(
                    "key_mismatch",
                    "$.customer_id",
                    "customer_id could not be used as the partition key",
                    result["event_id"],
                    result["customer_id"],
                )
        except Exception as exc:  # noqa: BLE001 - the firewall: a validator bug is one DLQ record
            return self._event_failed(key, text, None, exc, now)
        if isinstance(result, Invalid):
            self.counts["events_invalid"] += 1
            invalid = self.labeled["invalid"]
            invalid[result.reason] = invalid.get(result.reason, 0) + 1
            log.warning(
                "invalid event",
                extra=fields(
                    customer_id=result.customer_id,
                    event_id=result.event_id,
                    reason=result.reason,
                    path=result.path,
                ),
            )
            return Step(outputs=[self._dlq(text, result, now)])
        self.counts["events_valid"] += 1
        by_type = self.labeled["events"]
        event_type = result["event_type"]
        by_type[event_type] = by_type.get(event_type, 0) + 1
        return result

    def on_event(
        self,
        event: dict[str, Any],
        text: str,
        slot: Slot,
        watermark: int,
        kafka_ts: int,
        now: int,
    ) -> Step:
        """Apply one validated event to the customer's :class:`Slot`."""
        try:
            state = slot.load()
            decision = self.logic.on_event(state, event, watermark)
            return self._step(state, slot, decision, kafka_ts, now)
        except Exception as exc:  # noqa: BLE001 - the firewall, see the module docstring
            slot.state = None  # the logic may have changed it: start again from the blob
            return self._event_failed(event["customer_id"], text, event, exc, now)

    def on_timer(self, key: str, timestamp: int, slot: Slot, now: int) -> Step:
        """The customer's journey timer at ``timestamp`` (event time)."""
        try:
            state = slot.load()
            decision = self.logic.on_timer(state, timestamp)
            return self._step(state, slot, decision, None, now)
        except Exception as exc:  # noqa: BLE001 - the firewall, see the module docstring
            slot.state = None
            return self._timer_failed(key, timestamp, slot, exc, now)

    # the work ------------------------------------------------------------------------------

    def _step(
        self,
        state: journey.CustomerState,
        slot: Slot,
        d: journey.Decision,
        kafka_ts: int | None,
        now: int,
    ) -> Step:
        """Everything the decision leads to, built (and encoded) before the slot takes the
        new state. Counters move only once nothing can raise any more. ``kafka_ts``: the
        Kafka record time of the event (None for a timer). Its stages (dump, render,
        encode) are methods of their own so that the benchmark times the same code."""
        blob = self._dump(state)
        rendered = [self._try_render(trigger, now) for trigger in d.triggers]
        step = self._encode(d, rendered, kafka_ts, now)
        self._keep(slot, blob, d, kafka_ts)
        return step

    def _keep(
        self, slot: Slot, blob: bytes | None, d: journey.Decision, kafka_ts: int | None
    ) -> None:
        """The slot takes the step's state, timer and profile version (nothing can raise
        any more)."""
        slot.blob, slot.timer = blob, d.timer
        if d.snapshot is not None and self.store_shards:
            slot.snapshot = d.snapshot
            if kafka_ts is not None:
                slot.source = kafka_ts

    def profile_row(self, key: str, slot: Slot, now: int) -> Step:
        """The ``customer_profiles`` row of the slot's newest profile version (once per
        customer and batch), or a DLQ record (``processing_error``) when it cannot be built.
        Never raises."""
        assert slot.snapshot is not None
        try:
            row = self.logic.profile_row(slot.load(), slot.snapshot)
            json_ready(Table.PROFILES, row)
            line = contract.encode_store_rows([(Table.PROFILES, row)], slot.source)
        except Exception as exc:  # noqa: BLE001 - the firewall: one DLQ record, not a crash
            invalid = self._processing_error(
                exc, "profile row failed", "while building the profile row", customer_id=key
            )
            description = safe_dumps({"customer_id": key, "profile_at": slot.snapshot})
            return Step(outputs=[self._dlq(description, invalid, now)])
        return Step(store=(shard_of(key, self.store_shards), line))

    @staticmethod
    def _dump(state: journey.CustomerState) -> bytes | None:
        return journey.encode_state(state)

    def _try_render(self, trigger: dict[str, Any], now: int) -> dict[str, Any] | TemplateError:
        """The rendered request, or the template's failure (a step that is not sent)."""
        try:
            return self.renderer.render(trigger, now)
        except TemplateError as exc:
            return exc

    def _encode(
        self,
        d: journey.Decision,
        rendered: list[dict[str, Any] | TemplateError],
        kafka_ts: int | None,
        now: int,
    ) -> Step:
        counted: list[Counted] = []
        outputs: list[Routed] = []
        rows = d.rows
        for trigger, request in zip(d.triggers, rendered, strict=True):
            outputs.append(self._request(trigger, request, rows, now, counted))
        for outcome in d.outcomes:
            kind = outcome["kind"]
            counted.append(kind)
            if kind in ("deferred", "skipped", "cancelled"):
                counted.append((kind, outcome.get("reason") or "unknown"))
            outputs.append(contract.encode_outcome(outcome))
        store = None
        if self.store_shards and rows:
            for table, row in rows:
                if table == Table.REQUESTS and row["emitted_at"] is None:
                    row["emitted_at"] = now  # decided (suppressed) now
                json_ready(table, row)
            cid = rows[0][1]["customer_id"]
            store = (shard_of(cid, self.store_shards), contract.encode_store_rows(rows, kafka_ts))
        for name in counted:
            if isinstance(name, str):
                self.counts[name] += 1
            elif name[0] == _LATENESS:
                self.lateness.append(name[1])
            else:
                labeled = self.labeled[name[0]]
                labeled[name[1]] = labeled.get(name[1], 0) + 1
        return Step(outputs=outputs, store=store)

    def _request(
        self,
        trigger: dict[str, Any],
        request: dict[str, Any] | TemplateError,
        rows: list[tuple[str, dict[str, Any]]],
        now: int,
        counted: list[Counted],
    ) -> Routed:
        rid = trigger["request_id"]
        # the last row of the request: a step deferred and sent in one decision has two
        row = next(r for t, r in reversed(rows) if t == Table.REQUESTS and r["request_id"] == rid)
        if isinstance(request, TemplateError):
            log.error(
                "render failed: %s",
                request,
                extra=fields(
                    customer_id=trigger["customer_id"],
                    request_id=rid,
                    campaign=trigger["campaign"],
                    step=trigger["step"],
                    reason=RENDER_FAILED,
                ),
            )
            return self._skip(trigger, row, RENDER_FAILED, counted)
        payload = orjson.dumps(request)
        if len(payload) > MAX_REQUEST_BYTES:
            log.error(
                "email request too large",
                extra=fields(
                    customer_id=trigger["customer_id"],
                    request_id=rid,
                    campaign=trigger["campaign"],
                    step=trigger["step"],
                    reason=REQUEST_TOO_LARGE,
                    bytes=len(payload),
                    limit=MAX_REQUEST_BYTES,
                ),
            )
            return self._skip(trigger, row, REQUEST_TOO_LARGE, counted)
        row.update(subject=request["subject"], emitted_at=now)
        counted.append(("requests", (trigger["campaign"], trigger["step"])))
        counted.append((_LATENESS, now - trigger["due_at"]))
        return contract.encode_request(trigger["customer_id"], payload)

    @staticmethod
    def _skip(
        trigger: dict[str, Any], row: dict[str, Any], reason: str, counted: list[Counted]
    ) -> Routed:
        """The reminder is not sent: a ``skipped`` outcome, the row ``suppressed``."""
        counted.append("skipped")
        counted.append(("skipped", reason))
        row.update(status="suppressed", reason=reason)
        return contract.encode_outcome(
            {
                "kind": "skipped",
                "customer_id": trigger["customer_id"],
                "event_time": trigger["due_at"],
                "step": trigger["step"],
                "request_id": trigger["request_id"],
                "reason": reason,
            }
        )

    # the firewall --------------------------------------------------------------------------

    def _event_failed(
        self, key: str, text: str, event: dict[str, Any] | None, exc: Exception, now: int
    ) -> Step:
        invalid = self._processing_error(
            exc,
            "processing failed",
            "while applying the event",
            customer_id=event["customer_id"] if event else (key or None),
            event_id=event["event_id"] if event else None,
        )
        return Step(outputs=[self._dlq(text, invalid, now)])

    def _timer_failed(self, key: str, timestamp: int, slot: Slot, exc: Exception, now: int) -> Step:
        self.counts["skipped"] += 1
        skipped = self.labeled["skipped"]
        skipped[PROCESSING_ERROR] = skipped.get(PROCESSING_ERROR, 0) + 1
        invalid = self._processing_error(
            exc,
            "timer failed; journey dropped",
            "while firing the journey timer; the journey was dropped",
            customer_id=key,
            timer=timestamp,
        )
        # the reschedule check's instant is far outside what a date can hold
        timer_iso = (
            "reschedule check after a restore"
            if timestamp == journey.RESCHEDULE_CHECK
            else iso_ms(timestamp)
        )
        description = safe_dumps({"timer": timestamp, "timer_iso": timer_iso, "customer_id": key})
        outcome = {
            "kind": "skipped",
            "customer_id": key,
            "event_time": timestamp,
            "reason": PROCESSING_ERROR,
        }
        self._drop_journey(slot, timestamp)
        return Step(
            outputs=[self._dlq(description, invalid, now), contract.encode_outcome(outcome)]
        )

    @staticmethod
    def _drop_journey(slot: Slot, timestamp: int) -> None:
        """After a failed timer: the same state without the journeys that were due at the
        timer (all of them when none was: the failure was not a step's), and the timer of
        the rest. A state that cannot even be decoded is kept as it is (every event of the
        customer then goes to the DLQ with ``processing_error``), only its timer goes."""
        slot.state = None  # the logic may have changed it: start again from the blob
        try:
            state: journey.CustomerState | None = slot.load()
        except Exception:  # noqa: BLE001 - undecodable: keep the bytes, drop the timer
            state = None
        if state is None:
            slot.timer = None
            return
        state.journey = None
        kept = [r for r in state.runs if r.due_at > timestamp]
        state.runs = kept if len(kept) < len(state.runs) else []
        slot.blob = journey.encode_state(state)
        slot.timer = state.next_due()

    def _processing_error(self, exc: Exception, logged: str, doing: str, **ids: Any) -> Invalid:
        """Count and log ``exc`` by its type and code location, never its text (which may
        quote the payload); the DLQ reason. ``ids``: ``customer_id`` and the log's other
        identifying fields (``event_id`` goes into the DLQ record too)."""
        self.counts["processing_errors"] += 1
        location = where(exc)
        error = type(exc).__name__
        log.error(
            logged,
            extra=fields(**ids, reason=PROCESSING_ERROR, error=error, location=location),
        )
        return Invalid(
            PROCESSING_ERROR,
            "$",
            f"{error} in {location} {doing}",
            ids.get("event_id"),
            ids["customer_id"],
        )

    def _dlq(self, text: str, invalid: Invalid, now: int) -> Routed:
        return contract.encode_dlq(dlq_record(text, invalid, now, self.max_event_bytes))
