"""``make demo-shop`` as a person runs it: the Makefile target is the plain console script,
which runs here with ``--seconds`` (to end by itself), a free port and a 5 s
``--abandon-after``: a shopper's identify and cart_add posted to the printed URL with the
printed write key, the welcome and reminder lines printed before ``--seconds`` ends, exit
code 0, and no process of the run left behind."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from job.dev import demo_shop
from job.ops import free_port
from udfs.clock import wall_ms

ROOT = Path(__file__).resolve().parents[2]
INBOXFLOW = Path(sys.executable).with_name("inboxflow")

pytestmark = pytest.mark.slow


def test_make_demo_shop_runs_the_console_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo-shop:") :].splitlines()[2]
    assert recipe == "\t$(BIN)/inboxflow demo-shop"


# --------------------------------------------------------------------------- the command


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone or a
    zombie: a pid taken again by another process has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else fields[19]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300]
    except OSError:
        return "?"


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every living descendant of ``root`` (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        started = _start_time(pid)
        if started is not None:
            found[pid] = started
            todo += children.get(pid, [])
    return found


def test_the_command_prints_the_url_and_the_reminder_and_leaves_nothing_behind() -> None:
    port = free_port("127.0.0.1")
    command = [str(INBOXFLOW), "demo-shop", "--seconds", "60", "--port", str(port)]
    command += ["--abandon-after", "5s"]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    printed: list[str] = []
    seen: dict[int, str] = {}  # every process of the run, sampled while it runs

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    def sample() -> None:
        while proc.poll() is None:
            seen.update(_descendants(proc.pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=f, daemon=True) for f in (read, sample)]
    for t in threads:
        t.start()

    def wait_for_line(pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, f"demo-shop exited {proc.returncode}: {printed}"
                continue
            printed.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s} s: {printed}")

    try:
        url = wait_for_line(r"demo shop: (http://\S+/shop/)$", 30).group(1)
        assert url == f"http://127.0.0.1:{port}/shop/"
        key = wait_for_line(r"write key: (\S+)$", 5).group(1)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert "inboxflow demo shop" in page.read().decode()

        customer, now = f"shopper-{uuid.uuid4().hex[:8]}", wall_ms()
        batch = [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "identify",
                "customer_id": customer,
                "timestamp": now,
                "traits": {"email": f"{customer}@example.com", "first_name": "Kim"},
            },
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "cart_add",
                "customer_id": customer,
                "timestamp": now,
                "properties": {
                    "product_id": "p-0001",
                    "name": "Lavender Face Oil",
                    "price": 31.99,
                    "currency": "EUR",
                    "quantity": 1,
                    "cart_id": f"cart-{customer}",
                },
            },
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/events",
            data=json.dumps({"batch": batch}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=15) as reply:
            assert reply.status == 202
            assert json.loads(reply.read()) == {"accepted": 2}

        wait_for_line(r"job running; Flink web UI: http://127\.0\.0\.1:\d+", 60)
        reminder = wait_for_line(rf"email +{customer} +abandoned_cart step 1 +subject: (.*)$", 60)
        assert reminder.group(1) == "Kim, you left something in your cart"
        # --seconds 60, then the collector, the job and the broker stop (slower on a busy machine)
        assert proc.wait(timeout=150 - (time.monotonic() - started)) == 0
        for t in threads:
            t.join(timeout=5)
        while not lines.empty():
            printed.append(lines.get())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # a child may take a moment to notice its parent is gone (the JVM when the
        # gateway's pipe closes): a few seconds' grace
        grace = time.monotonic() + 5
        while (left := {p: _command(p) for p, at in seen.items() if _start_time(p) == at}) and (
            time.monotonic() < grace
        ):
            time.sleep(0.2)
        for pid in left:  # processes of this run only (same pid and start time)
            os.kill(pid, signal.SIGKILL)
    assert left == {}, f"processes of the run left behind: {left}"
    assert any(f"email     {customer}  welcome step 1" in line for line in printed), printed
    assert printed[-1] == f"demo shop stopped; files in {demo_shop.DEMO_DIR}", printed
    assert not any("Traceback" in line for line in printed), printed
    assert time.monotonic() - started < 150
