"""udfs/clickhouse/host.py: the chdb engine in a child process, as the writer inside the Flink JVM
uses it (``store.get_client(dsn, hosted=True)``), against the real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.factories import ROOT, STORE_T0
from udfs.clickhouse.client import Store, get_client
from udfs.clickhouse.errors import RowRejected, StoreError, StoreLockedError, TransientStoreError
from udfs.clickhouse.writer import RetryPolicy, write_batch

DDL_DIR = ROOT / "conf" / "clickhouse"
SCHEMA_VERSION = 7


def request_line(
    request_id: str, customer_id: str = "c-1", due_at: object = STORE_T0 / 1000
) -> str:
    return json.dumps(
        {
            "request_id": request_id,
            "campaign": "abandoned_cart",
            "step": 1,
            "customer_id": customer_id,
            "email": f"{customer_id}@example.com",
            "subject": "Hi",
            "status": "sent",
            "reason": "",
            "due_at": due_at,
            "emitted_at": STORE_T0 / 1000,
            "cart_id": "cart-1",
            "cart_value": 10.0,
            "product_ids": ["p1"],
        }
    )


@pytest.fixture
def hosted(tmp_path):
    handle = get_client("chdb://" + str(tmp_path / "clickhouse"), hosted=True)
    assert handle.migrate(DDL_DIR) == SCHEMA_VERSION
    yield handle
    handle.close()


def host_pid(handle: Store) -> int:
    return handle._connection.client._proc.pid


def test_the_engine_never_loads_in_the_calling_process(tmp_path):
    """What the JVM needs: chdb (and its SIGSEGV handler) stays out of the caller."""
    code = textwrap.dedent(f"""
        import ctypes, json, sys
        from pathlib import Path
        from udfs.clickhouse.client import get_client
        s = get_client({"chdb://" + str(tmp_path / "clickhouse")!r}, hosted=True)
        version = s.migrate(Path({str(DDL_DIR)!r}))
        s.insert_json_lines("email_requests", [{request_line("r-1")!r}])
        rows = s.query("SELECT request_id, customer_id FROM email_requests")[1]
        s.close()
        buf = (ctypes.c_ulong * 4)()
        ctypes.CDLL(None).syscall(13, 11, None, buf, 8)  # rt_sigaction(SIGSEGV) -> old
        print(json.dumps({{"version": version, "rows": rows,
                          "chdb_loaded": any(m.startswith("chdb") for m in sys.modules),
                          "sigsegv_handler": buf[0]}}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "version": SCHEMA_VERSION,
        "rows": [["r-1", "c-1"]],
        "chdb_loaded": False,
        "sigsegv_handler": 0,
    }


def test_engine_errors_come_back_classified(hosted):
    with pytest.raises(RowRejected, match="Code: 41"):
        hosted.insert_json_lines("email_requests", [request_line("r-1", due_at="garbage")])
    with pytest.raises(StoreError, match="UNKNOWN_TABLE|Unknown table") as info:
        hosted.query("SELECT * FROM no_such_table")
    assert type(info.value) is StoreError
    hosted.insert_json_lines("email_requests", [request_line("r-2")])
    assert hosted.query("SELECT request_id FROM email_requests")[1] == [("r-2",)]


def test_a_killed_host_is_a_transient_error_and_is_replaced(hosted):
    hosted.insert_json_lines("email_requests", [request_line("r-1")])
    first = host_pid(hosted)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(TransientStoreError, match=f"pid {first}"):
        hosted.insert_json_lines("email_requests", [request_line("r-2")])
    hosted.insert_json_lines("email_requests", [request_line("r-2")])  # on a new host
    second = host_pid(hosted)
    assert second != first
    # the writer's path: write_batch retries through a killed host and loses nothing
    os.kill(second, signal.SIGKILL)
    retries = []
    rejected = write_batch(
        hosted,
        "email_requests",
        [request_line("r-3"), request_line("r-4")],
        retry=RetryPolicy(base_ms=10, cap_ms=50),
        json_lines=True,
        on_retry=lambda attempt, delay, error: retries.append((attempt, str(error))),
    )
    assert rejected == []
    assert [(attempt, f"pid {second}" in text) for attempt, text in retries] == [(1, True)]
    assert hosted.query("SELECT request_id FROM email_requests FINAL ORDER BY 1")[1] == [
        ("r-1",),
        ("r-2",),
        ("r-3",),
        ("r-4",),
    ]


def test_a_path_held_by_another_process_is_refused_clearly(tmp_path):
    dsn = "chdb://" + str(tmp_path / "clickhouse")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from udfs.clickhouse.client import get_client; s = get_client("
                f"{dsn!r}); s.query('SELECT 1'); print('ready', flush=True); "
                "sys.stdin.read()"
            ),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "ready\n"
        handle = get_client(dsn, hosted=True)
        try:
            with pytest.raises(StoreLockedError, match="in use by another process"):
                handle.query("SELECT 1")
        finally:
            handle.close()
    finally:
        holder.communicate("", timeout=60)


def test_close_stops_the_host_and_releases_the_path(tmp_path):
    path = tmp_path / "clickhouse"
    handle = get_client("chdb://" + str(path), hosted=True)
    handle.migrate(DDL_DIR)
    pid = host_pid(handle)
    handle.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    again = get_client("chdb://" + str(path), hosted=True)
    try:
        assert again.schema_version() == SCHEMA_VERSION
    finally:
        again.close()
