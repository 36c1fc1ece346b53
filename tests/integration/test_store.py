"""udfs/clickhouse/ and job/db.py against the real ClickHouse engine (chdb through
clickhouse-connect).

One chdb directory per module and one shared store handle: chdb hosts a single engine path per
process (docs/DESIGN.md#chdb-lock). Each test starts from empty tables.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import textwrap
import threading

import pytest

from job import db
from tests.factories import (
    HOUR,
    ROOT,
    STORE_T0,
    Backoffs,
    email_row,
    profile_row,
    recovery_row,
)
from udfs.clickhouse.client import get_client
from udfs.clickhouse.dsn import resolve_dsn
from udfs.clickhouse.errors import RowRejected, StoreError, StoreLockedError, TransientStoreError
from udfs.clickhouse.schema import COLUMNS, TABLES, convert_row, json_ready
from udfs.clickhouse.writer import RetryPolicy, write_batch

DDL_DIR = ROOT / "conf" / "clickhouse"
SCHEMA_VERSION = 7
NO_WAIT = RetryPolicy(base_ms=100, cap_ms=300, max_attempts=None)


@pytest.fixture(scope="module")
def chdb_dsn(tmp_path_factory) -> str:
    return resolve_dsn("chdb://" + str(tmp_path_factory.mktemp("clickhouse") / "db"), ROOT)


@pytest.fixture(scope="module")
def migrated(chdb_dsn):
    """The module's shared handle, and the versions seen migrating an empty database twice."""
    handle = get_client(chdb_dsn)
    versions = (handle.schema_version(), handle.migrate(DDL_DIR), handle.migrate(DDL_DIR))
    yield handle, versions
    handle.close()


@pytest.fixture
def store(migrated):
    handle = migrated[0]
    for table in TABLES:
        handle.command(f"TRUNCATE TABLE {table}")
    return handle


def count(store, sql: str) -> int:
    return store.query(sql)[1][0][0]


# --------------------------------------------------------------------------- migrations


def test_migrations_from_empty_database_twice_reach_the_same_version(migrated):
    handle, versions = migrated
    assert versions == (0, SCHEMA_VERSION, SCHEMA_VERSION)
    assert handle.schema_version() == SCHEMA_VERSION
    _, rows = handle.query("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
    assert rows == [
        (1, "customer_profiles"),
        (2, "email_requests"),
        (3, "cart_recoveries"),
        (4, "views"),
        (5, "email_request_products"),
        (6, "campaign_guards"),
        (7, "campaign_views"),
    ]
    _, objects = handle.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    )
    assert objects == [
        ("campaign_decisions", "View"),
        ("campaign_summary", "View"),
        ("campaign_suppressions", "View"),
        ("cart_recoveries", "ReplacingMergeTree"),
        ("customer_profiles", "ReplacingMergeTree"),
        ("customer_profiles_latest", "View"),
        ("email_requests", "ReplacingMergeTree"),
        ("recovery_summary_by_step", "View"),
        ("schema_migrations", "ReplacingMergeTree"),
    ]


def test_table_columns_match_the_python_column_specs(migrated):
    handle, _ = migrated
    for table in TABLES:
        _, rows = handle.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = {t:String} ORDER BY position",
            {"t": table},
        )
        assert rows == [(c.name, c.ch_type) for c in COLUMNS[table]], table


def test_a_new_migration_file_is_applied_once(migrated, tmp_path):
    handle, _ = migrated
    for path in DDL_DIR.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    probe = SCHEMA_VERSION + 1
    (tmp_path / f"{probe:03d}_probe.sql").write_text(
        "-- a; comment\nCREATE TABLE IF NOT EXISTS migration_probe (s String DEFAULT 'a;b') "
        "ENGINE = Memory;\n"
        "INSERT INTO migration_probe VALUES ('x;y');\n"
    )
    assert handle.migrate(tmp_path) == probe
    assert handle.migrate(tmp_path) == probe
    assert handle.query("SELECT s FROM migration_probe")[1] == [("x;y",)]
    handle.command("DROP TABLE migration_probe")
    handle.command(f"DELETE FROM schema_migrations WHERE version = {probe}")
    assert handle.schema_version() == SCHEMA_VERSION


# --------------------------------------------------------------------------- idempotent writes


LATEST_SQL = "SELECT * FROM customer_profiles_latest ORDER BY customer_id"


def test_same_profile_batch_written_twice_reads_back_once_with_exact_values(store):
    batch = [
        profile_row("c1", 1),
        profile_row("c1", 2, last_purchase_at=STORE_T0 + 90_123),
        profile_row("c2", 1),
    ]
    store.insert_rows("customer_profiles", batch)
    store.insert_rows("customer_profiles", batch)
    columns, rows = store.query(LATEST_SQL)
    assert columns == [c.name for c in COLUMNS["customer_profiles"]]
    got = [dict(zip(columns, row, strict=True)) for row in rows]
    assert [(p["customer_id"], p["version"]) for p in got] == [("c1", 2), ("c2", 1)]
    c1 = got[0]
    assert convert_row("customer_profiles", _epoch_ms_row(c1)) == convert_row(
        "customer_profiles", batch[1]
    )
    assert c1["last_purchase_at"].isoformat() == "2023-11-14T22:14:50.123000"
    assert c1["event_counts"] == {"page_view": 2, "cart_add": 1}
    assert c1["unsubscribed"] is False


@pytest.mark.parametrize(
    "ms", [STORE_T0 + 1, STORE_T0 + 999, 0, -1, -1_000, -2_208_988_800_000 + 7]
)
def test_timestamps_and_text_survive_the_json_transport_exactly(store, ms):
    odd = 'quote " backslash \\ newline \n tab \t émoji 🛒 <b>'
    store.insert_rows(
        "customer_profiles",
        [
            profile_row(
                "c1",
                1,
                first_seen=ms,
                last_purchase_at=ms,
                first_name=odd,
                recent_products=[odd, ""],
            )
        ],
    )
    _, rows = store.query(
        "SELECT toUnixTimestamp64Milli(first_seen), toUnixTimestamp64Milli(last_purchase_at), "
        "first_name, recent_products FROM customer_profiles"
    )
    assert rows == [(ms, ms, odd, [odd, ""])]


def test_every_millisecond_survives_the_json_transport(store):
    import random

    rng = random.Random(3)
    stamps = [rng.randrange(-2_208_988_800_000, 10_000_000_000_000) for _ in range(3000)]
    store.insert_rows(
        "customer_profiles", [profile_row(f"c{i}", 1, updated_at=ms) for i, ms in enumerate(stamps)]
    )
    _, rows = store.query(
        "SELECT toUnixTimestamp64Milli(updated_at) FROM customer_profiles "
        "ORDER BY toUInt32(substring(customer_id, 2))"
    )
    assert [r[0] for r in rows] == stamps


def test_batches_in_reverse_version_order_keep_the_newest_profile(store):
    for version in (5, 4, 3, 2, 1):
        store.insert_rows(
            "customer_profiles", [profile_row("c1", version), profile_row("c2", 6 - version)]
        )
    _, rows = store.query(
        "SELECT customer_id, version, journey_status, cart_items, revenue_total, recent_products "
        "FROM customer_profiles_latest ORDER BY customer_id"
    )
    assert rows == [
        ("c1", 5, "step5", 5, 50.0, ["p5", "p0"]),
        ("c2", 5, "step5", 5, 50.0, ["p5", "p0"]),
    ]
    assert count(store, "SELECT count() FROM customer_profiles_latest") == 2


def test_email_request_written_twice_counts_once(store):
    store.insert_rows("email_requests", [email_row("r1", "c1")])
    store.insert_rows("email_requests", [email_row("r1", "c1"), email_row("r2", "c2")])
    assert count(store, "SELECT count() FROM email_requests FINAL") == 2
    assert count(store, "SELECT count() FROM email_requests FINAL WHERE request_id = 'r1'") == 1
    assert store.query("SELECT reminders_sent FROM recovery_summary_by_step")[1] == [(2,)]


def test_recovery_summary_by_step_exact_figures(store):
    emails = [
        email_row("r1", "c1", step=1),
        email_row("r2", "c2", step=1),
        email_row("r3", "c3", step=1),
        email_row("r4", "c4", step=1),
        email_row("r5", "c1", step=2, due_at=STORE_T0 + HOUR),
        email_row("r6", "c2", step=2, due_at=STORE_T0 + HOUR),
        email_row(
            "r7", "c3", step=2, status="suppressed", reason="unsubscribed", due_at=STORE_T0 + HOUR
        ),
        email_row("r8", "c5", campaign="browse", step=1),
    ]
    recoveries = [
        recovery_row("c1", "o1", "r5", 2, 100.0),  # bought after the 2nd reminder
        recovery_row("c3", "o3", "r3", 1, 50.0),  # 2nd was suppressed: the 1st gets credit
        recovery_row("c4", "o4", "r4", 1, 25.5),
        recovery_row("c9", "o9", "r-missing", 1, 10.0),  # its reminder row never arrived
    ]
    store.insert_rows("email_requests", emails)
    store.insert_rows("cart_recoveries", recoveries)
    # a replay writes some of it again
    store.insert_rows("email_requests", [emails[0], emails[4]])
    store.insert_rows("cart_recoveries", recoveries[:1])
    columns, rows = store.query("SELECT * FROM recovery_summary_by_step")
    assert columns == [
        "campaign",
        "step",
        "reminders_sent",
        "carts_recovered",
        "recovery_rate",
        "revenue_recovered",
    ]
    assert rows == [
        ("", 1, 0, 1, 0.0, 10.0),
        ("browse", 1, 1, 0, 0.0, 0.0),
        ("cart_abandon", 1, 4, 2, 0.5, 75.5),
        ("cart_abandon", 2, 2, 1, 0.5, 100.0),
    ]


def test_two_threads_with_their_own_handles_share_the_engine(store, chdb_dsn):
    """Flink thread mode: two writer subtasks in one process, one client underneath."""

    def writer(prefix: str) -> None:
        handle = get_client(chdb_dsn)
        try:
            for batch in range(20):
                rows = [email_row(f"{prefix}-{batch}-{i}", f"{prefix}{i}") for i in range(25)]
                assert write_batch(handle, "email_requests", rows, retry=NO_WAIT) == []
        finally:
            handle.close()

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count(store, "SELECT count() FROM email_requests FINAL") == 1000
    assert store.schema_version() == SCHEMA_VERSION  # the module handle survived their close()


# --------------------------------------------------------------------------- write_batch


class FlakyStore:
    """Wraps the real store; its first ``failures`` insert calls raise a transient error."""

    def __init__(self, inner, failures: int):
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def _attempt(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise TransientStoreError("Connection reset by peer")

    def insert_rows(self, table, rows):
        self._attempt()
        self.inner.insert_rows(table, rows)

    def insert_json_lines(self, table, lines):
        self._attempt()
        self.inner.insert_json_lines(table, lines)


def test_write_batch_backs_off_on_transient_errors_and_loses_nothing(store):
    flaky = FlakyStore(store, failures=4)
    rows = [profile_row(f"c{i}", 1) for i in range(10)]
    backoffs = Backoffs()
    retry = RetryPolicy(base_ms=100, cap_ms=300)
    assert backoffs.write(flaky, "customer_profiles", rows, retry, rand=0.5) == []
    assert flaky.calls == 5
    assert backoffs.sleeps == [0.05, 0.1, 0.15, 0.15]  # 0.5 * min(300, 100 * 2**n) ms
    assert [r[:2] for r in backoffs.retries] == [(1, 0.05), (2, 0.1), (3, 0.15), (4, 0.15)]
    assert count(store, "SELECT count() FROM customer_profiles_latest") == 10


def test_bad_rows_are_returned_and_the_good_ones_inserted(store):
    rows = [email_row(f"r{i}", f"c{i}") for i in range(5)]
    rows[1]["step"] = "x"
    rows[3]["customer_id"] = None
    rejected = write_batch(store, "email_requests", rows, retry=NO_WAIT, sleep=lambda s: None)
    assert rejected == [
        (
            rows[1],
            "email_requests request_id='r1' customer_id='c1': column 'step': expected an integer "
            "(UInt8), got str",
        ),
        (
            rows[3],
            "email_requests request_id='r3' customer_id=None: column 'customer_id': expected a "
            "string, got None",
        ),
    ]
    _, ids = store.query("SELECT request_id FROM email_requests FINAL ORDER BY request_id")
    assert ids == [("r0",), ("r2",), ("r4",)]


def test_json_lines_rejected_by_the_engine_are_isolated_and_the_rest_inserted(store):
    """The writer's path: rows as JSON lines, checked by ClickHouse only. Bisection finds
    each row the engine refuses; every other row of the batch is written."""
    import orjson

    rows = [json_ready("email_requests", email_row(f"r{i}", f"c{i}")) for i in range(6)]
    rows[1]["step"] = "not a number"
    rows[4]["due_at"] = "yesterday-ish"
    lines = [orjson.dumps(r).decode() for r in rows]
    flaky = FlakyStore(store, failures=2)
    rejected = write_batch(
        flaky, "email_requests", lines, retry=NO_WAIT, sleep=lambda s: None, json_lines=True
    )
    assert [line for line, _ in rejected] == [lines[1], lines[4]]
    assert all(reason.startswith("email_requests request_id=") for _, reason in rejected)
    assert "customer_id='c1'" in rejected[0][1] and "customer_id='c4'" in rejected[1][1]
    _, got = store.query(
        "SELECT request_id, toUnixTimestamp64Milli(due_at), step "
        "FROM email_requests FINAL ORDER BY request_id"
    )
    assert got == [(f"r{i}", STORE_T0, 1) for i in (0, 2, 3, 5)]


def test_profile_without_customer_id_is_rejected_alone(store):
    rows = [profile_row("c1", 1), profile_row("c2", 1), profile_row("c3", 1)]
    rows[1]["customer_id"] = None
    del rows[2]["unsubscribed"]
    rejected = write_batch(store, "customer_profiles", rows, retry=NO_WAIT)
    assert [reason for _, reason in rejected] == [
        "customer_profiles customer_id=None version=1: column 'customer_id': expected a string, "
        "got None",
        "customer_profiles customer_id='c3' version=1: missing column 'unsubscribed'",
    ]
    assert store.query("SELECT customer_id FROM customer_profiles_latest")[1] == [("c1",)]


def test_engine_errors_are_classified(store):
    with pytest.raises(RowRejected, match="CANNOT_PARSE_TEXT"):
        store.query("SELECT toUInt8('x')")
    with pytest.raises(StoreError, match="UNKNOWN_TABLE") as info:
        store.query("SELECT * FROM no_such_table")
    assert type(info.value) is StoreError


def test_unreachable_http_server_is_a_transient_error():
    handle = get_client("http://default@127.0.0.1:9/default")
    try:
        with pytest.raises(TransientStoreError, match="Connection refused"):
            handle.query("SELECT 1")
    finally:
        handle.close()


def test_a_second_chdb_path_in_this_process_is_refused_clearly(migrated, tmp_path):
    other = get_client(resolve_dsn("chdb://" + str(tmp_path / "other"), ROOT))
    try:
        with pytest.raises(
            StoreLockedError, match="already has the chdb engine open at another path"
        ):
            other.query("SELECT 1")
    finally:
        other.close()


# --------------------------------------------------------------------------- CLI

QUERY_SQL = (
    "SELECT number * 10 AS n, concat('x', toString(number)) AS s, "
    "fromUnixTimestamp64Milli(toInt64(1700000000123), 'UTC') AS ts FROM numbers(2)"
)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (
            "table",
            (
                " n  s   ts\n"
                "--  --  ------------------------\n"
                " 0  x0  2023-11-14 22:13:20.123Z\n"
                "10  x1  2023-11-14 22:13:20.123Z\n"
                "(2 rows)\n"
            ),
        ),
        ("csv", "n,s,ts\n0,x0,2023-11-14 22:13:20.123Z\n10,x1,2023-11-14 22:13:20.123Z\n"),
    ],
)
def test_query_command_formats(migrated, chdb_dsn, fmt, expected):
    out, err = io.StringIO(), io.StringIO()
    code = db.cmd_query(
        argparse.Namespace(sql=QUERY_SQL, format=fmt, dsn=chdb_dsn), out=out, err=err
    )
    assert (code, out.getvalue(), err.getvalue()) == (0, expected, "")


def test_query_command_json(migrated, chdb_dsn):
    out = io.StringIO()
    assert (
        db.cmd_query(argparse.Namespace(sql=QUERY_SQL, format="json", dsn=chdb_dsn), out=out) == 0
    )
    assert json.loads(out.getvalue()) == [
        {"n": 0, "s": "x0", "ts": "2023-11-14T22:13:20.123Z"},
        {"n": 10, "s": "x1", "ts": "2023-11-14T22:13:20.123Z"},
    ]


def test_query_command_reports_sql_errors_without_traceback(migrated, chdb_dsn):
    out, err = io.StringIO(), io.StringIO()
    code = db.cmd_query(
        argparse.Namespace(sql="SELECT * FROM nope", format="table", dsn=chdb_dsn), out=out, err=err
    )
    assert code == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith(
        "error: Code: 60. DB::Exception: Unknown table expression identifier 'nope'"
    )


def test_migrate_command_prints_the_version(migrated, chdb_dsn):
    out = io.StringIO()
    assert db.cmd_migrate(argparse.Namespace(dsn=chdb_dsn, ddl_dir=DDL_DIR), out=out) == 0
    assert out.getvalue() == f"schema version {SCHEMA_VERSION} (was {SCHEMA_VERSION})\n"


def test_profile_command_shows_profile_emails_and_recoveries(store, chdb_dsn):
    store.insert_rows(
        "customer_profiles", [profile_row("c1", 1), profile_row("c1", 2, unsubscribed=True)]
    )
    store.insert_rows(
        "email_requests",
        [
            email_row("r2", "c1", step=2, due_at=STORE_T0 + HOUR),
            email_row("r1", "c1", step=1),
            email_row("r9", "c9"),
        ],
    )
    store.insert_rows(
        "cart_recoveries", [recovery_row("c1", "o1", "r2", 2, 99.5, reminded_at=STORE_T0 + HOUR)]
    )
    out, err = io.StringIO(), io.StringIO()
    assert db.cmd_profile(argparse.Namespace(customer_id="c1", dsn=chdb_dsn), out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[:21] == [
        "customer_id          : c1",
        "email                : c1@example.com",
        "first_name           : Ann",
        "locale               : de-DE",
        "timezone             : Europe/Berlin",
        "first_seen           : 2023-11-14 22:13:20.000Z",
        "last_seen            : 2023-11-14 22:15:20.000Z",
        'event_counts         : {"page_view":2,"cart_add":1}',
        "revenue_total        : 20.0",
        "order_count          : 2",
        "avg_order_value      : 10.0",
        "last_purchase_at     : NULL",
        'recent_products      : ["p2","p0"]',
        'favourite_categories : ["shoes"]',
        "cart_value           : 3.0",
        "cart_items           : 2",
        "journey_status       : step2",
        "emails_sent          : 2",
        "unsubscribed         : true",
        "updated_at           : 2023-11-14 22:15:20.000Z",
        "version              : 2",
    ]
    assert "\n".join(lines[21:]) == (
        "\n"
        "email history (2):\n"
        "  due_at                    campaign      step  status  reason  subject  cart_id  "
        "cart_value  currency  request_id\n"
        "  ------------------------  ------------  ----  ------  ------  -------  -------  "
        "----------  --------  ----------\n"
        "  2023-11-14 22:13:20.000Z  cart_abandon     1  sent            Step 1   cart-c1        "
        "42.5  EUR       r1\n"
        "  2023-11-14 23:13:20.000Z  cart_abandon     2  sent            Step 2   cart-c1        "
        "42.5  EUR       r2\n"
        "  (2 rows)\n"
        "\n"
        "cart recoveries (1):\n"
        "  purchased_at              order_id  cart_id  revenue  currency  reminder_step  "
        "reminded_at  "
        "             seconds_to_purchase  reminder_request_id\n"
        "  ------------------------  --------  -------  -------  --------  -------------  "
        "------------------------  "
        "-------------------  -------------------\n"
        "  2023-11-15 00:13:20.000Z  o1        cart-c1     99.5  EUR                   2  "
        "2023-11-14 23:13:20.000Z  "
        "             3600.0  r2\n"
        "  (1 row)"
    )
    assert err.getvalue() == ""


def test_profile_command_for_unknown_customer_exits_1(store, chdb_dsn):
    out, err = io.StringIO(), io.StringIO()
    assert (
        db.cmd_profile(argparse.Namespace(customer_id="nobody", dsn=chdb_dsn), out=out, err=err)
        == 1
    )
    assert err.getvalue() == "no profile for customer_id='nobody'\n"
    assert out.getvalue() == "\nemail history (0):\n\ncart recoveries (0):\n"


def _run_python(code: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_on_a_path_held_by_another_process_explains_instead_of_crashing(migrated, chdb_dsn):
    result = _run_python(
        f"""
        import argparse, sys
        from job import db
        sys.exit(db.cmd_query(argparse.Namespace(sql="SELECT 1", format="table", dsn={chdb_dsn!r})))
        """
    )
    assert result.returncode == 2, result.stderr
    assert (
        "is in use by another process. chdb lets one process at a time open a path" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_closing_every_handle_releases_the_path_for_another_process(tmp_path):
    """The job's writers close their handles at the end; an analyst's process can then open it."""
    dsn = resolve_dsn("chdb://" + str(tmp_path / "released"), ROOT)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
            import sys
            from pathlib import Path
            from udfs.clickhouse.client import get_client
            a, b = get_client({dsn!r}), get_client({dsn!r})
            a.migrate(Path({str(DDL_DIR)!r}))
            a.close()
            b.command("INSERT INTO email_requests (request_id) VALUES ('r1')")
            b.close()
            print("closed", flush=True)
            sys.stdin.readline()  # stay alive until the reader is done
            """
            ),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "closed\n"
        reader = _run_python(
            f"""
            from udfs.clickhouse.client import get_client
            s = get_client({dsn!r})
            print(s.query("SELECT count() FROM email_requests")[1][0][0])
            s.close()
            """
        )
        assert (reader.returncode, reader.stdout) == (0, "1\n"), reader.stderr
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0


def _epoch_ms_row(profile: dict) -> dict:
    """A profile read back from ClickHouse, with naive-UTC datetimes turned into epoch ms again."""
    import calendar

    def ms(value):
        return (
            None
            if value is None
            else calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000
        )

    out = dict(profile)
    for key in ("first_seen", "last_seen", "last_purchase_at", "updated_at"):
        out[key] = ms(out[key])
    return out
