"""Per-customer state and the abandoned-cart journey, as pure Python (no pyflink import).

The Flink wrapper (``udfs.flink.customer_function.CustomerFunction``) loads a
:class:`CustomerState` from keyed state, calls :meth:`CustomerLogic.on_event` or
:meth:`CustomerLogic.on_timer` with the time passed in, and applies the returned
:class:`Decision`: it emits the triggers, outcomes and store rows, moves the single
event-time timer, and writes back or clears each part of the state.

Journey lifecycle (one customer, one open cart):

* cart activity (cart_add / cart_remove / checkout_start) arms step 1 at
  ``last_activity + abandon_after``; any later cart change re-arms from step 1;
* when step *k* is due (event-time timer, or the customer's next event at or after the due
  time: that event first fires the step, so the outcome never depends on when a watermark
  happened to arrive) the step is sent, or skipped with a reason, and step *k+1* is armed,
  measured from the same cart activity;
* a purchase of that cart (or any purchase when the cart has no id, or the purchase names no
  cart) at or after the cart activity, emptying the cart, or unsubscribing ends it;
* when it ends ``journey`` is ``None`` and no timer is left.

There is at most one pending timer per customer: :attr:`Decision.timer` is the one timer that
must be registered after the call (``None``: none), and the wrapper deletes the previous one.

Timing changes (a new ``schedule`` on state restored from a checkpoint or savepoint): a
journey keeps when its cart activity happened (``armed_at``) and which step is next, and its
due time is always ``armed_at`` + the offset of that step in the *current* schedule. Every
event and every timer first brings the journey in line (:meth:`CustomerLogic._reschedule`):

* a step due later now (lengthened) waits: its old timer fires, finds the step not due, and
  moves the timer to the new due time;
* a step due earlier now (shortened) fires at the new due time, or at once (the next
  watermark) when that has already passed in event time; what notices it is the customer's
  next event, the old timer, or the timer ``RESCHEDULE_CHECK`` that
  ``io.inboxflow.flink.BatchCustomerOperator`` registers for every customer with a pending
  journey when it starts from restored state, which fires with the first watermark;
* steps are identified by their position: a pending step *k* takes the offset and template of
  step *k* of the new schedule; when the new schedule has fewer than *k* steps, the journey
  ends at the time step *k* was due (old schedule) as completed (outcome ``completed``,
  reason ``steps_removed``) without sending;
* steps added at the end apply to every journey still pending; a journey that already sent
  its last step has ended and gets no new step;
* a step already sent is never sent again, and the request id of a step does not depend on
  the timing, so a rescheduled reminder keeps its id.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import orjson

# Outcome kinds, also the names of the job's counters.
LATE = "late"
DUPLICATE = "duplicate"
ABANDONED = "abandoned"  # step 1 became due: the cart counts as abandoned
SENT = "sent"
SKIPPED = "skipped"
CANCELLED = "cancelled"
COMPLETED = "completed"
RECOVERED = "recovered"

RECENT_PURCHASES = 5
# Event time of the timer io.inboxflow.flink.BatchCustomerOperator registers, on restored state, for
# every customer with a pending journey (it fires with the first watermark); must match
# BatchCustomerOperator.RESCHEDULE_CHECK. Firing it only brings the journey in line with the
# schedule: nothing is due at this time.
RESCHEDULE_CHECK = -(2**63) + 1
STEPS_REMOVED = "steps_removed"
CART_EVENTS = frozenset({"cart_add", "cart_remove", "checkout_start"})


def request_id(
    campaign: str, customer_id: str, cart_id: str | None, armed_at: int, step: int
) -> str:
    """Deterministic idempotency key: the same trigger gives the same id across replays and
    restarts; a new abandonment of the same cart (a new ``armed_at``) gives a new one."""
    raw = f"{campaign}\x1f{customer_id}\x1f{cart_id or ''}\x1f{armed_at}\x1f{step}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class JourneySettings:
    campaign: str
    # (offset from the last cart activity in ms, template name) for step 1, 2, ...
    schedule: tuple[tuple[int, str], ...]
    recent_products: int = 10
    favourite_categories: int = 3
    dedup_window: int = 64
    attribution_window_ms: int = 7 * 86_400_000


class CartItem(msgspec.Struct, array_like=True, gc=False):
    product_id: str
    name: str | None
    price: float
    quantity: int
    image_url: str | None = None
    category: str | None = None


class Cart(msgspec.Struct, array_like=True):
    cart_id: str | None
    currency: str | None
    last_activity: int
    items: list[CartItem] = msgspec.field(default_factory=list)

    @property
    def value(self) -> float:
        return round(sum(i.price * i.quantity for i in self.items), 2)

    @property
    def item_count(self) -> int:
        return sum(i.quantity for i in self.items)


class Journey(msgspec.Struct, array_like=True, gc=False):
    """An armed schedule: ``step`` is the next step to send, due at ``due_at``."""

    armed_at: int
    cart_id: str | None
    step: int
    due_at: int


class LastReminder(msgspec.Struct, array_like=True, gc=False):
    """The last reminder sent, kept for the attribution window to credit a recovery."""

    request_id: str
    step: int
    cart_id: str | None
    due_at: int


class Profile(msgspec.Struct, array_like=True):
    customer_id: str
    first_seen: int
    last_seen: int
    email: str | None = None
    first_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    event_counts: dict[str, int] = msgspec.field(default_factory=dict)
    revenue_total: float = 0.0
    order_count: int = 0
    last_purchase_at: int | None = None
    recent_products: list[str] = msgspec.field(default_factory=list)
    category_counts: dict[str, int] = msgspec.field(default_factory=dict)
    unsubscribed: bool = False
    emails_sent: int = 0
    late_events: int = 0
    journey_status: str = "idle"
    version: int = 0
    last_reminder: LastReminder | None = None
    seen_ids: list[str] = msgspec.field(default_factory=list)
    # [cart_id or None, event time] of the last few purchases, so a cart event that arrives
    # after the purchase of that cart (out of order) does not re-arm a reminder.
    recent_purchases: list[list[Any]] = msgspec.field(default_factory=list)


class CustomerState(msgspec.Struct, array_like=True):
    """Everything kept per customer, one Flink value (:func:`encode_state`). ``cart`` and
    ``journey`` are ``None`` when there is nothing open."""

    profile: Profile | None = None
    cart: Cart | None = None
    journey: Journey | None = None


@dataclass
class Decision:
    triggers: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    # (table, row) pairs for the profile store: email requests and recoveries
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    timer: int | None = None
    # the time of the newest profile version this decision made (None: none); its row is
    # built per batch (CustomerLogic.profile_row)
    snapshot: int | None = None


# --- state encoding: one MessagePack value per customer -------------------------------------
#
# The state types are msgspec Structs encoded as positional arrays (``array_like``): no field
# names in the bytes, and decoding builds the objects in C. Compatibility rule for whoever
# changes them: add fields only at the end of a Struct, with a default, never reorder or
# remove one (a value written before the change must still decode; tests/unit/test_batch.py
# checks the layout). The JSON forms below are the state's readable form (tests, tools), and
# what versions before issue 13 kept in three keyed states (state_from_json).

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(CustomerState)
# The first byte of a pickle (protocol 2 and later); an encoded state starts with 0x93 (an
# array of three).
_PICKLED: Final = b"\x80"


def encode_state(state: CustomerState) -> bytes | None:
    """The customer's state as one value; ``None`` when there is nothing to keep."""
    if state.profile is None and state.cart is None and state.journey is None:
        return None
    return _ENCODER.encode(state)


def decode_state(blob: bytes | None) -> CustomerState:
    if blob is None:
        return CustomerState()
    if blob[:1] == _PICKLED:
        # written by the plain path (PyFlink pickles its values): the same bytes inside
        blob = pickle.loads(blob)  # the job's own keyed state
    return _DECODER.decode(blob)


def dump_profile(p: Profile) -> str:
    d = msgspec.structs.asdict(p)
    d["last_reminder"] = msgspec.structs.asdict(p.last_reminder) if p.last_reminder else None
    return orjson.dumps(d).decode()


def load_profile(raw: str) -> Profile:
    d = orjson.loads(raw)
    lr = d.pop("last_reminder")
    return Profile(**d, last_reminder=LastReminder(**lr) if lr else None)


def dump_cart(c: Cart) -> str:
    d = msgspec.structs.asdict(c)
    d["items"] = [msgspec.structs.asdict(i) for i in c.items]
    return orjson.dumps(d).decode()


def load_cart(raw: str) -> Cart:
    d = orjson.loads(raw)
    items = [CartItem(**i) for i in d.pop("items")]
    return Cart(**d, items=items)


def dump_journey(j: Journey) -> str:
    return orjson.dumps(msgspec.structs.asdict(j)).decode()


def load_journey(raw: str) -> Journey:
    return Journey(**orjson.loads(raw))


def state_from_json(profile: str | None, cart: str | None, journey: str | None) -> CustomerState:
    """The state as versions before issue 13 kept it: three JSON values (the forms above)."""
    return CustomerState(
        profile=load_profile(profile) if profile else None,
        cart=load_cart(cart) if cart else None,
        journey=load_journey(journey) if journey else None,
    )


# --- the logic -----------------------------------------------------------------------------


class CustomerLogic:
    """Pure per-customer logic. Never reads a clock: event time comes with the event or the
    timer, the watermark and the wall clock (for nothing but ``emitted``) are passed in."""

    def __init__(self, settings: JourneySettings):
        self.s = settings

    # entry points --------------------------------------------------------------------------

    def on_event(self, state: CustomerState, event: dict[str, Any], watermark: int) -> Decision:
        d = Decision()
        ts = event["timestamp"]
        cid = event["customer_id"]
        p = state.profile
        if p is None:
            p = state.profile = Profile(customer_id=cid, first_seen=ts, last_seen=ts)
        self._reschedule(state)
        if event["event_id"] in p.seen_ids:
            d.outcomes.append(
                _outcome(
                    DUPLICATE,
                    cid,
                    ts,
                    event_id=event["event_id"],
                    reason="event id already processed",
                )
            )
            d.timer = state.journey.due_at if state.journey else None
            return d
        p.seen_ids.append(event["event_id"])
        del p.seen_ids[: -self.s.dedup_window]

        # A step already due in event time fires before this event changes anything.
        self._fire_due(state, ts, d)

        if ts < watermark:
            p.late_events += 1
            d.outcomes.append(
                _outcome(
                    LATE,
                    cid,
                    ts,
                    event_id=event["event_id"],
                    reason=f"event time {ts} behind watermark {watermark}",
                )
            )
        self._update_profile(p, event)
        handler = getattr(self, "_on_" + event["event_type"], None)
        if handler is not None:
            handler(state, event, d)
        self._snapshot(state, ts, d)
        d.timer = state.journey.due_at if state.journey else None
        return d

    def on_timer(self, state: CustomerState, ts: int) -> Decision:
        """The journey timer at ``ts``: a step's due time, a due time of an older schedule, or
        :data:`RESCHEDULE_CHECK`."""
        d = Decision()
        self._reschedule(state)
        self._fire_due(state, ts, d)
        d.timer = state.journey.due_at if state.journey else None
        return d

    # journey -------------------------------------------------------------------------------

    def _reschedule(self, state: CustomerState) -> None:
        """The pending step's due time per the current schedule (see the module docstring);
        a no-op unless the schedule changed since the step was armed. A step that is no
        longer in the schedule keeps its due time and ends the journey then."""
        j = state.journey
        if j is not None and j.step <= len(self.s.schedule):
            j.due_at = j.armed_at + self.s.schedule[j.step - 1][0]

    def _fire_due(self, state: CustomerState, now: int, d: Decision) -> None:
        """Each due step, with a profile snapshot of its own: the same rows and versions
        whether a step fires from its timer or just before the customer's next event."""
        while state.journey is not None and state.journey.due_at <= now:
            due = state.journey.due_at
            if state.journey.step > len(self.s.schedule):
                self._end_removed_step(state, d)
            else:
                self._send_step(state, d)
            self._snapshot(state, due, d)

    def _end_removed_step(self, state: CustomerState, d: Decision) -> None:
        """The pending step was removed from the schedule: at the time it was due, the
        journey ends as completed, without sending."""
        j, p = state.journey, state.profile
        assert j is not None and p is not None
        state.journey = None
        p.journey_status = "completed"
        d.outcomes.append(
            _outcome(
                COMPLETED,
                p.customer_id,
                j.due_at,
                cart_id=j.cart_id,
                reason=STEPS_REMOVED,
                step=j.step,
            )
        )

    def _send_step(self, state: CustomerState, d: Decision) -> None:
        j, p, cart = state.journey, state.profile, state.cart
        assert j is not None and p is not None and cart is not None
        template = self.s.schedule[j.step - 1][1]
        rid = request_id(self.s.campaign, p.customer_id, j.cart_id, j.armed_at, j.step)
        if j.step == 1:
            d.outcomes.append(
                _outcome(ABANDONED, p.customer_id, j.due_at, cart_id=j.cart_id, value=cart.value)
            )
        if p.email:
            d.triggers.append(
                {
                    "request_id": rid,
                    "campaign": self.s.campaign,
                    "step": j.step,
                    "template": template,
                    "customer_id": p.customer_id,
                    "to": p.email,
                    "first_name": p.first_name,
                    "locale": p.locale,
                    "timezone": p.timezone,
                    "cart_id": j.cart_id,
                    "items": [msgspec.structs.asdict(i) for i in cart.items],
                    "cart_value": cart.value,
                    "currency": cart.currency or "USD",
                    "armed_at": j.armed_at,
                    "due_at": j.due_at,
                    "reason": "cart_abandoned",
                }
            )
            p.emails_sent += 1
            p.last_reminder = LastReminder(rid, j.step, j.cart_id, j.due_at)
            status, reason = "sent", ""
            sent = {"step": j.step, "request_id": rid, "cart_id": j.cart_id}
            d.outcomes.append(_outcome(SENT, p.customer_id, j.due_at, **sent))
        else:
            status, reason = "suppressed", "no_email"
            skipped = {"step": j.step, "request_id": rid, "reason": reason, "cart_id": j.cart_id}
            d.outcomes.append(_outcome(SKIPPED, p.customer_id, j.due_at, **skipped))
        d.rows.append(
            (
                "email_requests",
                {
                    "request_id": rid,
                    "campaign": self.s.campaign,
                    "step": j.step,
                    "customer_id": p.customer_id,
                    "status": status,
                    "reason": reason,
                    "subject": "",
                    "due_at": j.due_at,
                    "emitted_at": None,
                    "cart_id": j.cart_id,
                    "cart_value": cart.value,
                    "currency": cart.currency or "USD",
                    "product_ids": [i.product_id for i in cart.items],
                },
            )
        )
        if j.step < len(self.s.schedule):
            j.step += 1
            j.due_at = j.armed_at + self.s.schedule[j.step - 1][0]
            p.journey_status = f"waiting_step_{j.step}"
        else:
            state.journey = None
            p.journey_status = "completed"
            d.outcomes.append(_outcome(COMPLETED, p.customer_id, j.due_at, cart_id=j.cart_id))

    def _arm(self, state: CustomerState) -> None:
        cart, p = state.cart, state.profile
        assert cart is not None and p is not None
        if p.unsubscribed:
            state.journey = None
            p.journey_status = "suppressed_unsubscribed"
            return
        state.journey = Journey(
            armed_at=cart.last_activity,
            cart_id=cart.cart_id,
            step=1,
            due_at=cart.last_activity + self.s.schedule[0][0],
        )
        p.journey_status = "waiting_step_1"

    def _end(
        self, state: CustomerState, ts: int, reason: str, d: Decision, status: str = "idle"
    ) -> None:
        p = state.profile
        assert p is not None
        if state.journey is not None:
            d.outcomes.append(
                _outcome(
                    CANCELLED,
                    p.customer_id,
                    ts,
                    reason=reason,
                    cart_id=state.journey.cart_id,
                    step=state.journey.step,
                )
            )
        state.journey = None
        p.journey_status = status

    # event handlers ------------------------------------------------------------------------

    def _on_cart_add(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        props, ts = e["properties"], e["timestamp"]
        before = state.cart
        cart = self._open_cart(state, props.get("cart_id"), ts)
        if cart.currency is None and props.get("currency"):
            cart.currency = props["currency"]
        pid, qty = props["product_id"], int(props.get("quantity", 1))
        for item in cart.items:
            if item.product_id == pid:
                item.quantity += qty
                item.price = float(props["price"])
                item.name = props.get("name") or item.name
                item.image_url = props.get("image_url") or item.image_url
                break
        else:
            cart.items.append(
                CartItem(
                    pid,
                    props.get("name"),
                    float(props["price"]),
                    qty,
                    props.get("image_url"),
                    props.get("category"),
                )
            )
        self._touch(state, ts, d, opened=cart is not before)

    def _on_cart_remove(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        cart, props, ts = state.cart, e["properties"], e["timestamp"]
        if cart is None:
            return
        pid = props["product_id"]
        for item in list(cart.items):
            if item.product_id == pid:
                qty = props.get("quantity")
                item.quantity = item.quantity - int(qty) if qty is not None else 0
                if item.quantity <= 0:
                    cart.items.remove(item)
        if not cart.items:
            state.cart = None
            self._end(state, ts, "cart_emptied", d)
            return
        self._touch(state, ts, d)

    def _on_checkout_start(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        if state.cart is not None:
            self._touch(state, e["timestamp"], d)

    def _on_purchase(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        props, ts, p = e["properties"], e["timestamp"], state.profile
        assert p is not None
        bought = props.get("cart_id")
        self._credit_recovery(p, e, d)
        p.recent_purchases.append([bought, ts])
        del p.recent_purchases[:-RECENT_PURCHASES]
        cart = state.cart
        if cart is None or ts < cart.last_activity:
            return
        if cart.cart_id is not None and bought is not None and bought != cart.cart_id:
            return  # another cart was bought: this one stays open and its reminders stand
        state.cart = None
        self._end(state, ts, "purchased", d, status="purchased")

    def _on_unsubscribe(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        assert state.profile is not None
        state.profile.unsubscribed = True
        self._end(state, e["timestamp"], "unsubscribed", d, status="unsubscribed")

    def _open_cart(self, state: CustomerState, cart_id: str | None, ts: int) -> Cart:
        cart = state.cart
        if cart is None or (cart_id is not None and cart.cart_id not in (None, cart_id)):
            cart = state.cart = Cart(cart_id=cart_id, currency=None, last_activity=ts)
        elif cart.cart_id is None and cart_id is not None:
            cart.cart_id = cart_id
        return cart

    def _touch(self, state: CustomerState, ts: int, d: Decision, opened: bool = False) -> None:
        cart, p = state.cart, state.profile
        assert cart is not None and p is not None
        # Re-arm only for a new cart or newer activity. A cart event at or before the last
        # activity (late, or the same instant) re-armed from step 1 with the same armed_at:
        # once the steps had fired, they were sent again under the same request ids, so the
        # result depended on when the watermark passed. Found by fuzzing (issue 9).
        newer = opened or ts > cart.last_activity
        cart.last_activity = max(cart.last_activity, ts)
        for bought, at in p.recent_purchases:
            if at >= cart.last_activity and (
                bought is None or cart.cart_id is None or bought == cart.cart_id
            ):
                # This cart was already bought (the purchase arrived first, out of order).
                state.cart = None
                self._end(state, ts, "purchased", d, status="purchased")
                return
        if newer:
            self._arm(state)

    def _credit_recovery(self, p: Profile, e: dict[str, Any], d: Decision) -> None:
        lr, props, ts = p.last_reminder, e["properties"], e["timestamp"]
        if lr is None or ts < lr.due_at or ts - lr.due_at > self.s.attribution_window_ms:
            return
        bought = props.get("cart_id")
        if lr.cart_id is not None and bought is not None and bought != lr.cart_id:
            return
        p.last_reminder = None
        revenue = float(props.get("revenue", 0.0))
        d.outcomes.append(
            _outcome(
                RECOVERED,
                p.customer_id,
                ts,
                step=lr.step,
                request_id=lr.request_id,
                cart_id=lr.cart_id,
                value=revenue,
            )
        )
        d.rows.append(
            (
                "cart_recoveries",
                {
                    "customer_id": p.customer_id,
                    "cart_id": lr.cart_id,
                    "order_id": props["order_id"],
                    "reminder_step": lr.step,
                    "reminder_request_id": lr.request_id,
                    "reminded_at": lr.due_at,
                    "purchased_at": ts,
                    "revenue": revenue,
                    "currency": props.get("currency") or "USD",
                    "seconds_to_purchase": (ts - lr.due_at) / 1000.0,
                },
            )
        )

    # profile -------------------------------------------------------------------------------

    def _update_profile(self, p: Profile, e: dict[str, Any]) -> None:
        ts, props, kind = e["timestamp"], e["properties"], e["event_type"]
        p.first_seen = min(p.first_seen, ts)
        p.last_seen = max(p.last_seen, ts)
        p.event_counts[kind] = p.event_counts.get(kind, 0) + 1
        traits = e.get("traits") or {}
        for key in ("email", "first_name", "locale", "timezone"):
            value = traits.get(key)
            # Strings only: identify.json types these traits, but the traits of every other
            # event type are any JSON object, and a number, list or object here reached the
            # profile's String columns (ClickHouse refused every later profile row of the
            # customer) and the renderer. Found by fuzzing (issue 9).
            if type(value) is str and value:
                setattr(p, key, value)
        if kind == "purchase":
            p.order_count += 1
            p.revenue_total = round(p.revenue_total + float(props.get("revenue", 0.0)), 2)
            p.last_purchase_at = max(p.last_purchase_at or ts, ts)
        pid = props.get("product_id")
        if pid and kind in ("product_view", "cart_add"):
            if pid in p.recent_products:
                p.recent_products.remove(pid)
            p.recent_products.insert(0, pid)
            del p.recent_products[self.s.recent_products :]
        category = props.get("category")
        # Strings only: purchase.json does not define properties.category, so it can be any
        # JSON value; an object or list raised TypeError (unhashable) and a number made the
        # profile unserializable (non-string key). Found by fuzzing (issue 9).
        if type(category) is str and category and kind in ("product_view", "cart_add", "purchase"):
            p.category_counts[category] = p.category_counts.get(category, 0) + 1

    def favourite_categories(self, p: Profile) -> list[str]:
        ranked = sorted(p.category_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [name for name, _ in ranked[: self.s.favourite_categories]]

    def _snapshot(self, state: CustomerState, ts: int, d: Decision) -> None:
        """A new profile version as of ``ts``. Its row (:meth:`profile_row`) is built once
        per customer and batch, from the state the batch leaves (``udfs.core.batch``): the
        profile table keeps the highest version, so the versions in between would only be
        written to be replaced."""
        assert state.profile is not None
        state.profile.version += 1
        d.snapshot = ts

    def profile_row(self, state: CustomerState, updated_at: int) -> dict[str, Any]:
        """The ``customer_profiles`` row of the state's profile version."""
        p, cart = state.profile, state.cart
        assert p is not None
        return {
            "customer_id": p.customer_id,
            "email": p.email,
            "first_name": p.first_name,
            "locale": p.locale,
            "timezone": p.timezone,
            "first_seen": p.first_seen,
            "last_seen": p.last_seen,
            "event_counts": dict(p.event_counts),
            "revenue_total": p.revenue_total,
            "order_count": p.order_count,
            "avg_order_value": round(p.revenue_total / p.order_count, 2) if p.order_count else 0.0,
            "last_purchase_at": p.last_purchase_at,
            "recent_products": list(p.recent_products),
            "favourite_categories": self.favourite_categories(p),
            "cart_value": cart.value if cart else 0.0,
            "cart_items": cart.item_count if cart else 0,
            "journey_status": p.journey_status,
            "emails_sent": p.emails_sent,
            "unsubscribed": p.unsubscribed,
            "updated_at": updated_at,
            "version": p.version,
        }


def _outcome(kind: str, customer_id: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "customer_id": customer_id, "event_time": ts, **extra}
