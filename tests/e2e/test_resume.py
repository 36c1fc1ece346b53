"""Resume the real ``inboxflow run`` (a process of its own, the real CLI, the real broker) from
its retained checkpoint after a SIGKILL, and from a stop-with-savepoint with changed journey
timings and another parallelism: pending reminders fire exactly once, at the due times of the
schedule in force, and profiles, carts and the dedup memory carry over.

Event time is driven by clock events (a page view on each partition); idleness and the lull
rule are off and the out-of-orderness bound is 1 minute, so the watermark is exactly the
newest clock event minus 1 min 1 ms, and what is due is known at every step. The runs are
unbounded (the end of a bounded input would fire every pending timer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from job.dev.broker import TansuBroker
from job.dev.kafka_io import create_topics, produce
from job.main import DEFAULT_FLINK_CONF
from job.ops import free_port
from tests.e2e.cli_run import start_run
from tests.e2e.conftest import OutputReader
from tests.factories import (
    CAMPAIGN,
    HOUR,
    MINUTE,
    ROOT,
    T0,
    cart_add,
    cart_only,
    identify,
    job_yaml,
    keys_by_partition,
    page_view,
    raw,
)
from udfs.core.journey import request_id

pytestmark = pytest.mark.slow

BOUND = MINUTE  # watermarks.out_of_orderness
WAIT_S = 240  # job start-up (JVM, a loaded 2-core machine) included
QUIET_S = 4  # nothing new for this long after the expected outputs: nothing more comes


# --- what a test writes and starts ---------------------------------------------------------


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


class Scenario:
    """Topics, config files and checkpoint/savepoint directories of one test."""

    def __init__(self, broker: TansuBroker, tmp: Path, partitions: int = 2) -> None:
        self.broker, self.tmp = broker, tmp
        self.prefix = f"resume-{uuid.uuid4().hex[:8]}"
        self.topics = {t: f"{self.prefix}.{t}" for t in ("events", "dlq", "requests", "outcomes")}
        create_topics(
            broker.bootstrap,
            {
                self.topics["events"]: partitions,
                self.topics["dlq"]: 1,
                self.topics["requests"]: 1,
                self.topics["outcomes"]: 1,
            },
        )
        self.checkpoints = tmp / "checkpoints"
        self.savepoints = tmp / "savepoints"
        self.flink_conf = tmp / "flink-conf.yaml"
        conf = yaml.safe_load(DEFAULT_FLINK_CONF.read_text())
        conf.update(
            {
                "execution.checkpointing.dir": self.checkpoints.as_uri(),
                "execution.checkpointing.savepoint-dir": self.savepoints.as_uri(),
                "execution.checkpointing.interval": "1s",
            }
        )
        self.flink_conf.write_text(yaml.safe_dump(conf))

    def config(self, name: str, cart: dict) -> Path:
        """conf/job.yaml on this test's topics, ClickHouse off, watermarks moved by clock
        events only, ``cart`` (the overrides of :func:`cart_only`) merged on top; its
        campaigns file next to it, in a directory of its own."""
        shipped = yaml.safe_load((ROOT / "conf" / "job.yaml").read_text())
        data = deep_merge(
            shipped,
            {
                "kafka": {
                    "bootstrap_servers": self.broker.bootstrap,
                    "group_id": self.prefix,
                    "starting_offsets": "earliest",
                    "topics": {
                        "events": self.topics["events"],
                        "dlq": self.topics["dlq"],
                        "email_requests": self.topics["requests"],
                        "outcomes": self.topics["outcomes"],
                    },
                },
                "watermarks": {"out_of_orderness": "1m", "idleness": "0s", "idle_advance": "0s"},
                "clickhouse": {"enabled": False},
                **cart,
            },
        )
        directory = self.tmp / name
        directory.mkdir()
        path = directory / "job.yaml"
        path.write_text(yaml.safe_dump(job_yaml(data, directory)))
        return path

    def produce(self, events: Iterable[dict | str]) -> None:
        """Events (or raw texts of earlier ones, for a redelivery) in order."""
        records = []
        for e in events:
            text = e if isinstance(e, str) else raw(e)
            records.append((json.loads(text)["customer_id"], text.encode(), None))
        produce(self.broker.bootstrap, self.topics["events"], records)

    def reader(self) -> OutputReader:
        return OutputReader(
            self.broker.bootstrap, [self.topics["requests"], self.topics["outcomes"]]
        )

    def completed_checkpoints(self) -> list[Path]:
        """Completed checkpoints of every run so far, by checkpoint number."""
        done = [m.parent for m in self.checkpoints.glob("*/chk-*/_metadata")]
        return sorted(done, key=lambda p: int(p.name.removeprefix("chk-")))

    def newest_checkpoint_number(self) -> int:
        done = self.completed_checkpoints()
        return int(done[-1].name.removeprefix("chk-")) if done else 0

    def wait_for_checkpoint(self, number: int, alive) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.newest_checkpoint_number() < number:
            alive()
            assert time.monotonic() < deadline, f"checkpoint {number} never completed"
            time.sleep(0.2)


class RunProcess:
    """``inboxflow run ARGS`` in a session of its own: a SIGKILL to the group takes the CLI,
    the JVM and the embedded Python with it."""

    def __init__(self, scenario: Scenario, name: str, *args: str) -> None:
        self.log = scenario.tmp / f"{name}.log"
        self.rest_url = f"http://127.0.0.1:{free_port()}"
        port = self.rest_url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "job.cli", "run", "--flink-conf", str(scenario.flink_conf)]
        command += ["--rest-port", port, *args]
        self.proc = start_run(scenario.broker, command, ROOT, self.log)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"inboxflow run exited:\n{self.tail()}"

    def job(self, timeout_s: float = WAIT_S) -> str:
        """The id of the run's job once it is RUNNING, from the REST API on the pinned
        ``--rest-port``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.alive()
            assert time.monotonic() < deadline, f"job never running:\n{self.tail()}"
            try:
                with urllib.request.urlopen(f"{self.rest_url}/jobs/overview", timeout=5) as r:
                    jobs = json.loads(r.read())["jobs"]
            except (OSError, ValueError, KeyError):
                jobs = []
            running = [j["jid"] for j in jobs if j["state"] == "RUNNING"]
            if running:
                return running[0]
            time.sleep(0.5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        else:  # its JVM may outlive it
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def clock(keys: list[list[str]], ts: int) -> list[dict]:
    """One page view at ``ts`` on every partition: the watermark becomes ts - BOUND - 1."""
    return [page_view(by_partition[-1], ts) for by_partition in keys]


def requests(reader: OutputReader, topic: str) -> list[tuple[str, int, int]]:
    """(customer, step, due time) of every request, in arrival order (duplicates kept)."""
    return [
        (r.value["customer_id"], r.value["step"], r.value["metadata"]["due_at_ms"])
        for r in reader.of(topic)
    ]


def wait_for_requests(
    reader: OutputReader, topic: str, want: list[tuple[str, int, int]], alive, what: str
) -> None:
    """Until ``want`` (sorted) is exactly what arrived, then nothing new for QUIET_S."""
    reader.wait_for(lambda r: len(requests(r, topic)) >= len(want), what, WAIT_S, alive)
    reader.drain(QUIET_S, alive)
    assert sorted(requests(reader, topic)) == sorted(want), what


# --- resume after a crash ------------------------------------------------------------------


def test_sigkill_then_resume_fires_every_pending_reminder_exactly_once(
    broker: TansuBroker, tmp_path: Path
) -> None:
    """Run 1 (p2) sends the step-1 reminders due within its event time; it is SIGKILLed after
    two more checkpoints. Carts added while it is down and the pending reminders of run 1
    all fire after ``inboxflow run --resume`` (p1), each exactly once; reminders sent before
    the crash are not sent again; one due after the last event's watermark never fires."""
    sc = Scenario(broker, tmp_path)
    config = sc.config("job", cart_only("1h", [{"after": "3h", "template": "abandoned_cart_2"}]))
    keys = keys_by_partition(2, 5, f"{sc.prefix}-")  # [a, b, c, n, clock] per partition
    carts = {keys[p][i]: T0 + i * 20 * MINUTE for p in range(2) for i in range(3)}
    sc.produce(
        [
            e
            for cid, ts in carts.items()
            for e in (
                identify(cid, ts, email=f"{cid}@example.com", first_name="Kim"),
                cart_add(cid, ts, cart_id=f"cart-{cid}"),
            )
        ]
        + clock(keys, T0 + 70 * MINUTE + BOUND)
    )  # watermark T0+70m-1ms
    before_crash = [
        (cid, 1, ts + HOUR) for cid, ts in carts.items() if ts + HOUR < T0 + 70 * MINUTE
    ]
    assert len(before_crash) == 2

    reader = sc.reader()
    first = RunProcess(sc, "run-1", "--config", str(config), "--parallelism", "2")
    try:
        first.job()
        wait_for_requests(
            reader,
            sc.topics["requests"],
            before_crash,
            first.alive,
            "the step-1 reminders due before the crash",
        )
        # two more checkpoints: the second was triggered after those reminders were sent
        sc.wait_for_checkpoint(sc.newest_checkpoint_number() + 2, first.alive)
    finally:
        first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    newest = sc.completed_checkpoints()[-1]

    # while it is down: new carts, one due after the final watermark
    late = {keys[p][3]: T0 + 75 * MINUTE for p in range(2)}
    never = {keys[0][3] + "-late": T0 + 4 * HOUR + 30 * MINUTE}
    sc.produce(
        [
            e
            for cid, ts in {**late, **never}.items()
            for e in (
                identify(cid, ts, email=f"{cid}@example.com", first_name="Kim"),
                cart_add(cid, ts, cart_id=f"cart-{cid}"),
            )
        ]
        + clock(keys, T0 + 5 * HOUR + BOUND)
    )  # watermark T0+5h-1ms

    second = RunProcess(sc, "run-2", "--config", str(config), "--parallelism", "1", "--resume")
    try:
        second.job()
        assert f"resuming from checkpoint {newest} (completed " in second.log.read_text()
        expected = before_crash + [
            (cid, step, ts + offset)
            for cid, ts in {**carts, **late}.items()
            for step, offset in ((1, HOUR), (2, 3 * HOUR))
            if (cid, step, ts + offset) not in before_crash
        ]
        assert len(expected) == 16
        wait_for_requests(
            reader,
            sc.topics["requests"],
            expected,
            second.alive,
            "every reminder exactly once after the resume",
        )
        ids = [r.value["request_id"] for r in reader.of(sc.topics["requests"])]
        assert len(set(ids)) == len(ids) == 16
        assert set(ids) == {
            request_id(CAMPAIGN, cid, f"cart-{cid}", due - (HOUR if step == 1 else 3 * HOUR), step)
            for cid, step, due in expected
        }
    finally:
        second.kill()
        reader.close()


def test_resume_without_any_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "flink-conf.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                **yaml.safe_load(DEFAULT_FLINK_CONF.read_text()),
                "execution.checkpointing.dir": (tmp_path / "none").as_uri(),
                "execution.checkpointing.savepoint-dir": (tmp_path / "neither").as_uri(),
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "job.cli", "run", "--flink-conf", str(conf), "--resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert (
        f"inboxflow: --resume: no completed checkpoint or savepoint under "
        f"{tmp_path / 'none'} and {tmp_path / 'neither'}"
    ) in done.stderr


# --- stop with a savepoint, change the timing, resume at another parallelism ---------------


class TimingChangeStory:
    """Three carts per partition, armed under schedule A (step 1 after 1h, step 2 after 3h),
    resumed under schedule B (step 1 after 2h: lengthened; step 2 after 2h30: shortened):

    * ``a`` (cart T0): step 1 sent before the stop (due T0+1h); its step 2 (A: T0+3h) is due
      at T0+2h30 under B. ``a`` sends nothing after the resume, so only the check the
      restored operator makes on every pending journey can fire it at T0+2h30;
    * ``b`` (cart T0+20m): step 1 pending at the stop (A: T0+1h20, long past when the job
      resumes), due at T0+2h20 under B; step 2 at T0+2h50;
    * ``d`` (cart T0+30m): step 1 at T0+2h30 under B, step 2 at T0+3h; its cart_add is
      delivered again after the resume: the dedup memory drops it (else the cart would hold 2
      mugs and the outcome would not say ``duplicate``).

    Profiles carry over: every reminder goes to the address of the identify event that came
    before the stop, with the cart that was built before it."""

    JOURNEY_A: ClassVar[dict] = cart_only("1h", [{"after": "3h", "template": "abandoned_cart_2"}])
    JOURNEY_B: ClassVar[dict] = cart_only("2h", [{"after": "150m", "template": "abandoned_cart_2"}])

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.keys = keys_by_partition(2, 4, f"{sc.prefix}-")  # [a, b, d, clock] per partition
        self.a = [k[0] for k in self.keys]
        self.b = [k[1] for k in self.keys]
        self.d = [k[2] for k in self.keys]
        self.redelivered: dict[str, str] = {}  # customer -> raw cart_add

    def before_stop(self) -> list[tuple[str, int, int]]:
        """Produce the first part; the requests due before the stop."""
        events = []
        for cids, at in ((self.a, 0), (self.b, 20 * MINUTE), (self.d, 30 * MINUTE)):
            for cid in cids:
                cart = cart_add(cid, T0 + at, cart_id=f"cart-{cid}")
                events += [
                    identify(cid, T0 + at, email=f"{cid}@example.com", first_name="Kim"),
                    cart,
                ]
                if cids is self.d:
                    self.redelivered[cid] = raw(cart)
        self.sc.produce(events + clock(self.keys, T0 + 70 * MINUTE + BOUND))
        return [(cid, 1, T0 + HOUR) for cid in self.a]

    def after_resume(self) -> list[tuple[list, list[tuple[str, int, int]]]]:
        """(input, the requests it makes due) per phase, in order, under schedule B."""
        return [
            (
                list(self.redelivered.values()) + clock(self.keys, T0 + 145 * MINUTE + BOUND),
                [(cid, 1, T0 + 140 * MINUTE) for cid in self.b],
            ),
            (
                clock(self.keys, T0 + 155 * MINUTE + BOUND),
                [(cid, 2, T0 + 150 * MINUTE) for cid in self.a]
                + [(cid, 1, T0 + 150 * MINUTE) for cid in self.d],
            ),
            # a's step 2 was due at T0+3h under A: it must not come again
            (
                clock(self.keys, T0 + 190 * MINUTE + BOUND),
                [(cid, 2, T0 + 170 * MINUTE) for cid in self.b]
                + [(cid, 2, T0 + 180 * MINUTE) for cid in self.d],
            ),
        ]

    def check_carried_state(self, reader: OutputReader) -> None:
        topics = self.sc.topics
        sent = reader.of(topics["requests"])
        assert len(sent) == 12 and len({r.value["request_id"] for r in sent}) == 12
        for r in sent:
            cid = r.value["customer_id"]
            assert r.value["to"] == f"{cid}@example.com"
            assert [(i["product_id"], i["quantity"]) for i in r.value["metadata"]["items"]] == [
                ("p1", 1)
            ], cid
            armed = {
                **dict.fromkeys(self.a, T0),
                **dict.fromkeys(self.b, T0 + 20 * MINUTE),
                **dict.fromkeys(self.d, T0 + 30 * MINUTE),
            }[cid]
            assert r.value["request_id"] == request_id(
                CAMPAIGN, cid, f"cart-{cid}", armed, r.value["step"]
            )
        duplicates = [
            (r.value["customer_id"], r.value["event_id"])
            for r in reader.of(topics["outcomes"])
            if r.value["kind"] == "duplicate"
        ]
        assert sorted(duplicates) == sorted(
            (cid, json.loads(text)["event_id"]) for cid, text in self.redelivered.items()
        )


def run_phases(story: TimingChangeStory, reader: OutputReader, sent: list, alive) -> None:
    """Each phase's input, then exactly the requests due so far, nothing more."""
    for number, (events, due) in enumerate(story.after_resume(), 1):
        story.sc.produce(events)
        sent = sent + due
        wait_for_requests(
            reader, story.sc.topics["requests"], sent, alive, f"phase {number} after the resume"
        )


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "job.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def test_stop_with_savepoint_change_timing_and_resume_at_parallelism_1(
    broker: TansuBroker, tmp_path: Path
) -> None:
    sc = Scenario(broker, tmp_path)
    story = TimingChangeStory(sc)
    before = story.before_stop()
    reader = sc.reader()
    first = RunProcess(
        sc, "run-1", "--config", str(sc.config("a", story.JOURNEY_A)), "--parallelism", "2"
    )
    try:
        job_id = first.job()
        wait_for_requests(
            reader, sc.topics["requests"], before, first.alive, "the reminders due before the stop"
        )
        unknown = cli("savepoint", "0" * 32, "--rest", first.rest_url)
        assert unknown.returncode == 1
        assert f"no job {'0' * 32} on {first.rest_url}" in unknown.stderr
        taken = cli("savepoint", job_id, "--rest", first.rest_url)
        assert taken.returncode == 0, taken.stderr
        assert (sc.savepoints / Path(taken.stdout.strip()).name / "_metadata").is_file()
        stopped = cli(
            "stop", job_id, "--savepoint", "--rest", first.rest_url, "--dir", str(tmp_path / "stop")
        )
        assert stopped.returncode == 0, stopped.stderr
        first.proc.wait(timeout=WAIT_S)  # the job finished: `inboxflow run` ends
        assert first.proc.returncode == 0, first.tail()
    finally:
        first.kill()
    savepoint = Path(stopped.stdout.strip().removeprefix("file:"))
    assert savepoint.parent == tmp_path / "stop" and (savepoint / "_metadata").is_file()

    second = RunProcess(
        sc,
        "run-2",
        "--config",
        str(sc.config("b", story.JOURNEY_B)),
        "--parallelism",
        "1",
        "--resume",
        stopped.stdout.strip(),
    )
    try:
        second.job()
        assert f"resuming from savepoint {savepoint} (completed " in second.log.read_text()
        run_phases(story, reader, before, second.alive)
        story.check_carried_state(reader)
    finally:
        second.kill()
        reader.close()
