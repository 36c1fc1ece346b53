"""Pure parts of udfs/clickhouse/: DSNs, backoff, row conversion, error classes, SQL splitting,
and write_batch's retry/bisection logic against in-memory fake stores (no ClickHouse)."""

from __future__ import annotations

import math

import pytest
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
)

from tests.factories import ROOT, STORE_T0, Backoffs, email_row
from udfs.clickhouse.client import get_client
from udfs.clickhouse.dsn import ENV_CLICKHOUSE_PASSWORD, DsnError, resolve_dsn
from udfs.clickhouse.errors import RowRejected, StoreError, TransientStoreError, classify_error
from udfs.clickhouse.migrations import discover_migrations, split_sql
from udfs.clickhouse.schema import COLUMNS, TABLES, convert_row
from udfs.clickhouse.writer import RetryPolicy, backoff_ceiling_ms, backoff_ms, write_batch

# --------------------------------------------------------------------------- resolve_dsn


def test_default_dsn_is_absolute_chdb_under_base_dir(tmp_path):
    assert resolve_dsn(None, tmp_path) == f"chdb://{tmp_path.resolve()}/var/clickhouse"
    assert resolve_dsn("", tmp_path) == f"chdb://{tmp_path.resolve()}/var/clickhouse"


def test_relative_chdb_paths_resolve_against_base_dir(tmp_path):
    base = tmp_path.resolve()
    assert resolve_dsn("chdb://data/ch", tmp_path) == f"chdb://{base}/data/ch"
    assert resolve_dsn("chdb:data/ch", tmp_path) == f"chdb://{base}/data/ch"
    assert resolve_dsn("chdb://./data/../ch/", tmp_path) == f"chdb://{base}/ch"


def test_absolute_chdb_path_is_kept_and_normalised(tmp_path):
    assert resolve_dsn("chdb:///srv/inboxflow/ch", tmp_path) == "chdb:///srv/inboxflow/ch"
    assert resolve_dsn("chdb:///srv/x/../inboxflow/ch/", tmp_path) == "chdb:///srv/inboxflow/ch"


def test_http_dsns_with_user_are_returned_unchanged(tmp_path):
    assert (
        resolve_dsn("http://analyst@ch.internal:8123/shop", tmp_path)
        == "http://analyst@ch.internal:8123/shop"
    )
    assert resolve_dsn("https://ch.internal:8443/shop", tmp_path) == "https://ch.internal:8443/shop"


def test_password_in_dsn_is_refused_naming_the_env_variable(tmp_path):
    with pytest.raises(DsnError) as info:
        resolve_dsn("http://analyst:secret@ch.internal:8123/shop", tmp_path)
    assert str(info.value) == (
        "ClickHouse DSN for host 'ch.internal' contains a password; "
        f"put it in the environment variable {ENV_CLICKHOUSE_PASSWORD} instead"
    )
    assert "secret" not in str(info.value)


def test_unsupported_scheme_error_lists_accepted_forms(tmp_path):
    with pytest.raises(DsnError) as info:
        resolve_dsn("clickhouse://ch.internal:9000/shop", tmp_path)
    assert str(info.value) == (
        "ClickHouse DSN scheme 'clickhouse' is not supported; expected one of: "
        "chdb:///absolute/path, chdb://relative/path, http(s)://user@host:8123/database"
    )


@pytest.mark.parametrize(
    ("dsn", "message_part"),
    [
        ("/var/lib/ch", "has no scheme"),
        ("chdb://memory", "in-memory chdb engine loses every row"),
        ("chdb://", "in-memory chdb engine loses every row"),
        ("chdb:///srv/ch?udf_path=/x", "chdb options (?...) are not supported"),
        ("http://:8123/shop", "has no host"),
        ("http://ch.internal:port/shop", "Port could not be cast"),
    ],
)
def test_malformed_dsns_are_refused(tmp_path, dsn, message_part):
    with pytest.raises(DsnError) as info:
        resolve_dsn(dsn, tmp_path)
    assert message_part in str(info.value)


def test_get_client_refuses_relative_chdb_dsn():
    with pytest.raises(DsnError) as info:
        get_client("chdb://var/clickhouse")
    assert "is relative; pass it through resolve_dsn first" in str(info.value)


# --------------------------------------------------------------------------- backoff


def test_backoff_ceiling_doubles_from_base_up_to_cap():
    policy = RetryPolicy(base_ms=100, cap_ms=10_000)
    ceilings = [backoff_ceiling_ms(i, policy) for i in range(10)]
    assert ceilings == [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]


def test_backoff_is_full_jitter_over_the_ceiling():
    policy = RetryPolicy(base_ms=100, cap_ms=1_000)
    assert backoff_ms(0, policy, lambda: 0.25) == 25.0
    assert backoff_ms(3, policy, lambda: 0.5) == 400.0
    assert backoff_ms(4, policy, lambda: 0.5) == 500.0  # ceiling 1600 capped to 1000
    assert backoff_ms(2, policy, lambda: 0.0) == 0.0


def test_backoff_after_very_many_retries_stays_at_cap():
    policy = RetryPolicy()
    assert backoff_ceiling_ms(100_000, policy) == 10_000


@pytest.mark.parametrize(
    "kwargs", [{"base_ms": 0}, {"base_ms": 500, "cap_ms": 100}, {"max_attempts": 0}]
)
def test_invalid_retry_policies_are_refused(kwargs):
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


# --------------------------------------------------------------------------- write_batch with fakes


class FakeStore:
    """Records accepted rows; fails the first ``transient`` calls, rejects batches with a
    poisoned request id as a whole (like a server parse error would)."""

    def __init__(self, transient: int = 0, poison: frozenset[str] = frozenset()):
        self.transient = transient
        self.poison = poison
        self.calls: list[list[str]] = []
        self.rows: list[dict] = []

    def insert_rows(self, table, rows):
        self.calls.append([row["request_id"] for row in rows])
        if self.transient:
            self.transient -= 1
            raise TransientStoreError("Connection refused")
        if any(row["request_id"] in self.poison for row in rows):
            raise RowRejected("Code: 27. DB::Exception: Cannot parse input")
        self.rows.extend(rows)


def test_write_batch_retries_forever_by_default_with_sleeps_bounded_by_cap():
    fake = FakeStore(transient=20)
    rows = [email_row("r1"), email_row("r2")]
    backoffs = Backoffs()
    retry = RetryPolicy(base_ms=100, cap_ms=1_000)
    assert backoffs.write(fake, "email_requests", rows, retry, rand=0.999) == []
    assert fake.rows == rows
    assert len(fake.calls) == 21
    sleeps = backoffs.sleeps
    assert len(sleeps) == 20
    assert max(sleeps) == pytest.approx(0.999)
    assert sleeps[:5] == pytest.approx([0.0999, 0.1998, 0.3996, 0.7992, 0.999])


def test_write_batch_gives_up_after_max_attempts_and_reraises():
    fake = FakeStore(transient=5)
    backoffs = Backoffs()
    with pytest.raises(TransientStoreError, match="Connection refused"):
        backoffs.write(fake, "email_requests", [email_row("r1")], RetryPolicy(max_attempts=3), 0.5)
    assert len(fake.calls) == 3
    assert backoffs.sleeps == [0.05, 0.1]
    assert backoffs.retries == [(1, 0.05, "Connection refused"), (2, 0.1, "Connection refused")]
    assert fake.rows == []


def test_write_batch_bisects_a_server_rejection_down_to_the_bad_row():
    fake = FakeStore(poison=frozenset({"r5"}))
    rows = [email_row(f"r{i}") for i in range(8)]
    rejected = write_batch(fake, "email_requests", rows, retry=RetryPolicy(), sleep=lambda s: None)
    assert [row["request_id"] for row in fake.rows] == ["r0", "r1", "r2", "r3", "r4", "r6", "r7"]
    assert rejected == [
        (
            rows[5],
            "email_requests request_id='r5' customer_id='c-r5': "
            "Code: 27. DB::Exception: Cannot parse input",
        )
    ]
    # whole, left half ok, right half, [r4 r5], r4 ok, r5 alone rejected, [r6 r7] ok
    assert fake.calls == [
        [f"r{i}" for i in range(8)],
        ["r0", "r1", "r2", "r3"],
        ["r4", "r5", "r6", "r7"],
        ["r4", "r5"],
        ["r4"],
        ["r5"],
        ["r6", "r7"],
    ]


def test_write_batch_of_nothing_makes_no_call():
    fake = FakeStore()
    assert write_batch(fake, "email_requests", [], retry=RetryPolicy()) == []
    assert fake.calls == []


# --------------------------------------------------------------------------- row conversion


def test_convert_row_orders_values_like_the_table_columns():
    values = convert_row("email_requests", email_row("r1", cart_id=None, cart_value=3))
    assert values == (
        "r1",
        "cart_abandon",
        1,
        "c-r1",
        "sent",
        "",
        "Step 1",
        STORE_T0,
        STORE_T0 + 250,
        None,
        3.0,
        "EUR",
        ["p1", "p2"],
        "marketing",
        0,
        None,
    )
    assert type(values[10]) is float


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"step": "x"}, "column 'step': expected an integer (UInt8), got str"),
        ({"step": True}, "column 'step': expected an integer (UInt8), got bool"),
        ({"step": 256}, "column 'step': integer out of range for UInt8"),
        ({"customer_id": None}, "column 'customer_id': expected a string, got None"),
        (
            {"cart_value": math.nan},
            "column 'cart_value': expected a finite number, got a non-finite float",
        ),
        ({"due_at": 1.5}, "column 'due_at': expected epoch milliseconds (int), got float"),
        ({"due_at": 10**14}, "column 'due_at': epoch milliseconds outside 1900..2299"),
        ({"extra": 1, "zzz": 2}, "unknown column(s) 'extra', 'zzz'"),
    ],
)
def test_convert_row_names_the_column_and_problem(overrides, message):
    with pytest.raises(ValueError) as info:
        convert_row("email_requests", {**email_row("r1"), **overrides})
    assert str(info.value) == message


def test_convert_row_reports_a_missing_key():
    row = email_row("r1")
    del row["subject"]
    with pytest.raises(ValueError, match=r"^missing column 'subject'$"):
        convert_row("email_requests", row)


def test_profile_maps_arrays_and_bools_are_checked():
    row = {c.name: None for c in COLUMNS["customer_profiles"]}
    row.update(
        customer_id="c1",
        first_seen=STORE_T0,
        last_seen=STORE_T0,
        event_counts={"page_view": -1},
        revenue_total=0.0,
        order_count=0,
        avg_order_value=0.0,
        recent_products=[],
        favourite_categories=[],
        cart_value=0.0,
        cart_items=0,
        journey_status="idle",
        emails_sent=0,
        unsubscribed=0,
        updated_at=STORE_T0,
        version=1,
    )
    message = "^column 'event_counts': expected UInt64 counts, got int for key 'page_view'$"
    with pytest.raises(ValueError, match=message):
        convert_row("customer_profiles", row)
    row["event_counts"] = {"page_view": 2}
    row["recent_products"] = ["p1", 7]
    message = "^column 'recent_products': expected a list of strings, got an item of type int$"
    with pytest.raises(ValueError, match=message):
        convert_row("customer_profiles", row)
    row["recent_products"] = ("p1",)
    values = convert_row("customer_profiles", row)
    assert values[12] == ["p1"] and values[18] is False


def test_unknown_table_is_a_store_error():
    with pytest.raises(StoreError, match="unknown table 'profiles'"):
        convert_row("profiles", {})


# --------------------------------------------------------------------------- error classification


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (OperationalError("Error executing HTTP request"), TransientStoreError),
        (DatabaseError("busy", code=202), TransientStoreError),
        (
            DatabaseError("Code: 241. DB::Exception: Memory limit (total) exceeded"),
            TransientStoreError,
        ),
        (DatabaseError("Code: 252. DB::Exception: Too many parts"), TransientStoreError),
        (DatabaseError("Code: 27. DB::Exception: Cannot parse input"), RowRejected),
        (DatabaseError("bad", code=53), RowRejected),
        (
            DatabaseError("Code: 469. DB::Exception: Constraint `c` for table x is violated"),
            RowRejected,
        ),
        (DataError("Invalid None value in non-Nullable column"), RowRejected),
        (ConnectionResetError(104, "Connection reset by peer"), TransientStoreError),
        (TimeoutError("timed out"), TransientStoreError),
        (ValueError("invalid literal for int()"), RowRejected),
    ],
)
def test_classify_error_sorts_driver_errors(exc, kind):
    classified = classify_error(exc)
    assert type(classified) is kind


@pytest.mark.parametrize(
    "exc",
    [
        DatabaseError("Code: 60. DB::Exception: Unknown table expression identifier 'nope'"),
        DatabaseError("Code: 516. DB::Exception: default: Authentication failed"),
        RuntimeError("something else"),
    ],
)
def test_configuration_errors_are_neither_transient_nor_rejections(exc):
    assert type(classify_error(exc)) is StoreError


# --------------------------------------------------------------------------- migrations files


def test_split_sql_ignores_semicolons_in_strings_and_comments():
    script = (
        "-- header; not a statement\n"
        "CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;\n"
        "/* block; comment */\n"
        "SELECT 'it\\'s;', \"q;\", `b;c` -- trailing; comment\n"
        ";\n-- only a comment;\n"
    )
    assert split_sql(script) == [
        "-- header; not a statement\nCREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory",
        "/* block; comment */\nSELECT 'it\\'s;', \"q;\", `b;c` -- trailing; comment",
    ]


def test_repository_migrations_are_numbered_1_to_7():
    migrations = discover_migrations(ROOT / "conf" / "clickhouse")
    assert [(m.version, m.name) for m in migrations] == [
        (1, "customer_profiles"),
        (2, "email_requests"),
        (3, "cart_recoveries"),
        (4, "views"),
        (5, "email_request_products"),
        (6, "campaign_guards"),
        (7, "campaign_views"),
    ]


def test_badly_named_or_duplicate_migration_files_are_refused(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1")
    (tmp_path / "01_b.sql").write_text("SELECT 1")
    with pytest.raises(StoreError, match="01_b.sql is not named NNN_name.sql"):
        discover_migrations(tmp_path)
    (tmp_path / "01_b.sql").unlink()
    (tmp_path / "0001_c.sql").write_text("SELECT 1")
    with pytest.raises(StoreError, match="migration version 1 of 001_a.sql is 0 or used twice"):
        discover_migrations(tmp_path)


def test_job_rows_carry_exactly_the_store_columns():
    """The writer sends the customer function's rows to ClickHouse as JSON, where a missing
    key would silently become the column default: the keys must be exactly the columns."""
    from tests import factories as f
    from udfs.core.journey import CustomerState

    logic, state, rows = f.customer_logic(), CustomerState(), []
    for event in (f.identify("c", f.T0), f.cart_add("c", f.T0), f.purchase("c", f.T0 + 2 * f.HOUR)):
        decision = logic.on_event(state, event, f.MIN_WATERMARK)
        rows += decision.rows
        rows.append(("customer_profiles", logic.profile_row(state, decision.snapshot)))
    tables = {table for table, _ in rows}
    assert tables == set(TABLES)
    for table, row in rows:
        assert list(row) == [c.name for c in COLUMNS[table]], table


# --------------------------------------------------------------------------- freshness gauges


def test_freshness_window_summarizes_the_last_rows_by_nearest_rank():
    from udfs.flink.writer_function import FreshnessWindow

    window = FreshnessWindow(size=100)
    assert [window.stat(s) for s in FreshnessWindow.STATS] == [0, 0, 0, 0]  # nothing yet
    window.add([5000] * 50)  # pushed out of the window below
    window.add(list(range(100, 0, -1)))  # 100 .. 1 ms
    window.add([])
    assert (window.count, window.last, len(window.samples)) == (150, 1, 100)
    assert {s: window.stat(s) for s in FreshnessWindow.STATS} == {
        "p50": 50,
        "p95": 95,
        "p99": 99,
        "max": 100,
    }
    window.add([7])  # the 100 ms row leaves, a second 7 arrives: the summary follows
    assert (window.stat("max"), window.stat("p50"), window.last) == (99, 49, 7)
