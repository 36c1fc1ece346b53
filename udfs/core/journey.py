"""Per-customer state and the campaigns each customer is in, as pure Python (no pyflink
import).

The batch function (``udfs.core.batch``) loads a :class:`CustomerState` per customer, calls
:meth:`CustomerLogic.on_event` or :meth:`CustomerLogic.on_timer` with the time passed in,
and applies the returned :class:`Decision`: it emits the triggers, outcomes and store rows,
moves the single event-time timer and keeps the new state.

Campaigns (``conf/campaigns.yaml``, :mod:`udfs.core.campaigns`) run as **journeys**, at most
one per campaign and customer (:class:`Run`): entered by a trigger, their steps due at the
entry time plus each step's offset, ended by exit events, by their last step, or (journeys
about the cart) by the cart's own lifecycle:

* cart activity (the campaign's trigger events among cart_add / cart_remove /
  checkout_start) enters at ``last_activity``; any later cart change restarts it from
  step 1; a purchase of that cart (or any purchase when the cart has no id, or the purchase
  names no cart) at or after the cart activity, or emptying the cart, ends it (outcome
  ``cancelled``, reason ``purchased`` / ``cart_emptied``). The open cart (:class:`Cart`):
  cart_add opens it (none open, or another cart id) and adds its quantity to the product's
  line; cart_remove takes quantities out; a checkout_start that lists its lines
  (``properties.items``, read like a purchase's: at most ``MAX_ORDER_LINES``, junk lines
  left out) is a snapshot of the whole cart: a new cart of exactly those lines when none is
  open or the open one has another id, else (the same cart) its lines become the
  snapshot's, unless the snapshot is older than the cart's ``last_activity`` (late: the
  newer contents stay). A checkout_start without lines only counts as activity of an open
  cart;
* other journeys are entered by their trigger events when the trigger's conditions hold and
  the re-entry rule allows it, and ended by their exit events at or after the entry (also
  when the exit event arrived first, out of order: reason ``exit_<event type>``);
* when a step is due (the customer's timer, or the customer's next event at or after the due
  time: that event first fires the step, so the outcome never depends on when a watermark
  happened to arrive) the guards decide (:meth:`CustomerLogic._decide`): the step is sent,
  deferred to a later instant, suppressed or skipped, each with a reason, each recorded as
  an outcome and an ``email_requests`` row;
* an unsubscribe event ends every marketing journey in flight (reason ``unsubscribed``; one
  campaign only when it names one: ``campaign_unsubscribed``).

Guards, in the order they are checked when a step is due (docs/DESIGN.md#guards):

1. campaign removed or disabled since the journey began: the journey ends without sending
   (``cancelled``, reason ``campaign_removed`` / ``campaign_disabled``); a step removed from
   the schedule ends it as ``completed``, reason ``steps_removed``;
2. suppression: a hard bounce suppresses every step; a spam complaint, an unsubscribe (all
   marketing or this campaign), or the suppression list suppress marketing steps. The step
   is recorded as ``suppressed`` and the journey ends;
3. no address: the step is ``suppressed`` (``no_email``) and the journey goes on;
4. nothing to show (a step that shows products and has none): ``skipped``
   (``nothing_to_show``), the journey goes on;
5. marketing steps only: another step went to the customer at this same instant (a higher
   priority, or the same priority and an earlier name): deferred by ``collision_gap`` or
   skipped, per the campaign's ``on_collision``; quiet hours in the customer's own time
   zone: deferred to the end of the quiet hours; the frequency cap: deferred until the
   oldest send in the window leaves it. A deferral past ``stale_after`` skips the step
   (``stale``). A deferred step keeps its request id and is decided again when it is due.

There is at most one pending timer per customer: :attr:`Decision.timer` is the earliest due
step across the customer's journeys (``None``: none), and the wrapper moves the previous one.

Campaign changes (a new ``conf/campaigns.yaml`` on state restored from a checkpoint or
savepoint): a journey keeps its campaign name, entry time (``anchor``) and the number of
its next step, and its due time is always ``anchor`` + the offset of that step in the
*current* campaign (or the time it was deferred to, when later). Every event and every timer
first brings each journey in line (:meth:`CustomerLogic._reschedule`):

* a step due later now (lengthened) waits: its old timer fires, finds the step not due, and
  moves the timer to the new due time;
* a step due earlier now (shortened) fires at the new due time, or at once (the next
  watermark) when that has already passed in event time; what notices it is the customer's
  next event, the old timer, or the timer ``RESCHEDULE_CHECK`` that
  ``io.inboxflow.flink.BatchCustomerOperator`` registers for every customer with a pending
  timer when it starts from restored state, which fires with the first watermark;
* steps are identified by their position: a pending step *k* takes the offset and template of
  step *k* of the new schedule; when the new schedule has fewer than *k* steps, the journey
  ends at the time step *k* was due as completed (reason ``steps_removed``) without sending;
* a campaign removed from the file or disabled: its journeys keep their due time and end
  then without sending (reason ``campaign_removed`` / ``campaign_disabled``);
* steps added at the end apply to every journey still pending; a journey that already sent
  its last step has ended and gets no new step;
* a step already sent is never sent again, and the request id of a step does not depend on
  the timing, so a rescheduled reminder keeps its id.

State per customer is bounded (docs/DESIGN.md#state-bound): one journey per campaign, at
most ``MAX_SHOWN`` products per journey, ``guards.dedup_max_ids`` event ids,
``limits.recent_products`` viewed products, ``frequency_cap`` send times, the last
``RECENT_PURCHASES`` purchases and ``BOUGHT_PRODUCTS`` bought product ids,
``MAX_CATEGORIES`` category counts, ``MAX_UNSUBSCRIBED_FROM`` campaigns unsubscribed from, and
one entry time and one event time per campaign and event type.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import orjson

from udfs.core import guards as g
from udfs.core import recommend as rec
from udfs.core.campaigns import (
    ABOUT_CART,
    MARKETING,
    REENTER_NEVER,
    REENTER_RESTART,
    SHOW_CART,
    SHOW_CROSS_SELL,
    SHOW_NONE,
    SHOW_ORDER,
    SHOW_VIEWED,
    Campaign,
    Guards,
)
from udfs.core.recommend import Product

# Outcome kinds, also the names of the job's counters.
LATE = "late"
DUPLICATE = "duplicate"
ABANDONED = "abandoned"  # step 1 of a cart journey became due: the cart counts as abandoned
SENT = "sent"
DEFERRED = "deferred"
SKIPPED = "skipped"  # not sent: suppressed or skipped (the request row tells which)
CANCELLED = "cancelled"
COMPLETED = "completed"
RECOVERED = "recovered"

# email_requests statuses
STATUS_SENT: Final = "sent"
STATUS_DEFERRED: Final = "deferred"
STATUS_SUPPRESSED: Final = "suppressed"
STATUS_SKIPPED: Final = "skipped"

# reasons
NO_EMAIL: Final = "no_email"
UNSUBSCRIBED: Final = "unsubscribed"
CAMPAIGN_UNSUBSCRIBED: Final = "campaign_unsubscribed"
HARD_BOUNCE: Final = "hard_bounce"
SPAM_COMPLAINT: Final = "spam_complaint"
SUPPRESSION_LIST: Final = "suppression_list"
NOTHING_TO_SHOW: Final = "nothing_to_show"
STALE: Final = "stale"
COLLISION: Final = "collision"
QUIET_HOURS: Final = "quiet_hours"
FREQUENCY_CAP: Final = "frequency_cap"
CAMPAIGN_REMOVED: Final = "campaign_removed"
CAMPAIGN_DISABLED: Final = "campaign_disabled"
STEPS_REMOVED: Final = "steps_removed"
RESTARTED: Final = "restarted"  # a new trigger restarted the journey

RECENT_PURCHASES = 5
BOUGHT_PRODUCTS = 50
MAX_SHOWN = 6  # products one email shows at most (viewed, cross-sell, order lines: 50)
MAX_ORDER_LINES = 50
MAX_UNSUBSCRIBED_FROM = 50  # campaigns one customer unsubscribed from, kept
MAX_CATEGORIES = 50  # categories counted per customer (favourite_categories), kept
# Event time of the timer io.inboxflow.flink.BatchCustomerOperator registers, on restored state, for
# every customer with a pending journey (it fires with the first watermark); must match
# BatchCustomerOperator.RESCHEDULE_CHECK. Firing it only brings the journeys in line with the
# campaigns: nothing is due at this time.
RESCHEDULE_CHECK = -(2**63) + 1
CART_EVENTS = frozenset({"cart_add", "cart_remove", "checkout_start"})
# the campaign of journeys kept by versions before issue 14 (one cart journey)
LEGACY_CAMPAIGN: Final = "abandoned_cart"


def request_id(
    campaign: str, customer_id: str, cart_id: str | None, armed_at: int, step: int
) -> str:
    """Deterministic idempotency key: the same trigger gives the same id across replays and
    restarts; a new abandonment of the same cart (a new ``armed_at``) gives a new one."""
    raw = f"{campaign}\x1f{customer_id}\x1f{cart_id or ''}\x1f{armed_at}\x1f{step}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class JourneySettings:
    # in priority order, highest first (udfs.core.campaigns.parse_campaigns)
    campaigns: tuple[Campaign, ...]
    guards: Guards = Guards()
    recent_products: int = 10
    favourite_categories: int = 3
    attribution_window_ms: int = 7 * 86_400_000
    # recommendations (a step's ``recommend``): views this close form one session, and the
    # products recommended when nothing personal is known
    session_gap_ms: int = 30 * 60_000
    fallback_products: tuple[Product, ...] = ()


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
    """The one cart journey of versions before issue 14 (read from restored state, turned
    into a :class:`Run` of :data:`LEGACY_CAMPAIGN` on first use)."""

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
    campaign: str = LEGACY_CAMPAIGN


class Viewed(msgspec.Struct, array_like=True, gc=False):
    """A product the customer viewed (newest view time ``at``)."""

    product_id: str
    name: str | None
    price: float | None
    image_url: str | None
    category: str | None
    currency: str | None
    at: int


class Run(msgspec.Struct, array_like=True):
    """One campaign journey in flight: ``step`` is the next step, due at ``due_at``
    (``anchor`` + the step's offset, or ``not_before`` when a guard deferred it later)."""

    campaign: str
    anchor: int  # the entry (trigger time; cart journeys: the last cart activity)
    key: str | None  # cart id (cart journeys) or the campaign's key property
    step: int
    due_at: int
    since: int  # the first entry of this journey (a restart keeps it)
    not_before: int = 0
    deferrals: int = 0  # times the pending step was deferred
    items: list[CartItem] = msgspec.field(default_factory=list)  # the order's lines
    currency: str | None = None  # the trigger event's currency


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
    # --- issue 14 (appended: older values still decode)
    seen_times: list[int] = msgspec.field(default_factory=list)  # event time of seen_ids[i]
    sends: list[int] = msgspec.field(default_factory=list)  # marketing send times (cap)
    last_send: list[int] = msgspec.field(default_factory=list)  # [time, priority rank]
    entries: dict[str, int] = msgspec.field(default_factory=dict)  # campaign -> last entry
    last_at: dict[str, int] = msgspec.field(default_factory=dict)  # event type -> newest
    unsubscribed_from: list[str] = msgspec.field(default_factory=list)
    bounced: bool = False
    complained: bool = False
    viewed: list[Viewed] = msgspec.field(default_factory=list)  # newest first
    bought: list[str] = msgspec.field(default_factory=list)  # product ids, newest last


class CustomerState(msgspec.Struct, array_like=True):
    """Everything kept per customer, one Flink value (:func:`encode_state`). ``cart`` is
    ``None`` when no cart is open; ``runs`` the journeys in flight; ``journey`` only holds a
    journey of a version before issue 14 until it is first used."""

    profile: Profile | None = None
    cart: Cart | None = None
    journey: Journey | None = None
    runs: list[Run] = msgspec.field(default_factory=list)

    def next_due(self) -> int | None:
        """The one timer the customer needs: the earliest due step (None: nothing pending)."""
        due = [r.due_at for r in self.runs]
        if self.journey is not None:
            due.append(self.journey.due_at)
        return min(due) if due else None

    def run_of(self, campaign: str) -> Run | None:
        for run in self.runs:
            if run.campaign == campaign:
                return run
        return None


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
# The first byte of a pickle (protocol 2 and later); an encoded state starts with 0x93 or
# 0x94 (an array of three or four).
_PICKLED: Final = b"\x80"


def encode_state(state: CustomerState) -> bytes | None:
    """The customer's state as one value; ``None`` when there is nothing to keep."""
    if state.profile is None and state.cart is None and state.journey is None and not state.runs:
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
    d["viewed"] = [msgspec.structs.asdict(v) for v in p.viewed]
    return orjson.dumps(d).decode()


def load_profile(raw: str) -> Profile:
    d = orjson.loads(raw)
    lr = d.pop("last_reminder")
    viewed = [Viewed(**v) for v in d.pop("viewed", [])]
    return Profile(**d, last_reminder=LastReminder(**lr) if lr else None, viewed=viewed)


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


# --- the logic -----------------------------------------------------------------------------


class CustomerLogic:
    """Pure per-customer logic. Never reads a clock: event time comes with the event or the
    timer, the watermark and the wall clock (for nothing but ``emitted``) are passed in."""

    def __init__(self, settings: JourneySettings):
        self.s = settings
        self.guards = settings.guards
        # every configured campaign by name, enabled or not (a disabled one ends its
        # journeys in flight), and its rank: 0 = highest priority
        self.by_name = {c.name: c for c in settings.campaigns}
        self.rank = {c.name: i for i, c in enumerate(settings.campaigns)}
        enabled = [c for c in settings.campaigns if c.enabled]
        self.cart_campaigns = tuple(c for c in enabled if c.about == ABOUT_CART)
        self.event_campaigns = tuple(c for c in enabled if c.about != ABOUT_CART)
        quiet = self.guards.quiet_hours
        self.default_zone = g.zone_or_none(quiet.default_timezone) if quiet else None

    # entry points --------------------------------------------------------------------------

    def on_event(self, state: CustomerState, event: dict[str, Any], watermark: int) -> Decision:
        d = Decision()
        ts = event["timestamp"]
        cid = event["customer_id"]
        p = state.profile
        if p is None:
            p = state.profile = Profile(customer_id=cid, first_seen=ts, last_seen=ts)
        self._upgrade(state)
        self._reschedule(state)
        if g.is_duplicate(p.seen_ids, event["event_id"]):
            d.outcomes.append(
                _outcome(
                    DUPLICATE,
                    cid,
                    ts,
                    event_id=event["event_id"],
                    reason="event id already processed",
                )
            )
            d.timer = state.next_due()
            return d
        g.remember_event(
            p.seen_ids,
            p.seen_times,
            event["event_id"],
            ts,
            self.guards.dedup_ttl_ms,
            self.guards.dedup_max_ids,
        )

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
        kind = event["event_type"]
        self._update_profile(p, event)
        handler = getattr(self, "_on_" + kind, None)
        if handler is not None:
            handler(state, event, d)
        self._exits(state, event, d)
        self._triggers(state, event, d)
        p.last_at[kind] = max(p.last_at.get(kind, ts), ts)
        self._snapshot(state, ts, d)
        d.timer = state.next_due()
        return d

    def on_timer(self, state: CustomerState, ts: int) -> Decision:
        """The customer's timer at ``ts``: a step's due time, a due time of an older
        schedule, or :data:`RESCHEDULE_CHECK`."""
        d = Decision()
        self._upgrade(state)
        self._reschedule(state)
        self._fire_due(state, ts, d)
        d.timer = state.next_due()
        return d

    # journeys ------------------------------------------------------------------------------

    @staticmethod
    def _upgrade(state: CustomerState) -> None:
        """State of a version before issue 14: its cart journey becomes a :class:`Run`, and
        remembered event ids get a time (the customer's newest event)."""
        j, p = state.journey, state.profile
        if j is not None:
            state.journey = None
            state.runs.append(
                Run(LEGACY_CAMPAIGN, j.armed_at, j.cart_id, j.step, j.due_at, j.armed_at)
            )
        if p is not None and len(p.seen_times) != len(p.seen_ids):
            p.seen_times = [p.last_seen] * len(p.seen_ids)

    def _reschedule(self, state: CustomerState) -> None:
        """Each pending step's due time per the current campaigns (see the module
        docstring); a no-op unless a campaign changed since the step was armed. A step of a
        campaign that is gone, disabled, or no longer has that step keeps its due time and
        ends the journey then."""
        for run in state.runs:
            c = self.by_name.get(run.campaign)
            if c is not None and c.enabled and run.step <= len(c.steps):
                run.due_at = max(run.anchor + c.offset(run.step), run.not_before)

    def _fire_due(self, state: CustomerState, now: int, d: Decision) -> None:
        """Each due step, earliest first, then by priority, with a profile snapshot of its
        own: the same rows and versions whether a step fires from its timer or just before
        the customer's next event. Every pass sends, ends, or moves a step strictly later
        (a deferral), so the loop ends."""
        while True:
            due = [r for r in state.runs if r.due_at <= now]
            if not due:
                return
            run = min(due, key=lambda r: (r.due_at, self.rank.get(r.campaign, -1), r.campaign))
            at = run.due_at
            self._decide(state, run, d)
            self._snapshot(state, at, d)

    def _decide(self, state: CustomerState, run: Run, d: Decision) -> None:
        """The due step of ``run``: sent, deferred, suppressed or skipped (module
        docstring, "Guards")."""
        p = state.profile
        assert p is not None
        c = self.by_name.get(run.campaign)
        if c is None or not c.enabled:
            reason = CAMPAIGN_REMOVED if c is None else CAMPAIGN_DISABLED
            self._close_deferred(p, run, reason, d)
            self._finish(state, run, d, CANCELLED, reason)
            return
        if run.step > len(c.steps):
            self._close_deferred(p, run, STEPS_REMOVED, d)
            self._finish(state, run, d, COMPLETED, STEPS_REMOVED)
            return
        at = run.due_at
        category = c.step_category(run.step)
        if c.about == ABOUT_CART and run.step == 1 and run.deferrals == 0:
            # the cart counts as abandoned once, when step 1 first becomes due
            cart_value = state.cart.value if state.cart is not None else 0.0
            d.outcomes.append(
                _outcome(ABANDONED, p.customer_id, at, cart_id=run.key, value=cart_value)
            )
        items = self._items(state, run, c)
        suppressed = self._suppressed(p, c, category)
        if suppressed:
            self._not_sent(state, run, c, d, STATUS_SUPPRESSED, suppressed, items)
            self._finish(state, run, d, None, None)
            return
        if not p.email:
            self._not_sent(state, run, c, d, STATUS_SUPPRESSED, NO_EMAIL, items)
            self._advance(state, run, c, d)
            return
        if c.steps[run.step - 1].show != SHOW_NONE and not items:
            self._not_sent(state, run, c, d, STATUS_SKIPPED, NOTHING_TO_SHOW, items)
            self._advance(state, run, c, d)
            return
        if category == MARKETING:
            later = self._guard(p, c, at)
            if later is not None:
                until, reason = later
                if until is None:  # on_collision: skip
                    self._not_sent(state, run, c, d, STATUS_SKIPPED, reason, items)
                    self._advance(state, run, c, d)
                elif (
                    c.stale_after_ms is not None
                    and until - (run.anchor + c.offset(run.step)) > c.stale_after_ms
                ):
                    self._not_sent(state, run, c, d, STATUS_SKIPPED, STALE, items, by=reason)
                    self._advance(state, run, c, d)
                else:
                    self._defer(state, run, c, d, until, reason, items)
                return
        self._send(state, run, c, d, category, items)
        self._advance(state, run, c, d)

    def _suppressed(self, p: Profile, c: Campaign, category: str) -> str | None:
        """Why the customer gets no email of this category and campaign (None: they may)."""
        if p.bounced:
            return HARD_BOUNCE
        if category != MARKETING:
            return None
        if p.complained:
            return SPAM_COMPLAINT
        if p.unsubscribed:
            return UNSUBSCRIBED
        if c.name in p.unsubscribed_from:
            return CAMPAIGN_UNSUBSCRIBED
        listed = self.guards
        if p.customer_id in listed.suppressed_ids or (
            p.email is not None and p.email.lower() in listed.suppressed_emails
        ):
            return SUPPRESSION_LIST
        return None

    def _guard(self, p: Profile, c: Campaign, at: int) -> tuple[int | None, str] | None:
        """(the instant a marketing step due ``at`` may go, reason) when a guard holds it
        back; (None, collision) when it is skipped; None when it may go now."""
        last = p.last_send
        if (
            last
            and last[0] == at
            and last[1] <= self.rank[c.name]
            and self.guards.collision_gap_ms > 0
        ):
            if c.on_collision == "skip":
                return None, COLLISION
            return at + self.guards.collision_gap_ms, COLLISION
        quiet = self.guards.quiet_hours
        if quiet is not None:
            zone = g.zone_or_none(p.timezone) or self.default_zone
            if zone is not None:
                until = g.quiet_until(at, zone, quiet.start_minute, quiet.end_minute)
                if until is not None:
                    return until, QUIET_HOURS
        capped = g.cap_until(p.sends, at, self.guards.cap_limit, self.guards.cap_window_ms)
        if capped is not None:
            return capped, FREQUENCY_CAP
        return None

    def _items(self, state: CustomerState, run: Run, c: Campaign) -> list[CartItem]:
        """What the step's email shows (``steps[].show``)."""
        show = c.steps[run.step - 1].show
        p = state.profile
        assert p is not None
        if show == SHOW_CART:
            return list(state.cart.items) if state.cart is not None else []
        if show == SHOW_ORDER:
            return list(run.items)
        if show not in (SHOW_VIEWED, SHOW_CROSS_SELL):
            return []
        exclude = set(p.bought)
        if state.cart is not None:
            exclude.update(i.product_id for i in state.cart.items)
        if show == SHOW_VIEWED:
            chosen = [v for v in p.viewed if v.at >= run.since]
        else:
            categories = {i.category for i in run.items if i.category}
            exclude.update(i.product_id for i in run.items)
            chosen = [v for v in p.viewed if v.category in categories]
        return [
            CartItem(v.product_id, v.name, v.price or 0.0, 1, v.image_url, v.category)
            for v in chosen
            if v.product_id not in exclude
        ][:MAX_SHOWN]

    def _request_row(
        self,
        p: Profile,
        run: Run,
        status: str,
        reason: str,
        items: list[CartItem],
        currency: str,
        deferred_until: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The ``email_requests`` row of the run's pending step (its campaign may be gone:
        then its category is empty)."""
        c = self.by_name.get(run.campaign)
        category = c.step_category(run.step) if c is not None and run.step <= len(c.steps) else ""
        return (
            "email_requests",
            {
                "request_id": self._rid(p, run),
                "campaign": run.campaign,
                "step": run.step,
                "customer_id": p.customer_id,
                "status": status,
                "reason": reason,
                "subject": "",
                "due_at": run.due_at,
                "emitted_at": None,
                "cart_id": run.key if self._is_cart(run) else None,
                "cart_value": _value(items),
                "currency": currency,
                "product_ids": [i.product_id for i in items],
                "category": category,
                "deferrals": run.deferrals,
                "deferred_until": deferred_until,
            },
        )

    @staticmethod
    def _rid(p: Profile, run: Run) -> str:
        return request_id(run.campaign, p.customer_id, run.key, run.anchor, run.step)

    def _currency(self, state: CustomerState, run: Run, c: Campaign, items: list[CartItem]) -> str:
        if c.about == ABOUT_CART and state.cart is not None and state.cart.currency:
            return state.cart.currency
        p = state.profile
        assert p is not None
        for v in p.viewed:
            if v.currency and any(i.product_id == v.product_id for i in items):
                return v.currency
        return run.currency or "USD"

    def _send(
        self,
        state: CustomerState,
        run: Run,
        c: Campaign,
        d: Decision,
        category: str,
        items: list[CartItem],
    ) -> None:
        p = state.profile
        assert p is not None and p.email
        currency = self._currency(state, run, c, items)
        trigger = self._trigger(state, run, c, category, items, currency)
        d.triggers.append(trigger)
        rid = trigger["request_id"]
        p.emails_sent += 1
        if category == MARKETING:
            g.remember_send(p.sends, run.due_at, self.guards.cap_limit, self.guards.cap_window_ms)
        p.last_send = [run.due_at, self.rank[c.name]]
        if c.attribute_purchases:
            key = run.key if c.about == ABOUT_CART else None
            p.last_reminder = LastReminder(rid, run.step, key, run.due_at, c.name)
        sent = {"step": run.step, "request_id": rid, **self._about(run)}
        d.outcomes.append(_outcome(SENT, p.customer_id, run.due_at, **sent))
        d.rows.append(self._request_row(p, run, STATUS_SENT, "", items, currency))

    def _trigger(
        self,
        state: CustomerState,
        run: Run,
        c: Campaign,
        category: str,
        items: list[CartItem],
        currency: str,
    ) -> dict[str, Any]:
        """The trigger handed to the renderer for the run's pending step (changes nothing:
        :meth:`_send` and :func:`preview_trigger` both build it here)."""
        p = state.profile
        assert p is not None and p.email
        k = c.steps[run.step - 1].recommend
        if k:
            cart = state.cart
            recommendations, source = rec.recommend(
                p,
                [i.product_id for i in cart.items] if cart is not None else (),
                [i.product_id for i in items],
                k,
                self.s.session_gap_ms,
                self.favourite_categories(p),
                self.s.fallback_products,
            )
        else:
            recommendations, source = [], rec.NONE
        shown = [msgspec.structs.asdict(i) for i in items]
        if c.steps[run.step - 1].show in (SHOW_VIEWED, SHOW_CROSS_SELL):
            # a viewed product whose price was never known: None, not the 0.0 the item
            # carries for the row's value (the email prints no price, not "€0.00")
            unknown = {v.product_id for v in p.viewed if v.price is None}
            for item in shown:
                if item["product_id"] in unknown:
                    item["price"] = None
        return {
            "request_id": self._rid(p, run),
            "campaign": c.name,
            "step": run.step,
            "template": c.steps[run.step - 1].template,
            "customer_id": p.customer_id,
            "to": p.email,
            "first_name": p.first_name,
            "locale": p.locale,
            "timezone": p.timezone,
            "cart_id": run.key if c.about == ABOUT_CART else None,
            "items": shown,
            "cart_value": _value(items),
            "currency": currency,
            "armed_at": run.anchor,
            "due_at": run.due_at,
            "reason": "cart_abandoned" if c.about == ABOUT_CART else c.name,
            "category": category,
            "recommendations": recommendations,
            "recommendations_source": source,
        }

    def _not_sent(
        self,
        state: CustomerState,
        run: Run,
        c: Campaign,
        d: Decision,
        status: str,
        reason: str,
        items: list[CartItem],
        **extra: Any,
    ) -> None:
        """The step is suppressed or skipped: a ``skipped`` outcome and its request row."""
        self._record(state, run, c, d, SKIPPED, status, reason, items, status=status, **extra)

    def _defer(
        self,
        state: CustomerState,
        run: Run,
        c: Campaign,
        d: Decision,
        until: int,
        reason: str,
        items: list[CartItem],
    ) -> None:
        assert until > run.due_at
        self._record(state, run, c, d, DEFERRED, STATUS_DEFERRED, reason, items, until, until=until)
        run.deferrals += 1
        run.not_before = run.due_at = until

    def _record(
        self,
        state: CustomerState,
        run: Run,
        c: Campaign,
        d: Decision,
        kind: str,
        row_status: str,
        reason: str,
        items: list[CartItem],
        deferred_until: int | None = None,
        **extra: Any,
    ) -> None:
        """A decision that sends nothing (yet): its outcome ``kind`` and its request row
        (``row_status``)."""
        p = state.profile
        assert p is not None
        about = {"step": run.step, "request_id": self._rid(p, run), "reason": reason}
        d.outcomes.append(
            _outcome(kind, p.customer_id, run.due_at, **about, **self._about(run), **extra)
        )
        currency = self._currency(state, run, c, items)
        d.rows.append(
            self._request_row(p, run, row_status, reason, items, currency, deferred_until)
        )

    def _advance(self, state: CustomerState, run: Run, c: Campaign, d: Decision) -> None:
        """The journey's next step, or its end after the last."""
        p = state.profile
        assert p is not None
        if run.step < len(c.steps):
            run.step += 1
            run.deferrals = 0
            run.not_before = 0
            run.due_at = run.anchor + c.offset(run.step)
            if c.about == ABOUT_CART:
                p.journey_status = f"waiting_step_{run.step}"
        else:
            self._finish(state, run, d, COMPLETED, None)

    def _finish(
        self, state: CustomerState, run: Run, d: Decision, kind: str | None, reason: str | None
    ) -> None:
        """The journey ends at its due time (``kind``: the outcome, None for none)."""
        p = state.profile
        assert p is not None
        state.runs.remove(run)
        if self._is_cart(run):
            p.journey_status = "completed" if kind is not None else "suppressed"
        if kind is not None:
            extra: dict[str, Any] = self._about(run)
            if reason is not None:
                extra.update(reason=reason, step=run.step)
            d.outcomes.append(_outcome(kind, p.customer_id, run.due_at, **extra))

    def _about(self, run: Run) -> dict[str, Any]:
        """What an outcome says about the journey: its campaign, and ``cart_id`` (cart
        journeys) or ``key`` (the campaign's key property, e.g. an order id; None: none)."""
        if self._is_cart(run):
            return {"cart_id": run.key, "campaign": run.campaign}
        return {"cart_id": None, "key": run.key, "campaign": run.campaign}

    def _is_cart(self, run: Run) -> bool:
        c = self.by_name.get(run.campaign)
        return c.about == ABOUT_CART if c is not None else run.campaign == LEGACY_CAMPAIGN

    def _close_deferred(self, p: Profile, run: Run, reason: str, d: Decision) -> None:
        """A journey ends while its pending step is deferred: the step's request row, which
        says ``deferred``, becomes ``skipped`` with the reason the journey ended (else the
        table would show it waiting for ever)."""
        if run.deferrals:
            row = self._request_row(p, run, STATUS_SKIPPED, reason, [], run.currency or "USD")
            d.rows.append(row)

    def _cancel(self, state: CustomerState, run: Run, ts: int, reason: str, d: Decision) -> None:
        p = state.profile
        assert p is not None
        self._close_deferred(p, run, reason, d)
        state.runs.remove(run)
        d.outcomes.append(
            _outcome(
                CANCELLED,
                p.customer_id,
                ts,
                reason=reason,
                step=run.step,
                **self._about(run),
            )
        )

    def _may_enter(self, p: Profile, c: Campaign, ts: int) -> bool:
        """The re-entry rule: a first entry, or a trigger newer than the last entry that the
        rule allows."""
        last = p.entries.get(c.name)
        if last is None:
            return True
        if c.reentry == REENTER_NEVER or ts <= last:
            return False
        if c.reentry == REENTER_RESTART:
            return True
        assert isinstance(c.reentry, int)
        return ts - last >= c.reentry

    def _enter(
        self,
        state: CustomerState,
        c: Campaign,
        ts: int,
        key: str | None,
        d: Decision,
        items: list[CartItem] | None = None,
    ) -> Run:
        p = state.profile
        assert p is not None
        old = state.run_of(c.name)
        since = ts
        if old is not None:
            # restarted: a new entry, new request ids; a deferred step of the old one ends
            self._close_deferred(p, old, RESTARTED, d)
            state.runs.remove(old)
            if old.key == key:
                since = old.since
        run = Run(c.name, ts, key, 1, ts + c.offset(1), since, items=items or [])
        state.runs.append(run)
        p.entries[c.name] = max(p.entries.get(c.name, ts), ts)
        return run

    # cart journeys -------------------------------------------------------------------------

    def _arm(self, state: CustomerState, event: dict[str, Any], d: Decision) -> None:
        """Cart activity: every cart campaign whose trigger takes this event (re)starts at
        the cart's last activity."""
        cart, p = state.cart, state.profile
        assert cart is not None and p is not None
        for c in self.cart_campaigns:
            if event["event_type"] not in c.trigger.events:
                continue
            if not all(cond.holds(event, p) for cond in c.trigger.where):
                continue
            # the cart code decided that this activity (re)starts the journey (a new cart,
            # or newer activity); only a re-entry limit can refuse it
            running = state.run_of(c.name)
            if (
                running is None
                and c.reentry != REENTER_RESTART
                and not self._may_enter(p, c, cart.last_activity)
            ):
                continue
            self._enter(state, c, cart.last_activity, cart.cart_id, d)
            p.journey_status = "waiting_step_1"

    def _end(
        self, state: CustomerState, ts: int, reason: str, d: Decision, status: str = "idle"
    ) -> None:
        """The cart is gone: its journeys end."""
        p = state.profile
        assert p is not None
        for run in [r for r in state.runs if self._is_cart(r)]:
            self._cancel(state, run, ts, reason, d)
        p.journey_status = status

    # event journeys ------------------------------------------------------------------------

    def _exits(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        kind, ts, props = e["event_type"], e["timestamp"], e["properties"]
        p = state.profile
        for run in list(state.runs):
            c = self.by_name.get(run.campaign)
            if c is None or ts < run.anchor:
                continue
            for ex in c.exits:
                if ex.event != kind or not all(cond.holds(e, p) for cond in ex.where):
                    continue
                if ex.same is not None:
                    value = props.get(ex.same)
                    if run.key is not None and value is not None and value != run.key:
                        continue
                self._cancel(state, run, ts, f"exit_{kind}", d)
                if self._is_cart(run):
                    assert p is not None
                    p.journey_status = "idle"
                break

    def _triggers(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        kind, ts, props = e["event_type"], e["timestamp"], e["properties"]
        p = state.profile
        assert p is not None
        for c in self.event_campaigns:
            if kind not in c.trigger.events or not self._may_enter(p, c, ts):
                continue
            if not all(cond.holds(e, p) for cond in c.trigger.where):
                continue
            if c.trigger.min_category_views > 1:
                category = props.get("category")
                seen = {v.product_id for v in p.viewed if v.category == category}
                if type(category) is not str or len(seen) < c.trigger.min_category_views:
                    continue
            key = props.get(c.key) if c.key else None
            key = key if type(key) is str else None
            items = _order_lines(props) if kind == "purchase" else None
            run = self._enter(state, c, ts, key, d, items)
            currency = props.get("currency")
            run.currency = currency if type(currency) is str and currency else None
            # An exit event that arrived first (out of order) but happened after the entry:
            # as in event-time order, the steps due before it fire first (every other
            # journey's steps due by then fired when that event was applied), then the
            # journey ends at the exit's time. Only exits without `same` and `where` can be
            # checked this way: the profile keeps the newest time per event type, not the
            # events.
            exits = [
                (at, ex.event)
                for ex in c.exits
                if ex.same is None
                and not ex.where
                and (at := p.last_at.get(ex.event)) is not None
                and at >= ts
            ]
            if exits:
                at, exit_event = min(exits)
                self._fire_due(state, at, d)
                if run in state.runs:
                    self._cancel(state, run, at, f"exit_{exit_event}", d)

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
        self._touch(state, e, d, opened=cart is not before)

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
        self._touch(state, e, d)

    def _on_checkout_start(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        """A checkout that lists its lines (``properties.items``, read as a purchase's:
        at most ``MAX_ORDER_LINES``, junk lines left out) is a snapshot of the whole cart, so
        a shop that only reports checkouts (e.g. Shopify's ``checkouts/update`` webhook)
        still gets its reminders:

        * no open cart, or one with another cart id: a new cart of exactly those lines;
        * the same cart, and the snapshot is not older than its last activity: its lines
          become the snapshot's (a name, image or category the line lacks is kept from the
          cart's line of that product);
        * the same cart and an older snapshot (late): the lines stay, a late event does not
          undo newer contents; the cart is only touched.

        Without lines (none, an empty list, only junk) the cart, if any, is only touched."""
        props, ts = e["properties"], e["timestamp"]
        lines = _order_lines(props)
        if not lines:
            if state.cart is not None:
                self._touch(state, e, d)
            return
        before, cart_id = state.cart, props.get("cart_id")
        if (
            before is not None
            and (cart_id is None or before.cart_id in (None, cart_id))
            and ts < before.last_activity
        ):
            self._touch(state, e, d)
            return
        cart = self._open_cart(state, cart_id, ts)
        known = {i.product_id: i for i in cart.items}
        for line in lines:
            old = known.get(line.product_id)
            if old is not None:
                line.name = line.name or old.name
                line.image_url = line.image_url or old.image_url
                line.category = line.category or old.category
        cart.items = lines
        if cart.currency is None and _text(props.get("currency")):
            cart.currency = props["currency"]
        self._touch(state, e, d, opened=cart is not before)

    def _on_purchase(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        props, ts, p = e["properties"], e["timestamp"], state.profile
        assert p is not None
        bought = props.get("cart_id")
        self._credit_recovery(p, e, d)
        p.recent_purchases.append([bought, ts])
        del p.recent_purchases[:-RECENT_PURCHASES]
        for line in _order_lines(props):
            if line.product_id in p.bought:
                p.bought.remove(line.product_id)
            p.bought.append(line.product_id)
        del p.bought[:-BOUGHT_PRODUCTS]
        cart = state.cart
        if cart is None or ts < cart.last_activity:
            return
        if cart.cart_id is not None and bought is not None and bought != cart.cart_id:
            return  # another cart was bought: this one stays open and its reminders stand
        state.cart = None
        self._end(state, ts, "purchased", d, status="purchased")

    def _on_unsubscribe(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        """From all marketing, or from the one campaign the event names: the journeys whose
        next step is marketing end now (a transactional step still goes out)."""
        p, ts = state.profile, e["timestamp"]
        assert p is not None
        campaign = e["properties"].get("campaign")
        if type(campaign) is str and campaign:
            if campaign not in p.unsubscribed_from:
                p.unsubscribed_from.append(campaign)
                del p.unsubscribed_from[:-MAX_UNSUBSCRIBED_FROM]
            # its journey ends only when its next step is marketing, as for an unsubscribe
            # from everything (a pending transactional step, e.g. an order's thank-you,
            # still goes; the marketing steps after it are suppressed when due)
            ending, reason = (
                [r for r in state.runs if r.campaign == campaign and self._next_is_marketing(r)],
                CAMPAIGN_UNSUBSCRIBED,
            )
        else:
            p.unsubscribed = True
            ending, reason = [r for r in state.runs if self._next_is_marketing(r)], UNSUBSCRIBED
        for run in ending:
            self._cancel(state, run, ts, reason, d)
            if self._is_cart(run):
                p.journey_status = "unsubscribed"

    def _next_is_marketing(self, run: Run) -> bool:
        c = self.by_name.get(run.campaign)
        if c is None:
            return run.campaign == LEGACY_CAMPAIGN
        return run.step > len(c.steps) or c.step_category(run.step) == MARKETING

    def _on_hard_bounce(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        """The address bounced: nothing more goes to it (a new address from identify lifts
        this). A bounce of another address than the customer's current one is ignored."""
        p = state.profile
        assert p is not None
        address = e["properties"].get("email")
        if type(address) is not str or p.email is None or address.strip().lower() == p.email:
            p.bounced = True

    def _on_spam_complaint(self, state: CustomerState, e: dict[str, Any], d: Decision) -> None:
        assert state.profile is not None
        state.profile.complained = True

    def _open_cart(self, state: CustomerState, cart_id: str | None, ts: int) -> Cart:
        cart = state.cart
        if cart is None or (cart_id is not None and cart.cart_id not in (None, cart_id)):
            cart = state.cart = Cart(cart_id=cart_id, currency=None, last_activity=ts)
        elif cart.cart_id is None and cart_id is not None:
            cart.cart_id = cart_id
        return cart

    def _touch(
        self, state: CustomerState, e: dict[str, Any], d: Decision, opened: bool = False
    ) -> None:
        cart, p, ts = state.cart, state.profile, e["timestamp"]
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
            self._arm(state, e, d)

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
                if key == "email" and value != p.email:
                    p.bounced = False  # a new address: the old one's bounce does not apply
                setattr(p, key, value)
        if p.locale is None:
            # the event's context.locale (e.g. the browser's) until a trait names one: the
            # trait wins; normalized by the renderer (udfs.core.l10n.normalize_locale)
            context = e.get("context")
            locale = context.get("locale") if isinstance(context, dict) else None
            if type(locale) is str and locale:
                p.locale = locale
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
        if pid and kind == "product_view" and type(pid) is str:
            self._viewed(p, props, ts)
        category = props.get("category")
        # Strings only: purchase.json does not define properties.category, so it can be any
        # JSON value; an object or list raised TypeError (unhashable) and a number made the
        # profile unserializable (non-string key). Found by fuzzing (issue 9).
        if type(category) is str and category and kind in ("product_view", "cart_add", "purchase"):
            counts = p.category_counts
            counts[category] = counts.get(category, 0) + 1
            # Bounded (every distinct category was kept: the state grew with each one): the
            # lowest ranked other category goes (fewest counts, then the last name).
            while len(counts) > MAX_CATEGORIES:
                del counts[max((k for k in counts if k != category), key=lambda k: (-counts[k], k))]

    def _viewed(self, p: Profile, props: dict[str, Any], ts: int) -> None:
        """The product goes to the front of the customer's viewed products (bounded by
        limits.recent_products); a view older than the one kept changes nothing."""
        pid = props["product_id"]
        for v in p.viewed:
            if v.product_id == pid:
                if v.at > ts:
                    return
                p.viewed.remove(v)
                break
        price = props.get("price")
        viewed = Viewed(
            pid,
            _text(props.get("name")),
            float(price) if isinstance(price, (int, float)) and type(price) is not bool else None,
            _text(props.get("image_url")),
            _text(props.get("category")),
            _text(props.get("currency")),
            ts,
        )
        at = next((i for i, v in enumerate(p.viewed) if v.at <= ts), len(p.viewed))
        p.viewed.insert(at, viewed)
        del p.viewed[self.s.recent_products :]

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


def preview_trigger(
    settings: JourneySettings, state: CustomerState, campaign: str, step: int, now_ms: int
) -> dict[str, Any]:
    """The trigger :meth:`CustomerLogic._send` would hand the renderer for step ``step``
    (1-based) of ``campaign`` for this customer, guards aside (``inboxflow preview``).

    The customer's journey of that campaign gives the entry, key, order lines and currency
    when there is one (the step's due time: entry + the step's offset, or the time it was
    deferred to when it is the pending step); else a journey entered at ``now_ms``: keyed by
    the open cart's id (cart campaigns; else no key), showing what the step shows then (the
    current cart; an order step without a journey shows no lines; viewed products since
    ``now_ms``: none). ``state`` is not changed. Raises ValueError for an unknown campaign, a
    step out of range, or a customer without an email address."""
    logic = CustomerLogic(settings)
    c = logic.by_name.get(campaign)
    if c is None:
        known = ", ".join(sorted(logic.by_name)) or "none"
        raise ValueError(f"unknown campaign {campaign!r} (campaigns: {known})")
    if not 1 <= step <= len(c.steps):
        raise ValueError(f"campaign {campaign!r} has steps 1 to {len(c.steps)}: no step {step}")
    if state.profile is None or not state.profile.email:
        raise ValueError("customer has no email address: add an identify event with traits.email")
    copy = _DECODER.decode(_ENCODER.encode(state))  # a deep copy: nothing below touches state
    logic._upgrade(copy)
    run = copy.run_of(campaign)
    if run is None:
        cart = copy.cart
        key = cart.cart_id if c.about == ABOUT_CART and cart is not None else None
        run = Run(c.name, now_ms, key, step, now_ms + c.offset(step), now_ms)
    else:
        due = run.anchor + c.offset(step)
        run.due_at = max(due, run.not_before) if run.step == step else due
        run.step = step
    items = logic._items(copy, run, c)
    currency = logic._currency(copy, run, c, items)
    return logic._trigger(copy, run, c, c.step_category(step), items, currency)


def _outcome(kind: str, customer_id: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "customer_id": customer_id, "event_time": ts, **extra}


def _text(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _value(items: list[CartItem]) -> float:
    return round(sum(i.price * i.quantity for i in items), 2)


def _order_lines(props: dict[str, Any]) -> list[CartItem]:
    """The order's lines (purchase ``properties.items``), bounded by MAX_ORDER_LINES."""
    lines = props.get("items")
    out: list[CartItem] = []
    if not isinstance(lines, list):
        return out
    for line in lines[:MAX_ORDER_LINES]:
        if not isinstance(line, dict) or type(line.get("product_id")) is not str:
            continue
        price, qty = line.get("price"), line.get("quantity")
        out.append(
            CartItem(
                line["product_id"],
                _text(line.get("name")),
                float(price)
                if isinstance(price, (int, float)) and type(price) is not bool
                else 0.0,
                qty if type(qty) is int and qty > 0 else 1,
                _text(line.get("image_url")),
                _text(line.get("category")),
            )
        )
    return out
