"""The campaign columns of email_requests (006_campaign_guards.sql) and the campaign views
(007_campaign_views.sql) against the real ClickHouse engine (chdb through clickhouse-connect).

Expected figures come from :func:`reference`, plain Python over the scripted rows ("the last
inserted row of a request_id wins", as ReplacingMergeTree FINAL without a version column), and
one campaign is also pinned to literal numbers.

One chdb directory for the module, like tests/integration/test_store.py (chdb hosts a single
engine path per process); the upgrade test runs its own engine in a child process (hosted).
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict

import pytest

from tests.factories import HOUR, MINUTE, ROOT, STORE_T0, email_row, recovery_row
from udfs.clickhouse.client import get_client
from udfs.clickhouse.dsn import resolve_dsn
from udfs.clickhouse.schema import COLUMNS, TABLES, convert_row, json_ready

DDL_DIR = ROOT / "conf" / "clickhouse"
SCHEMA_VERSION = 7
CAMPAIGN_VIEWS = ("campaign_decisions", "campaign_summary", "campaign_suppressions")


@pytest.fixture(scope="module")
def chdb_dsn(tmp_path_factory) -> str:
    return resolve_dsn("chdb://" + str(tmp_path_factory.mktemp("clickhouse") / "db"), ROOT)


@pytest.fixture(scope="module")
def migrated(chdb_dsn):
    handle = get_client(chdb_dsn)
    assert handle.migrate(DDL_DIR) == SCHEMA_VERSION
    yield handle
    handle.close()


@pytest.fixture
def store(migrated):
    for table in TABLES:
        migrated.command(f"TRUNCATE TABLE {table}")
    return migrated


# --------------------------------------------------------------------------- the script


def req(request_id: str, campaign: str, customer_id: str, **overrides) -> dict:
    """An email_requests row of ``campaign`` (marketing, sent, never deferred unless told)."""
    return email_row(request_id, customer_id, campaign=campaign, **overrides)


def deferred(request_id: str, campaign: str, customer_id: str, reason: str, n: int, **kw) -> dict:
    """The ``n``-th deferral (0-based) of a step, due again ``n + 1`` hours later."""
    return req(
        request_id,
        campaign,
        customer_id,
        status="deferred",
        reason=reason,
        deferrals=n,
        deferred_until=STORE_T0 + (n + 1) * HOUR,
        emitted_at=STORE_T0 + n * HOUR + 250,
        **kw,
    )


# Batches in insertion order: the job writes a step's rows as the step is decided, so a
# deferral and the later decision of the same request arrive in different batches.
FIRST = [
    req("w1", "welcome", "c1"),
    req("w2", "welcome", "c2"),
    req("w3", "welcome", "c3", status="suppressed", reason="unsubscribed"),
    # deferred by quiet hours, sent in the next batch
    deferred("a1", "abandoned_cart", "c4", "quiet_hours", 0),
    # deferred by the frequency cap twice, still waiting at the end
    deferred("a2", "abandoned_cart", "c5", "frequency_cap", 0),
    req("a3", "abandoned_cart", "c6", status="suppressed", reason="hard_bounce"),
    # deferred, then too late: skipped as stale
    deferred("a4", "abandoned_cart", "c7", "quiet_hours", 0, step=2),
    req("a5", "abandoned_cart", "c8"),
    req("p1", "post_purchase", "c9", category="transactional", cart_id=None, product_ids=[]),
]
SECOND = [
    req("a1", "abandoned_cart", "c4", deferrals=1, emitted_at=STORE_T0 + HOUR + 250),
    deferred("a2", "abandoned_cart", "c5", "frequency_cap", 1),
    req("a4", "abandoned_cart", "c7", step=2, status="skipped", reason="stale", deferrals=1),
]
EMAIL_BATCHES = [FIRST, SECOND, SECOND]  # the last one is a replay: it must change nothing
RECOVERIES = [
    recovery_row("c4", "o4", "a1", 1, 100.0, reminded_at=STORE_T0 + HOUR),
    recovery_row("c8", "o8", "a5", 1, 50.5),
]


def reference(emails: list[dict], recoveries: list[dict]) -> dict[str, list[tuple]]:
    """The three views computed in Python from rows in insertion order."""
    final: dict[str, dict] = {}
    for row in emails:
        final[row["request_id"]] = row  # the last inserted row of a request wins
    decisions = Counter(
        (r["campaign"], r["step"], r["status"], r["reason"]) for r in final.values()
    )
    suppressions = Counter(
        (r["campaign"], r["reason"])
        for r in final.values()
        if r["status"] in ("suppressed", "skipped")
    )
    figures: dict[str, dict] = defaultdict(
        lambda: (
            dict.fromkeys(("sent", "deferred", "waiting", "suppressed", "skipped", "recoveries"), 0)
            | {"revenue_recovered": 0.0}
        )
    )
    for r in final.values():
        f = figures[r["campaign"]]
        f["sent"] += r["status"] == "sent"
        f["deferred"] += r["deferrals"] > 0 or r["status"] == "deferred"
        f["waiting"] += r["status"] == "deferred"
        f["suppressed"] += r["status"] == "suppressed"
        f["skipped"] += r["status"] == "skipped"
    once = {(r["customer_id"], r["order_id"]): r for r in recoveries}  # its sorting key
    for r in once.values():
        reminder = final.get(r["reminder_request_id"])
        f = figures["" if reminder is None else reminder["campaign"]]
        f["recoveries"] += 1
        f["revenue_recovered"] += r["revenue"]
    return {
        "campaign_decisions": sorted((*key, n) for key, n in decisions.items()),
        "campaign_summary": sorted((c, *f.values()) for c, f in figures.items()),
        "campaign_suppressions": sorted((*key, n) for key, n in suppressions.items()),
    }


def write_script(store, batches: list[list[dict]], recoveries: list[dict]) -> None:
    for batch in batches:
        store.insert_rows("email_requests", batch)
    store.insert_rows("cart_recoveries", recoveries)
    store.insert_rows("cart_recoveries", recoveries[:1])  # a replayed purchase


def view_rows(store, view: str) -> list[tuple]:
    return store.query(f"SELECT * FROM {view}")[1]


# --------------------------------------------------------------------------- views


def test_campaign_views_match_the_reference_over_the_scripted_rows(store):
    write_script(store, EMAIL_BATCHES, RECOVERIES)
    expected = reference([row for batch in EMAIL_BATCHES for row in batch], RECOVERIES)
    for view in CAMPAIGN_VIEWS:
        assert view_rows(store, view) == expected[view], view


def test_campaign_views_literal_figures(store):
    """A sanity anchor for the reference: abandoned_cart and welcome spelled out."""
    write_script(store, EMAIL_BATCHES, RECOVERIES)
    columns, rows = store.query("SELECT * FROM campaign_summary")
    assert columns == [
        "campaign",
        "sent",
        "deferred",
        "waiting",
        "suppressed",
        "skipped",
        "recoveries",
        "revenue_recovered",
    ]
    assert rows == [
        # a1 deferred then sent, a5 sent; a1, a2 (waiting) and a4 (then stale) were deferred
        ("abandoned_cart", 2, 3, 1, 1, 1, 2, 150.5),
        ("post_purchase", 1, 0, 0, 0, 0, 0, 0.0),
        ("welcome", 2, 0, 0, 1, 0, 0, 0.0),
    ]
    columns, rows = store.query(
        "SELECT * FROM campaign_decisions WHERE campaign = 'abandoned_cart'"
    )
    assert columns == ["campaign", "step", "status", "reason", "requests"]
    assert rows == [
        ("abandoned_cart", 1, "deferred", "frequency_cap", 1),
        ("abandoned_cart", 1, "sent", "", 2),
        ("abandoned_cart", 1, "suppressed", "hard_bounce", 1),
        ("abandoned_cart", 2, "skipped", "stale", 1),
    ]
    columns, rows = store.query("SELECT * FROM campaign_suppressions")
    assert columns == ["campaign", "reason", "requests"]
    assert rows == [
        ("abandoned_cart", "hard_bounce", 1),
        ("abandoned_cart", "stale", 1),
        ("welcome", "unsubscribed", 1),
    ]


def test_the_final_row_of_a_request_carries_its_guard_columns(store):
    write_script(store, EMAIL_BATCHES, RECOVERIES)
    _, rows = store.query(
        "SELECT request_id, status, reason, category, deferrals, "
        "toUnixTimestamp64Milli(deferred_until) FROM email_requests FINAL "
        "WHERE request_id IN ('a1', 'a2', 'a4', 'p1') ORDER BY request_id"
    )
    assert rows == [
        ("a1", "sent", "", "marketing", 1, None),
        ("a2", "deferred", "frequency_cap", "marketing", 1, STORE_T0 + 2 * HOUR),
        ("a4", "skipped", "stale", "marketing", 1, None),
        ("p1", "sent", "", "transactional", 0, None),
    ]


def test_deferred_and_sent_rows_in_one_batch_the_later_row_wins(store):
    rows = [
        deferred("r1", "welcome", "c1", "collision", 0),
        req("r1", "welcome", "c1", deferrals=1),
        req("r2", "welcome", "c2", status="skipped", reason="collision"),
    ]
    store.insert_rows("email_requests", rows)
    expected = reference(rows, [])
    for view in CAMPAIGN_VIEWS:
        assert view_rows(store, view) == expected[view], view
    assert view_rows(store, "campaign_summary") == [("welcome", 1, 1, 0, 0, 1, 0, 0.0)]


def test_campaign_summary_keeps_a_recovery_whose_reminder_row_is_missing(store):
    emails = [req("w1", "welcome", "c1"), req("a1", "abandoned_cart", "c2")]
    recoveries = [
        recovery_row("c2", "o2", "a1", 1, 20.0),
        recovery_row("c9", "o9", "r-missing", 1, 10.0),
    ]
    write_script(store, [emails], recoveries)
    expected = reference(emails, recoveries)
    assert (
        view_rows(store, "campaign_summary")
        == expected["campaign_summary"]
        == [
            ("", 0, 0, 0, 0, 0, 1, 10.0),
            ("abandoned_cart", 1, 0, 0, 0, 0, 1, 20.0),
            ("welcome", 1, 0, 0, 0, 0, 0, 0.0),
        ]
    )


def test_campaign_views_of_an_empty_store_are_empty(store):
    for view in CAMPAIGN_VIEWS:
        assert view_rows(store, view) == [], view


# --------------------------------------------------------------------------- row conversion


def test_guard_columns_are_converted_and_checked():
    row = email_row("r1", status="deferred", reason="quiet_hours", deferrals=3)
    row["deferred_until"] = STORE_T0 + 90 * MINUTE + 7
    values = convert_row("email_requests", row)
    assert values[-3:] == ("marketing", 3, STORE_T0 + 90 * MINUTE + 7)
    assert (
        json_ready("email_requests", dict(row))["deferred_until"] == (STORE_T0 + 5_400_007) / 1000
    )
    assert json_ready("email_requests", email_row("r2"))["deferred_until"] is None
    for value, message in [
        (-1, "column 'deferrals': integer out of range for UInt16"),
        (1 << 16, "column 'deferrals': integer out of range for UInt16"),
        (True, "column 'deferrals': expected an integer (UInt16), got bool"),
    ]:
        with pytest.raises(ValueError) as info:
            convert_row("email_requests", {**row, "deferrals": value})
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^column 'category': expected a string, got None$"):
        convert_row("email_requests", {**row, "category": None})
    with pytest.raises(ValueError, match=r"^column 'deferred_until': expected epoch millis"):
        convert_row("email_requests", {**row, "deferred_until": "soon"})
    del row["deferrals"]
    with pytest.raises(ValueError, match=r"^missing column 'deferrals'$"):
        convert_row("email_requests", row)


# --------------------------------------------------------------------------- upgrade


OLD_COLUMNS = (
    "request_id, campaign, step, customer_id, status, reason, subject, due_at, emitted_at, "
    "cart_id, cart_value, currency, product_ids"
)


def test_an_existing_deployment_at_version_5_upgrades_and_keeps_its_rows(tmp_path):
    """A database created by 001-005 with rows in it: 006 and 007 apply, old rows read as
    category '', deferrals 0, deferred_until NULL, and the views count them."""
    old_ddl = tmp_path / "ddl"
    old_ddl.mkdir()
    for path in sorted(DDL_DIR.glob("00[1-5]_*.sql")):
        shutil.copy(path, old_ddl / path.name)
    # its own engine in a child process: this process hosts the module's chdb path
    handle = get_client("chdb://" + str(tmp_path / "clickhouse"), hosted=True)
    try:
        assert handle.migrate(old_ddl) == 5
        handle.command(
            f"INSERT INTO email_requests ({OLD_COLUMNS}) VALUES "
            "('old-1', 'cart_abandon', 1, 'c1', 'sent', '', 'Step 1', "
            f"fromUnixTimestamp64Milli(toInt64({STORE_T0}), 'UTC'), "
            f"fromUnixTimestamp64Milli(toInt64({STORE_T0 + 250}), 'UTC'), "
            "'cart-c1', 42.5, 'EUR', ['p1']), "
            "('old-2', 'cart_abandon', 1, 'c2', 'suppressed', 'unsubscribed', 'Step 1', "
            f"fromUnixTimestamp64Milli(toInt64({STORE_T0}), 'UTC'), "
            f"fromUnixTimestamp64Milli(toInt64({STORE_T0 + 250}), 'UTC'), "
            "NULL, 0, 'EUR', [])"
        )
        handle.insert_rows("cart_recoveries", [recovery_row("c1", "o1", "old-1", 1, 30.0)])

        assert handle.migrate(DDL_DIR) == SCHEMA_VERSION
        _, applied = handle.query(
            "SELECT version, name FROM schema_migrations FINAL WHERE version > 5 ORDER BY version"
        )
        assert applied == [(6, "campaign_guards"), (7, "campaign_views")]
        _, columns = handle.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = 'email_requests' ORDER BY position"
        )
        assert [tuple(c) for c in columns] == [
            (c.name, c.ch_type) for c in COLUMNS["email_requests"]
        ]
        _, old = handle.query(
            "SELECT request_id, status, reason, product_ids, category, deferrals, "
            "isNull(deferred_until) FROM email_requests FINAL ORDER BY request_id"
        )
        assert [tuple(r) for r in old] == [
            ("old-1", "sent", "", ["p1"], "", 0, True),
            ("old-2", "suppressed", "unsubscribed", [], "", 0, True),
        ]

        # the job's new rows go in next to them
        handle.insert_rows(
            "email_requests",
            [deferred("new-1", "cart_abandon", "c3", "quiet_hours", 0)],
        )
        old_rows = [
            req("old-1", "cart_abandon", "c1", category=""),
            req(
                "old-2",
                "cart_abandon",
                "c2",
                category="",
                status="suppressed",
                reason="unsubscribed",
            ),
        ]
        expected = reference(
            [*old_rows, deferred("new-1", "cart_abandon", "c3", "quiet_hours", 0)],
            [recovery_row("c1", "o1", "old-1", 1, 30.0)],
        )
        for view in CAMPAIGN_VIEWS:
            assert [tuple(r) for r in handle.query(f"SELECT * FROM {view}")[1]] == expected[view]
        assert [tuple(r) for r in handle.query("SELECT * FROM campaign_summary")[1]] == [
            ("cart_abandon", 1, 1, 1, 1, 0, 1, 30.0)
        ]

        # a migration interrupted before it was recorded runs again harmlessly
        handle.command("DELETE FROM schema_migrations WHERE version > 5")
        assert handle.migrate(DDL_DIR) == SCHEMA_VERSION
        assert handle.migrate(DDL_DIR) == SCHEMA_VERSION
        assert handle.query("SELECT count() FROM email_requests FINAL")[1][0][0] == 3
    finally:
        handle.close()
