"""Campaigns and guards as operators define them (``conf/campaigns.yaml``, ``guards`` in
``conf/job.yaml``), parsed and checked into frozen values (pure Python, no pyflink import).

A campaign is a journey each customer may be in: a **trigger** (event types, conditions on
the event and the profile) enters it, an optional ``entry_delay`` later its **steps** run
(each ``after`` a time measured from the entry, each naming a template and what the email
shows), **exit** events end it, and a **re-entry** rule says when the same customer may
enter again. How the customer logic runs them: ``udfs.core.journey``;
docs/DESIGN.md#campaigns for the rules in one place.

Every error names the key (``campaigns.welcome.steps[1].after``) and the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

MARKETING: Final = "marketing"
TRANSACTIONAL: Final = "transactional"
CATEGORIES: Final = (MARKETING, TRANSACTIONAL)

# What a step's email shows (``steps[].show``):
SHOW_CART: Final = "cart"  # the open cart's lines when the step is due
SHOW_VIEWED: Final = "viewed"  # products viewed since the journey began, not in cart or bought
SHOW_ORDER: Final = "order"  # the lines of the order that triggered the journey
SHOW_CROSS_SELL: Final = "cross_sell"  # viewed, not bought, in a category of that order
SHOW_NONE: Final = "none"
# products an email recommends at most (``steps[].recommend``)
MAX_RECOMMEND: Final = 12
SHOWS: Final = (SHOW_CART, SHOW_VIEWED, SHOW_ORDER, SHOW_CROSS_SELL, SHOW_NONE)

# What a journey is about (``about``): ``cart`` journeys follow the customer's open cart (they
# are entered, re-armed and ended by the cart's own lifecycle: a newer cart activity restarts
# them, a purchase of that cart or emptying it ends them); ``event`` journeys are entered by
# their trigger events and keyed by ``key`` (a property of the trigger event, e.g. order_id).
ABOUT_CART: Final = "cart"
ABOUT_EVENT: Final = "event"

REENTER_RESTART: Final = "restart"  # a new trigger restarts the journey from step 1
REENTER_NEVER: Final = "never"  # once per customer, ever

ON_COLLISION: Final = ("defer", "skip")

OPS: Final = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "missing")
ROOTS: Final = ("properties", "traits", "context", "profile")
# Profile fields a condition may read (``profile.<field>``).
PROFILE_FIELDS: Final = (
    "email",
    "first_name",
    "locale",
    "timezone",
    "revenue_total",
    "order_count",
    "emails_sent",
    "unsubscribed",
)

_DURATION: Final = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CLOCK: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MISSING: Final = object()


class CampaignError(ValueError):
    """A campaign or guard setting is missing, unknown or invalid; the message names the key."""


def parse_duration(value: Any, key: str) -> int:
    """``"45m"`` -> 2_700_000 (ms); a unit is required."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise CampaignError(
        f"{key}: bad duration {value!r} (expected a number with a unit: ms, s, m, h or d, "
        f"e.g. '45m')"
    )


@dataclass(frozen=True)
class Condition:
    """``path`` ``op`` ``value``: ``properties.category eq shoes``, ``profile.order_count
    gte 1``, ``traits.email exists``. A missing value fails every op but ``missing``, ``ne``
    and ``not_in``; comparisons of values of different kinds are false."""

    path: str
    op: str
    value: Any = None

    def holds(self, event: Mapping[str, Any], profile: Any) -> bool:
        root, _, rest = self.path.partition(".")
        if root == "profile":
            found = getattr(profile, rest, None) if profile is not None else None
            found = _MISSING if found is None else found
        else:
            found = event.get(root)
            for part in rest.split("."):
                if not isinstance(found, Mapping) or part not in found:
                    found = _MISSING
                    break
                found = found[part]
            if found is None:
                found = _MISSING
        op, value = self.op, self.value
        if op == "exists":
            return found is not _MISSING and found != ""
        if op == "missing":
            return found is _MISSING or found == ""
        if op == "ne":
            return found is _MISSING or not _same(found, value)
        if op == "not_in":
            return found is _MISSING or not any(_same(found, v) for v in value)
        if found is _MISSING:
            return False
        if op == "eq":
            return _same(found, value)
        if op == "in":
            return any(_same(found, v) for v in value)
        if not _comparable(found, value):
            return False
        if op == "gt":
            return bool(found > value)
        if op == "gte":
            return bool(found >= value)
        if op == "lt":
            return bool(found < value)
        return bool(found <= value)  # lte


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a condition on a boolean must not match a number and back
    return type(a) is bool and a is b if type(a) is bool or type(b) is bool else a == b


def _comparable(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return False
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


@dataclass(frozen=True)
class Trigger:
    events: tuple[str, ...]
    where: tuple[Condition, ...] = ()
    # ``event`` journeys: enter only when the customer has viewed at least this many
    # distinct products of the trigger event's category (recent views, limits.recent_products)
    min_category_views: int = 1


@dataclass(frozen=True)
class Exit:
    """An event that ends the journey: of type ``event``, with ``same`` (a property name)
    equal to the journey's key when both have one, and every ``where`` condition."""

    event: str
    same: str | None = None
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Step:
    after_ms: int  # from the entry
    template: str
    show: str = SHOW_NONE
    category: str | None = None  # overrides the campaign's category for this step
    recommend: int = 0  # products recommended at most (0: none)


@dataclass(frozen=True)
class Campaign:
    name: str
    category: str
    priority: int
    trigger: Trigger
    steps: tuple[Step, ...]
    enabled: bool = True
    about: str = ABOUT_EVENT
    key: str | None = None  # event journeys: the trigger property that names the journey
    entry_delay_ms: int = 0
    exits: tuple[Exit, ...] = ()
    reentry: str | int = REENTER_RESTART  # restart | never | ms since the last entry
    # a step deferred by a guard further than this past its own due time is skipped as
    # stale (None: never stale)
    stale_after_ms: int | None = None
    on_collision: str = "defer"
    # a purchase within clickhouse.attribution_window after a sent step credits it
    attribute_purchases: bool = False

    def step_category(self, step: int) -> str:
        """The category of step ``step`` (1-based)."""
        return self.steps[step - 1].category or self.category

    def offset(self, step: int) -> int:
        """Time from the trigger to step ``step`` (1-based)."""
        return self.entry_delay_ms + self.steps[step - 1].after_ms


@dataclass(frozen=True)
class QuietHours:
    start_minute: int  # minutes after local midnight
    end_minute: int
    default_timezone: str = "UTC"


@dataclass(frozen=True)
class Guards:
    """The guards of every send (docs/DESIGN.md#guards)."""

    dedup_ttl_ms: int = 86_400_000
    dedup_max_ids: int = 500
    cap_limit: int = 0  # marketing emails per customer per cap window; 0: no cap
    cap_window_ms: int = 86_400_000
    quiet_hours: QuietHours | None = None
    collision_gap_ms: int = 1_800_000
    # customer ids and (lower-case) e-mail addresses never sent marketing email
    suppressed_ids: frozenset[str] = frozenset()
    suppressed_emails: frozenset[str] = frozenset()


def parse_clock(value: Any, key: str) -> int:
    """``"21:30"`` -> minutes after midnight."""
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match:
        raise CampaignError(f"{key}: expected a time of day HH:MM (00:00 to 23:59), got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


# --- parsing --------------------------------------------------------------------------------


class _Reader:
    """Reads one mapping, remembering which keys were used, so unknown keys are errors."""

    def __init__(self, data: Any, key: str) -> None:
        if not isinstance(data, Mapping):
            raise CampaignError(f"{key}: expected a mapping, got {data!r}")
        self.data, self.key, self.used = data, key, set[str]()

    def at(self, name: str) -> str:
        return f"{self.key}.{name}"

    def get(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise CampaignError(f"{self.at(name)}: missing")
            return default
        return self.data[name]

    def string(self, name: str, default: Any = _MISSING, choices: Iterable[str] = ()) -> Any:
        value = self.get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise CampaignError(f"{self.at(name)}: expected a string, got {value!r}")
        choices = tuple(choices)
        if choices and value not in choices:
            raise CampaignError(
                f"{self.at(name)}: expected one of {', '.join(choices)}, got {value!r}"
            )
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CampaignError(f"{self.at(name)}: expected an integer, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise CampaignError(f"{self.at(name)}: expected true or false, got {value!r}")
        return value

    def duration(self, name: str, default: int | None) -> int | None:
        value = self.get(name, None)
        return default if value is None else parse_duration(value, self.at(name))

    def items(self, name: str, default: Any = _MISSING) -> list[Any]:
        value = self.get(name, default)
        if value is None:
            return []
        if not isinstance(value, list):
            raise CampaignError(f"{self.at(name)}: expected a list, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise CampaignError(
                f"unknown key {self.at(str(unknown[0]))} (known keys here: "
                f"{', '.join(sorted(self.used))})"
            )


def parse_campaigns(
    data: Any, event_types: Iterable[str], key: str = "campaigns"
) -> tuple[Campaign, ...]:
    """The ``campaigns`` mapping (name -> settings) into :class:`Campaign` values, in
    priority order (highest first, then by name). ``event_types``: the event types the
    schemas define, which triggers and exits may name."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise CampaignError(f"{key}: expected a mapping of campaign names, got {data!r}")
    types = frozenset(event_types)
    out = [_campaign(str(name), spec, f"{key}.{name}", types) for name, spec in data.items()]
    return tuple(sorted(out, key=lambda c: (-c.priority, c.name)))


def _campaign(name: str, spec: Any, key: str, types: frozenset[str]) -> Campaign:
    if not _NAME.match(name):
        raise CampaignError(f"{key}: a campaign name is lower-case letters, digits and _")
    r = _Reader(spec, key)
    about = r.string("about", ABOUT_EVENT, (ABOUT_CART, ABOUT_EVENT))
    trigger = _trigger(r.get("trigger"), r.at("trigger"), types, about)
    steps_data = r.items("steps")
    if not steps_data:
        raise CampaignError(f"{r.at('steps')}: at least one step is needed")
    steps = tuple(_step(s, f"{r.at('steps')}[{i}]") for i, s in enumerate(steps_data))
    for i in range(1, len(steps)):
        if steps[i].after_ms <= steps[i - 1].after_ms:
            raise CampaignError(
                f"{r.at('steps')}[{i}].after: {steps[i].after_ms} ms must be later than the "
                f"step before it ({steps[i - 1].after_ms} ms); every step is measured from "
                f"the entry"
            )
    reentry_raw = r.get("reentry", REENTER_RESTART)
    reentry: str | int
    if reentry_raw in (REENTER_RESTART, REENTER_NEVER):
        reentry = reentry_raw
    else:
        try:
            reentry = parse_duration(reentry_raw, r.at("reentry"))
        except CampaignError:
            raise CampaignError(
                f"{r.at('reentry')}: expected restart, never or a duration such as 7d, "
                f"got {reentry_raw!r}"
            ) from None
    key_property = r.get("key", None)
    if key_property is not None and (not isinstance(key_property, str) or not key_property):
        raise CampaignError(f"{r.at('key')}: expected a property name, got {key_property!r}")
    if about == ABOUT_CART and key_property is not None:
        raise CampaignError(f"{r.at('key')}: a cart journey is keyed by its cart")
    exits = tuple(
        _exit(e, f"{r.at('exit')}[{i}]", types) for i, e in enumerate(r.items("exit", []))
    )
    for i, ex in enumerate(exits):
        if ex.same is not None and about != ABOUT_CART and key_property is None:
            raise CampaignError(
                f"{r.at('exit')}[{i}].same: the journey has no key to compare with (set the "
                f"campaign's key, e.g. key: order_id)"
            )
    campaign = Campaign(
        name=name,
        enabled=r.boolean("enabled", True),
        category=r.string("category", _MISSING, CATEGORIES),
        priority=r.integer("priority", 0),
        about=about,
        key=key_property,
        trigger=trigger,
        entry_delay_ms=r.duration("entry_delay", 0) or 0,
        steps=steps,
        exits=exits,
        reentry=reentry,
        stale_after_ms=r.duration("stale_after", None),
        on_collision=r.string("on_collision", "defer", ON_COLLISION),
        attribute_purchases=r.boolean("attribute_purchases", False),
    )
    r.done()
    for i, step in enumerate(steps):
        if step.show == SHOW_CART and about != ABOUT_CART:
            raise CampaignError(
                f"{r.at('steps')}[{i}].show: cart is for journeys about the cart (about: cart)"
            )
        if step.show in (SHOW_ORDER, SHOW_CROSS_SELL) and "purchase" not in trigger.events:
            raise CampaignError(
                f"{r.at('steps')}[{i}].show: {step.show} needs a journey triggered by purchase"
            )
    return campaign


def _trigger(data: Any, key: str, types: frozenset[str], about: str) -> Trigger:
    r = _Reader(data, key)
    raw = r.get("events")
    events = [raw] if isinstance(raw, str) else raw
    if not isinstance(events, list) or not events:
        raise CampaignError(f"{r.at('events')}: expected an event type or a list of them")
    for i, event in enumerate(events):
        # a str first: a list or mapping here is unhashable (TypeError, no key named)
        if not isinstance(event, str) or event not in types:
            raise CampaignError(
                f"{r.at('events')}[{i}]: unknown event type {event!r} (known: "
                f"{', '.join(sorted(types))})"
            )
    if about == ABOUT_CART:
        cart_events = {"cart_add", "cart_remove", "checkout_start"}
        if not set(events) <= cart_events:
            raise CampaignError(
                f"{r.at('events')}: a cart journey is entered by cart events "
                f"({', '.join(sorted(cart_events))}), got {events!r}"
            )
    trigger = Trigger(
        events=tuple(events),
        where=_conditions(r.items("where", []), r.at("where")),
        min_category_views=r.integer("min_category_views", 1),
    )
    if trigger.min_category_views < 1:
        raise CampaignError(f"{r.at('min_category_views')}: must be at least 1")
    r.done()
    return trigger


def _exit(data: Any, key: str, types: frozenset[str]) -> Exit:
    r = _Reader(data, key)
    event = r.string("event")
    if event not in types:
        raise CampaignError(
            f"{r.at('event')}: unknown event type {event!r} (known: {', '.join(sorted(types))})"
        )
    found = Exit(
        event=event,
        same=r.get("same", None),
        where=_conditions(r.items("where", []), r.at("where")),
    )
    if found.same is not None and (not isinstance(found.same, str) or not found.same):
        raise CampaignError(f"{r.at('same')}: expected a property name, got {found.same!r}")
    r.done()
    return found


def _step(data: Any, key: str) -> Step:
    r = _Reader(data, key)
    template = r.string("template")
    step = Step(
        # absent: at the entry; an empty value (``after:``, None) is an error, not a
        # step without a time (it crashed the parser, or every entry, with a TypeError)
        after_ms=parse_duration(r.get("after", "0s"), r.at("after")),
        template=template,
        show=r.string("show", SHOW_NONE, SHOWS),
        category=r.string("category", None, CATEGORIES),
        recommend=r.integer("recommend", 0),
    )
    if not 0 <= step.recommend <= MAX_RECOMMEND:
        raise CampaignError(
            f"{r.at('recommend')}: expected 0 to {MAX_RECOMMEND} products, got {step.recommend}"
        )
    r.done()
    return step


def _conditions(data: list[Any], key: str) -> tuple[Condition, ...]:
    out = []
    for i, item in enumerate(data):
        at = f"{key}[{i}]"
        r = _Reader(item, at)
        path = r.string("path")
        root, _, rest = path.partition(".")
        if root not in ROOTS or not rest:
            raise CampaignError(
                f"{r.at('path')}: expected <{'|'.join(ROOTS)}>.<name>, got {path!r}"
            )
        if root == "profile" and rest not in PROFILE_FIELDS:
            raise CampaignError(
                f"{r.at('path')}: unknown profile field {rest!r} (known: "
                f"{', '.join(PROFILE_FIELDS)})"
            )
        op = r.string("op", _MISSING, OPS)
        value = r.get("value", None)
        if op in ("in", "not_in") and not isinstance(value, list):
            raise CampaignError(f"{r.at('value')}: {op} needs a list, got {value!r}")
        if op in ("exists", "missing") and value is not None:
            raise CampaignError(f"{r.at('value')}: {op} takes no value")
        if op in ("eq", "ne", "gt", "gte", "lt", "lte") and value is None:
            raise CampaignError(f"{r.at('value')}: missing")
        r.done()
        out.append(Condition(path, op, value))
    return tuple(out)


def parse_suppression_list(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """The suppression list file: one customer id or e-mail address per line (an ``@``
    makes it an address, compared lower-cased), ``#`` starts a comment, blank lines are
    ignored. Returns (customer ids, addresses)."""
    ids, emails = set[str](), set[str]()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if "@" in entry:
            emails.add(entry.lower())
        else:
            ids.add(entry)
    return frozenset(ids), frozenset(emails)
