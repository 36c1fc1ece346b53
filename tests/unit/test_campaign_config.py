"""Campaigns and guards as configured: ``conf/campaigns.yaml`` and the ``guards`` of
``conf/job.yaml`` through ``job.config.load_config``. The shipped files load into exact
values; every bad setting, given as an override or written into a campaigns file, stops
the load with the exact message naming the key; ``Condition.holds`` decides every op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from job.config import ConfigError, load_config, with_absolute_files
from udfs.core.campaigns import Campaign, Condition, Exit, Guards, QuietHours, Step, Trigger
from udfs.core.journey import Profile

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CAMPAIGNS = ROOT / "conf" / "campaigns.yaml"
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
EVENT_TYPES = (
    "cart_add, cart_remove, checkout_start, hard_bounce, identify, page_view, product_view, "
    "purchase, spam_complaint, unsubscribe"
)
DURATION_HINT = "(expected a number with a unit: ms, s, m, h or d, e.g. '45m')"


def load(**overrides: Any):
    return load_config(env={}, overrides=overrides)


def refused(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load(**overrides)
    return str(exc.value)


def welcome(**spec: Any) -> dict[str, Any]:
    return {"campaigns": {"welcome": spec}}


def where(*conditions: dict[str, Any]) -> dict[str, Any]:
    return welcome(trigger={"events": "identify", "where": list(conditions)})


# --------------------------------------------------------------------------- shipped


def test_the_shipped_files_load_four_campaigns_in_priority_order():
    cfg = load()
    assert [(c.name, c.priority) for c in cfg.campaigns] == [
        ("post_purchase", 50),
        ("welcome", 40),
        ("abandoned_cart", 30),
        ("browse_abandonment", 10),
    ]
    assert cfg.campaigns == (
        Campaign(
            name="post_purchase",
            category="transactional",
            priority=50,
            key="order_id",
            trigger=Trigger(events=("purchase",)),
            steps=(
                Step(0, "post_purchase_1", "order"),
                Step(7 * DAY, "post_purchase_2", "cross_sell", "marketing"),
            ),
            reentry="restart",
            stale_after_ms=3 * DAY,
        ),
        Campaign(
            name="welcome",
            category="marketing",
            priority=40,
            trigger=Trigger(events=("identify",), where=(Condition("traits.email", "exists"),)),
            steps=(
                Step(0, "welcome_1", "none", "transactional"),
                Step(3 * DAY, "welcome_2", recommend=4),
            ),
            exits=(Exit("purchase"),),
            reentry="never",
            stale_after_ms=2 * DAY,
        ),
        Campaign(
            name="abandoned_cart",
            category="marketing",
            priority=30,
            about="cart",
            trigger=Trigger(events=("cart_add", "cart_remove", "checkout_start")),
            steps=(
                Step(HOUR, "abandoned_cart_1", "cart"),
                Step(DAY, "abandoned_cart_2", "cart", recommend=3),
            ),
            reentry="restart",
            stale_after_ms=DAY,
            attribute_purchases=True,
        ),
        Campaign(
            name="browse_abandonment",
            category="marketing",
            priority=10,
            trigger=Trigger(events=("product_view",), min_category_views=1),
            steps=(Step(2 * HOUR, "browse_abandonment_1", "viewed", recommend=3),),
            exits=(Exit("cart_add"), Exit("purchase")),
            reentry=7 * DAY,
            stale_after_ms=12 * HOUR,
            attribute_purchases=True,
        ),
    )
    assert cfg.guard_settings == Guards(
        dedup_ttl_ms=DAY,
        dedup_max_ids=500,
        cap_limit=2,
        cap_window_ms=DAY,
        quiet_hours=QuietHours(21 * 60, 8 * 60, "UTC"),
        collision_gap_ms=30 * MINUTE,
        suppressed_ids=frozenset(),  # conf/suppression.txt holds only comments
        suppressed_emails=frozenset(),
    )


def test_overrides_merge_over_the_campaigns_file_and_equal_priorities_go_by_name():
    cfg = load(
        campaigns={
            "browse_abandonment": {"priority": 40, "stale_after": "6h"},
            "a_second_welcome": {
                "category": "marketing",
                "priority": 40,
                "trigger": {"events": "identify"},
                "entry_delay": "30m",
                "steps": [{"template": "welcome_1"}, {"after": "1d", "template": "welcome_2"}],
            },
        }
    )
    assert [c.name for c in cfg.campaigns] == [
        "post_purchase",
        "a_second_welcome",
        "browse_abandonment",
        "welcome",
        "abandoned_cart",
    ]
    added = cfg.campaigns[1]
    assert (added.steps[0].after_ms, added.offset(1), added.offset(2)) == (
        0,
        30 * MINUTE,
        30 * MINUTE + DAY,
    )
    browse = cfg.campaigns[2]
    assert (browse.stale_after_ms, browse.steps, browse.reentry) == (
        6 * HOUR,
        (Step(2 * HOUR, "browse_abandonment_1", "viewed", recommend=3),),
        7 * DAY,
    )


# --------------------------------------------------------------------------- bad campaigns

KNOWN_CAMPAIGN_KEYS = (
    "about, attribute_purchases, category, enabled, entry_delay, exit, key, on_collision, "
    "priority, reentry, stale_after, steps, trigger"
)

BAD = [
    pytest.param(
        welcome(exit=[{"event": "purchase", "same": "order_id"}]),
        "campaigns.welcome.exit[0].same: the journey has no key to compare with (set the "
        "campaign's key, e.g. key: order_id)",
        id="exit_same_without_a_key",
    ),
    pytest.param(
        welcome(stepz=[]),
        f"unknown key campaigns.welcome.stepz (known keys here: {KNOWN_CAMPAIGN_KEYS})",
        id="unknown_campaign_key",
    ),
    pytest.param(
        welcome(steps=[{"after": "0s", "template": "welcome_1", "shw": "cart"}]),
        "unknown key campaigns.welcome.steps[0].shw (known keys here: after, category, "
        "recommend, show, template)",
        id="unknown_step_key",
    ),
    pytest.param(
        welcome(steps=[{"template": "welcome_1", "recommend": -1}]),
        "campaigns.welcome.steps[0].recommend: expected 0 to 12 products, got -1",
        id="recommend_negative",
    ),
    pytest.param(
        welcome(steps=[{"template": "welcome_1", "recommend": 13}]),
        "campaigns.welcome.steps[0].recommend: expected 0 to 12 products, got 13",
        id="recommend_too_many",
    ),
    pytest.param(
        welcome(steps=[{"template": "welcome_1", "recommend": "3"}]),
        "campaigns.welcome.steps[0].recommend: expected an integer, got '3'",
        id="recommend_not_an_integer",
    ),
    pytest.param(
        welcome(steps=[{"template": "welcome_1", "recommend": 2.5}]),
        "campaigns.welcome.steps[0].recommend: expected an integer, got 2.5",
        id="recommend_a_fraction",
    ),
    pytest.param(
        welcome(steps=[{"template": "welcome_1", "recommend": True}]),
        "campaigns.welcome.steps[0].recommend: expected an integer, got True",
        id="recommend_a_boolean",
    ),
    pytest.param(
        welcome(trigger={"event": "identify", "events": "identify"}),
        "unknown key campaigns.welcome.trigger.event (known keys here: events, "
        "min_category_views, where)",
        id="unknown_trigger_key",
    ),
    pytest.param(
        welcome(
            steps=[
                {"after": "0s", "template": "welcome_1"},
                {"after": "3 days", "template": "welcome_2"},
            ]
        ),
        f"campaigns.welcome.steps[1].after: bad duration '3 days' {DURATION_HINT}",
        id="bad_duration",
    ),
    pytest.param(
        {"campaigns": {"browse_abandonment": {"stale_after": 12}}},
        f"campaigns.browse_abandonment.stale_after: bad duration 12 {DURATION_HINT}",
        id="duration_without_unit",
    ),
    pytest.param(
        welcome(steps=[{"after": None, "template": "welcome_1"}]),
        f"campaigns.welcome.steps[0].after: bad duration None {DURATION_HINT}",
        id="empty_after",
    ),
    pytest.param(
        welcome(steps=[{"after": "0s", "template": "welcome_1"}, {"template": "welcome_2"}]),
        "campaigns.welcome.steps[1].after: 0 ms must be later than the step before it (0 ms); "
        "every step is measured from the entry",
        id="absent_after_is_the_entry",
    ),
    pytest.param(
        welcome(
            steps=[
                {"after": "0s", "template": "welcome_1"},
                {"after": None, "template": "welcome_2"},
            ]
        ),
        f"campaigns.welcome.steps[1].after: bad duration None {DURATION_HINT}",
        id="empty_after_of_a_later_step",
    ),
    pytest.param(
        welcome(trigger={"events": ["identify", "signup"]}),
        f"campaigns.welcome.trigger.events[1]: unknown event type 'signup' (known: {EVENT_TYPES})",
        id="trigger_on_unknown_event_type",
    ),
    pytest.param(
        welcome(trigger={"events": [["identify"]]}),
        f"campaigns.welcome.trigger.events[0]: unknown event type ['identify'] (known: "
        f"{EVENT_TYPES})",
        id="trigger_event_not_a_string",
    ),
    pytest.param(
        welcome(trigger={"events": []}),
        "campaigns.welcome.trigger.events: expected an event type or a list of them",
        id="trigger_without_events",
    ),
    pytest.param(
        welcome(exit=[{"event": "refund"}]),
        f"campaigns.welcome.exit[0].event: unknown event type 'refund' (known: {EVENT_TYPES})",
        id="exit_on_unknown_event_type",
    ),
    pytest.param(
        welcome(exit=[{"event": "purchase", "same": 5}]),
        "campaigns.welcome.exit[0].same: expected a property name, got 5",
        id="exit_same_not_a_name",
    ),
    pytest.param(
        welcome(category="promotional"),
        "campaigns.welcome.category: expected one of marketing, transactional, got 'promotional'",
        id="bad_category",
    ),
    pytest.param(
        welcome(steps=[{"after": "0s", "template": "welcome_1", "category": "promo"}]),
        "campaigns.welcome.steps[0].category: expected one of marketing, transactional, got "
        "'promo'",
        id="bad_step_category",
    ),
    pytest.param(
        {
            "campaigns": {
                "new_one": {"trigger": {"events": "identify"}, "steps": [{"template": "welcome_1"}]}
            }
        },
        "campaigns.new_one.category: missing",
        id="category_missing",
    ),
    pytest.param(
        welcome(
            steps=[
                {"after": "1h", "template": "welcome_1"},
                {"after": "60m", "template": "welcome_2"},
            ]
        ),
        "campaigns.welcome.steps[1].after: 3600000 ms must be later than the step before it "
        "(3600000 ms); every step is measured from the entry",
        id="steps_not_increasing",
    ),
    pytest.param(
        welcome(steps=[]),
        "campaigns.welcome.steps: at least one step is needed",
        id="no_steps",
    ),
    pytest.param(
        where({"path": "traits.email", "op": "like", "value": "x"}),
        "campaigns.welcome.trigger.where[0].op: expected one of eq, ne, in, not_in, gt, gte, "
        "lt, lte, exists, missing, got 'like'",
        id="condition_bad_op",
    ),
    pytest.param(
        where({"path": "event.email", "op": "exists"}),
        "campaigns.welcome.trigger.where[0].path: expected "
        "<properties|traits|context|profile>.<name>, got 'event.email'",
        id="condition_bad_root",
    ),
    pytest.param(
        where({"path": "traits", "op": "exists"}),
        "campaigns.welcome.trigger.where[0].path: expected "
        "<properties|traits|context|profile>.<name>, got 'traits'",
        id="condition_path_without_name",
    ),
    pytest.param(
        where({"path": "profile.password", "op": "exists"}),
        "campaigns.welcome.trigger.where[0].path: unknown profile field 'password' (known: "
        "email, first_name, locale, timezone, revenue_total, order_count, emails_sent, "
        "unsubscribed)",
        id="condition_bad_profile_field",
    ),
    pytest.param(
        where({"path": "traits.locale", "op": "in", "value": "de"}),
        "campaigns.welcome.trigger.where[0].value: in needs a list, got 'de'",
        id="condition_in_without_list",
    ),
    pytest.param(
        where({"path": "traits.email", "op": "exists", "value": True}),
        "campaigns.welcome.trigger.where[0].value: exists takes no value",
        id="condition_exists_with_value",
    ),
    pytest.param(
        where({"path": "traits.locale", "op": "eq"}),
        "campaigns.welcome.trigger.where[0].value: missing",
        id="condition_eq_without_value",
    ),
    pytest.param(
        welcome(reentry="sometimes"),
        "campaigns.welcome.reentry: expected restart, never or a duration such as 7d, got "
        "'sometimes'",
        id="reentry_bad_word",
    ),
    pytest.param(
        welcome(reentry=7),
        "campaigns.welcome.reentry: expected restart, never or a duration such as 7d, got 7",
        id="reentry_number_without_unit",
    ),
    pytest.param(
        welcome(on_collision="wait"),
        "campaigns.welcome.on_collision: expected one of defer, skip, got 'wait'",
        id="bad_on_collision",
    ),
    pytest.param(
        welcome(steps=[{"after": "0s", "template": "welcome_1", "show": "cart"}]),
        "campaigns.welcome.steps[0].show: cart is for journeys about the cart (about: cart)",
        id="show_cart_outside_a_cart_journey",
    ),
    pytest.param(
        welcome(steps=[{"after": "0s", "template": "welcome_1", "show": "order"}]),
        "campaigns.welcome.steps[0].show: order needs a journey triggered by purchase",
        id="show_order_without_purchase",
    ),
    pytest.param(
        {"campaigns": {"abandoned_cart": {"trigger": {"events": ["product_view"]}}}},
        "campaigns.abandoned_cart.trigger.events: a cart journey is entered by cart events "
        "(cart_add, cart_remove, checkout_start), got ['product_view']",
        id="cart_journey_on_other_events",
    ),
    pytest.param(
        {"campaigns": {"abandoned_cart": {"key": "cart_id"}}},
        "campaigns.abandoned_cart.key: a cart journey is keyed by its cart",
        id="cart_journey_with_a_key",
    ),
    pytest.param(
        {"campaigns": {"browse_abandonment": {"trigger": {"min_category_views": 0}}}},
        "campaigns.browse_abandonment.trigger.min_category_views: must be at least 1",
        id="min_category_views_zero",
    ),
    pytest.param(
        welcome(priority=True),
        "campaigns.welcome.priority: expected an integer, got True",
        id="priority_not_an_integer",
    ),
    pytest.param(
        welcome(enabled="yes"),
        "campaigns.welcome.enabled: expected true or false, got 'yes'",
        id="enabled_not_a_boolean",
    ),
    pytest.param(
        {"campaigns": {"Welcome-2": {"category": "marketing"}}},
        "campaigns.Welcome-2: a campaign name is lower-case letters, digits and _",
        id="bad_campaign_name",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_a_bad_campaign_setting_is_refused_naming_the_key(overrides, message):
    assert refused(**overrides) == message


def test_a_missing_template_is_refused_naming_the_step():
    message = refused(**welcome(steps=[{"after": "0s", "template": "welcome_0"}]))
    assert message == (
        f"campaigns.welcome.steps[0].template: template 'welcome_0' is missing or broken in "
        f"{ROOT / 'templates'} (needs welcome_0.subject.j2, welcome_0.html.j2, "
        f"welcome_0.txt.j2)"
    )
    later = {
        "steps": [
            {"template": "post_purchase_1", "show": "order"},
            {"after": "1d", "template": "../post_purchase_2"},
        ]
    }
    assert refused(campaigns={"post_purchase": later}).startswith(
        "campaigns.post_purchase.steps[1].template: template '../post_purchase_2' is missing "
        "or broken in "
    )


# --------------------------------------------------------------------------- campaigns files


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_campaigns_file_with_an_unknown_key_is_refused(tmp_path):
    data = yaml.safe_load(SHIPPED_CAMPAIGNS.read_text())
    data["campaigns"]["welcome"]["stepz"] = data["campaigns"]["welcome"].pop("steps")
    path = write(tmp_path / "campaigns.yaml", yaml.safe_dump(data))
    assert refused(campaigns_file=path) == "campaigns.welcome.steps: missing"
    data["campaigns"]["welcome"]["steps"] = data["campaigns"]["welcome"]["stepz"]
    path = write(tmp_path / "campaigns.yaml", yaml.safe_dump(data))
    assert refused(campaigns_file=path) == (
        f"unknown key campaigns.welcome.stepz (known keys here: {KNOWN_CAMPAIGN_KEYS})"
    )


def test_a_campaigns_file_with_an_empty_after_is_refused(tmp_path):
    text = SHIPPED_CAMPAIGNS.read_text().replace("      - after: 3d\n", "      - after:\n")
    assert "after:\n" in text
    path = write(tmp_path / "campaigns.yaml", text)
    assert refused(campaigns_file=path) == (
        f"campaigns.welcome.steps[1].after: bad duration None {DURATION_HINT}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "journeys: {}\ncampaigns: {}\n",
            "{path}: expected one top-level key, campaigns",
            id="other_top_level_key",
        ),
        pytest.param(
            "- welcome\n",
            "{path}: expected one top-level key, campaigns",
            id="not_a_mapping",
        ),
        pytest.param(
            "campaigns: [welcome]\n",
            "campaigns: expected a mapping of campaign names, got ['welcome']",
            id="campaigns_not_a_mapping",
        ),
        pytest.param(
            "campaigns:\n  welcome:\n",
            "campaigns.welcome: expected a mapping, got None",
            id="campaign_without_settings",
        ),
    ],
)
def test_a_bad_campaigns_file_is_refused(tmp_path, text, message):
    path = write(tmp_path / "campaigns.yaml", text)
    assert refused(campaigns_file=path) == message.format(path=path)


def test_a_campaigns_file_that_is_not_yaml_or_missing_is_refused(tmp_path):
    path = write(tmp_path / "campaigns.yaml", "campaigns: [unclosed\n")
    assert refused(campaigns_file=path).startswith(f"{path}: not valid YAML: ")
    missing = tmp_path / "nowhere.yaml"
    assert refused(campaigns_file=str(missing)) == (
        f"campaigns_file: campaigns file not found: {missing}"
    )


def test_an_empty_campaigns_file_has_no_campaigns(tmp_path):
    path = write(tmp_path / "campaigns.yaml", "campaigns:\n")
    assert load(campaigns_file=path).campaigns == ()


def test_a_relative_campaigns_file_resolves_against_the_config_file(tmp_path):
    data = with_absolute_files(yaml.safe_load((ROOT / "conf" / "job.yaml").read_text()))
    data["campaigns_file"] = "mine.yaml"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    shipped = yaml.safe_load(SHIPPED_CAMPAIGNS.read_text())
    write(
        tmp_path / "mine.yaml",
        yaml.safe_dump({"campaigns": {"welcome": shipped["campaigns"]["welcome"]}}),
    )
    cfg = load_config(tmp_path / "job.yaml", env={})
    assert [c.name for c in cfg.campaigns] == ["welcome"]


# --------------------------------------------------------------------------- guards


@pytest.mark.parametrize(
    ("guards", "message"),
    [
        pytest.param(
            {"quiet_hours": {"start": 1260}},  # what YAML makes of an unquoted 21:00
            'guards.quiet_hours.start: expected a time of day in quotes, e.g. "21:00" '
            "(unquoted, YAML reads 21:00 as the number 1260)",
            id="quiet_start_unquoted",
        ),
        pytest.param(
            {"quiet_hours": {"start": "25:00"}},
            "guards.quiet_hours.start: expected a time of day HH:MM (00:00 to 23:59), got '25:00'",
            id="quiet_start_not_a_clock",
        ),
        pytest.param(
            {"quiet_hours": {"end": "8:00"}},
            "guards.quiet_hours.end: expected a time of day HH:MM (00:00 to 23:59), got '8:00'",
            id="quiet_end_not_a_clock",
        ),
        pytest.param(
            {"quiet_hours": {"start": "", "end": "08:00"}},
            "guards.quiet_hours.start: expected a time of day HH:MM (00:00 to 23:59), got ''",
            id="quiet_start_empty_alone",
        ),
        pytest.param(
            {"quiet_hours": {"start": "08:00", "end": "08:00"}},
            "guards.quiet_hours: start and end are the same time (leave both empty for no "
            "quiet hours)",
            id="quiet_same_start_and_end",
        ),
        pytest.param(
            {"quiet_hours": {"default_timezone": "Europe/Atlantis"}},
            "guards.quiet_hours.default_timezone: unknown IANA time zone 'Europe/Atlantis'",
            id="quiet_unknown_default_timezone",
        ),
        pytest.param(
            {"quiet_hours": {"default_timezone": "../../etc/passwd"}},
            "guards.quiet_hours.default_timezone: unknown IANA time zone '../../etc/passwd'",
            id="quiet_default_timezone_a_path",
        ),
        pytest.param(
            {"frequency_cap": -1},
            "guards.frequency_cap: must not be negative (0: no cap)",
            id="negative_cap",
        ),
        pytest.param(
            {"dedup_ttl": "0s"},
            "guards.dedup_ttl: must be positive, got 0",
            id="dedup_ttl_zero",
        ),
        pytest.param(
            {"collision_gap": "soon"},
            f"guards.collision_gap: bad duration 'soon' {DURATION_HINT}",
            id="bad_collision_gap",
        ),
        pytest.param(
            {"frequency_capp": 1},
            "unknown key guards.frequency_capp (known keys here: collision_gap, dedup_max_ids, "
            "dedup_ttl, frequency_cap, frequency_window, quiet_hours, send_rate, "
            "suppression_list)",
            id="unknown_guard",
        ),
    ],
)
def test_a_bad_guard_setting_is_refused_naming_the_key(guards, message):
    assert refused(guards=guards) == message


def test_quiet_hours_off_and_set():
    assert load(guards={"quiet_hours": {"start": "", "end": ""}}).guard_settings.quiet_hours is None
    assert load(
        guards={"quiet_hours": {"start": "22:15", "end": "06:45", "default_timezone": "Asia/Tokyo"}}
    ).guard_settings.quiet_hours == QuietHours(22 * 60 + 15, 6 * 60 + 45, "Asia/Tokyo")


def test_the_old_journey_key_says_where_it_moved():
    assert refused(journey={"abandon_after": "1h"}) == (
        "journey: moved to the campaign abandoned_cart in conf/campaigns.yaml"
    )
    assert refused(limits={"dedup_window": "1h"}) == (
        "limits.dedup_window: replaced by guards.dedup_ttl and guards.dedup_max_ids"
    )


def test_an_unreadable_suppression_list_is_refused(tmp_path):
    missing = tmp_path / "missing.txt"
    assert refused(guards={"suppression_list": str(missing)}) == (
        f"guards.suppression_list: cannot read {missing}: FileNotFoundError"
    )
    assert refused(guards={"suppression_list": str(tmp_path)}) == (
        f"guards.suppression_list: cannot read {tmp_path}: IsADirectoryError"
    )
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"c-1\n\xff\xfe\n")
    assert refused(guards={"suppression_list": str(binary)}) == (
        f"guards.suppression_list: cannot read {binary}: UnicodeDecodeError"
    )


def test_the_suppression_list_is_read_into_ids_and_lower_case_addresses(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("# comment\n\nc-9  # trailing comment\n Bob@Example.COM\nc-10\n")
    g = load(guards={"suppression_list": str(listed)}).guard_settings
    assert (g.suppressed_ids, g.suppressed_emails) == (
        frozenset({"c-9", "c-10"}),
        frozenset({"bob@example.com"}),
    )
    none = load(guards={"suppression_list": ""}).guard_settings
    assert (none.suppressed_ids, none.suppressed_emails) == (frozenset(), frozenset())


# --------------------------------------------------------------------------- Condition.holds


def ev(**sections: Any) -> dict[str, Any]:
    return {"properties": {}, "traits": {}, "context": {}, **sections}


EVENT = ev(
    properties={
        "category": "shoes",
        "price": 20,
        "ratio": 0.5,
        "flag": True,
        "off": False,
        "blank": "",
        "none": None,
        "zero": 0,
        "items": [{"sku": "a"}],
    },
    context={"page": {"path": "/sale"}},
)


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        # eq / ne
        ("properties.category", "eq", "shoes", True),
        ("properties.category", "eq", "bags", False),
        ("properties.absent", "eq", "shoes", False),
        ("properties.price", "eq", 20.0, True),  # int and float of one value
        ("properties.category", "ne", "bags", True),
        ("properties.category", "ne", "shoes", False),
        ("properties.absent", "ne", "shoes", True),
        ("properties.none", "ne", "shoes", True),  # null is missing
        # in / not_in
        ("properties.category", "in", ["bags", "shoes"], True),
        ("properties.category", "in", ["bags"], False),
        ("properties.absent", "in", ["shoes"], False),
        ("properties.category", "not_in", ["bags"], True),
        ("properties.category", "not_in", ["shoes"], False),
        ("properties.absent", "not_in", ["shoes"], True),
        # comparisons
        ("properties.price", "gt", 19, True),
        ("properties.price", "gt", 20, False),
        ("properties.price", "gte", 20, True),
        ("properties.price", "gte", 20.5, False),
        ("properties.price", "lt", 20.5, True),
        ("properties.price", "lt", 20, False),
        ("properties.price", "lte", 20, True),
        ("properties.ratio", "lte", 0.25, False),
        ("properties.category", "gt", "bags", True),  # strings compare as strings
        ("properties.category", "gt", 1, False),  # a string and a number: false
        ("properties.price", "lt", "30", False),
        ("properties.absent", "lt", 30, False),
        ("properties.absent", "gte", 0, False),
        # bool vs number: never equal, never ordered
        ("properties.flag", "eq", True, True),
        ("properties.flag", "eq", 1, False),
        ("properties.zero", "eq", False, False),
        ("properties.off", "eq", 0, False),
        ("properties.off", "eq", False, True),
        ("properties.flag", "in", [1, 2], False),
        ("properties.flag", "ne", 1, True),
        ("properties.flag", "not_in", [1], True),
        ("properties.flag", "gt", 0, False),
        ("properties.price", "gt", True, False),
        # exists / missing
        ("properties.category", "exists", None, True),
        ("properties.zero", "exists", None, True),
        ("properties.off", "exists", None, True),
        ("properties.blank", "exists", None, False),
        ("properties.none", "exists", None, False),
        ("properties.absent", "exists", None, False),
        ("properties.absent", "missing", None, True),
        ("properties.blank", "missing", None, True),
        ("properties.none", "missing", None, True),
        ("properties.category", "missing", None, False),
        # nested paths; a path through a list or a scalar is missing
        ("context.page.path", "eq", "/sale", True),
        ("context.page.title", "missing", None, True),
        ("properties.items.sku", "missing", None, True),
        ("properties.category.name", "exists", None, False),
        ("traits.email", "exists", None, False),
    ],
)
def test_condition_holds(path, op, value, expected):
    assert Condition(path, op, value).holds(EVENT, None) is expected


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("profile.order_count", "gte", 2, True),
        ("profile.order_count", "gt", 2, False),
        ("profile.revenue_total", "lt", 100, True),
        ("profile.email", "exists", None, False),  # None on the profile: missing
        ("profile.email", "ne", "x@example.com", True),
        ("profile.locale", "eq", "de-DE", True),
        ("profile.unsubscribed", "eq", False, True),
        ("profile.unsubscribed", "eq", 0, False),
        ("profile.emails_sent", "eq", 0, True),
    ],
)
def test_condition_holds_on_the_profile(path, op, value, expected):
    profile = Profile(
        customer_id="c-1",
        first_seen=0,
        last_seen=0,
        locale="de-DE",
        order_count=2,
        revenue_total=99.5,
    )
    assert Condition(path, op, value).holds(ev(), profile) is expected


def test_condition_on_the_profile_without_a_profile_is_missing():
    assert Condition("profile.order_count", "missing").holds(ev(), None) is True
    assert Condition("profile.order_count", "gte", 0).holds(ev(), None) is False
