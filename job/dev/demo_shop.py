"""``inboxflow demo-shop``: the demo shop page, the collector and the job, live, on a local
broker. Open the printed URL, sign in, add something to the cart, and the reminder email
request shows up here about ``--abandon-after`` later.

What it starts, all under ``var/demo-shop/`` (emptied at each start):

* a Tansu broker (``tansu.log``) with the shipped topics;
* the real job, unbounded, as ``inboxflow run --config job.yaml`` in a child process of its
  own session (``job.log``). ``job.yaml`` is the shipped ``conf/job.yaml`` on this broker
  (its own consumer group, from the earliest offset), embedded ClickHouse under
  ``var/demo-shop/clickhouse``, short watermarks (out-of-orderness 1 s, idleness 1 s; the
  shipped lull rule lets event time follow the wall clock when the shopper pauses), quiet
  hours off; its campaigns file is the shipped one with abandoned_cart step 1 due
  ``--abandon-after`` after the cart's last change (default 1 minute). Checkpoints go to
  ``var/demo-shop/checkpoints``;
* the collector in demo mode in this process (``/shop/``, the snippet, ``/v1/events``) on
  127.0.0.1:``--port``, with a write key made up for the run (or ``INBOXFLOW_WRITE_KEYS``).

Then it prints one line per email request on the requests topic (customer, campaign, step,
subject) and per step a guard held back or dropped (deferred, skipped), until Ctrl-C or
SIGTERM (or ``--seconds``), and stops the job (cancelled), the collector and the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from job.config import (
    DEFAULT_CONFIG,
    ENV_BOOTSTRAP,
    ENV_CLICKHOUSE_DSN,
    ROOT,
    ConfigError,
    load_config,
    parse_duration,
    with_absolute_files,
)

DEMO_DIR = ROOT / "var" / "demo-shop"
HOST = "127.0.0.1"
DEFAULT_PORT = 8088
GROUP_ID = "inboxflow-demo-shop"
# One source subtask reads every partition: at parallelism 2 a source subtask whose partition
# has never held a record holds the job's event time back, so a lone shopper (the demo's
# usual case) would get no email (README "Known problems", docs/DESIGN.md#idle-watermarks).
PARALLELISM = 1
JOB_STOP_S = 30
REST_LINE = re.compile(r"REST API and web UI: (\S+)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-shop",
        help="the demo shop page, the collector and the job on a local broker: add to cart "
        "in the browser, see the reminder email request",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"collector port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--abandon-after",
        default="1m",
        metavar="DURATION",
        help="abandoned_cart step 1 this long after the cart's last change (default 1m; "
        "shipped: 1h)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="N",
        help="stop after N seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(func=run_demo_shop)


class _Stop(Exception):
    """SIGTERM: end the demo as Ctrl-C does."""


def run_demo_shop(args: argparse.Namespace) -> int:
    try:
        abandon_ms = parse_duration(args.abandon_after, "--abandon-after")
    except ConfigError as exc:
        print(f"inboxflow demo-shop: {exc}", file=sys.stderr)
        return 2
    if abandon_ms <= 0:
        print("inboxflow demo-shop: --abandon-after must be positive", file=sys.stderr)
        return 2
    from job.dev.broker import port_is_free

    if not 0 < args.port < 65536 or not port_is_free(args.port, HOST):
        print(f"inboxflow demo-shop: port {args.port} of {HOST} is not free", file=sys.stderr)
        return 2
    deadline = None if args.seconds is None else time.monotonic() + args.seconds

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm), signal.getsignal(signal.SIGINT)
    try:
        with contextlib.ExitStack() as stack:
            try:
                code = _run(stack, args.port, args.abandon_after, deadline)
            except (KeyboardInterrupt, _Stop):
                print("\nstopping: the collector, the job, the broker", flush=True)
                code = 0
            finally:
                # the clean-up (the stack, on leaving) runs to its end: another Ctrl-C or
                # SIGTERM does not cut it short and leave the job or the broker behind
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    print(f"demo shop stopped; files in {DEMO_DIR}", flush=True)
    return code


def _run(stack: contextlib.ExitStack, port: int, abandon_after: str, deadline: float | None) -> int:
    from job.collector.app import ConfigError as CollectorConfigError
    from job.collector.app import Settings
    from job.dev import kafka_io
    from job.dev.broker import TansuBroker

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    # kafka-python's lines while the broker starts (refused connections) and its slow-poll
    # warnings would bury the demo's lines; its errors still show afterwards
    kafka_log = logging.getLogger("kafka")
    kafka_log.setLevel(logging.CRITICAL)
    broker = stack.enter_context(TansuBroker(log_path=DEMO_DIR / "tansu.log").start())
    kafka_log.setLevel(logging.ERROR)
    config_path = write_config(DEMO_DIR, broker.bootstrap, abandon_after)
    try:
        cfg = load_config(config_path, env={})
        settings = Settings.from_config(cfg, os.environ, demo=True)
    except (ConfigError, CollectorConfigError) as exc:
        print(f"inboxflow demo-shop: {exc}", file=sys.stderr)
        return 2
    topics = cfg.kafka.topics
    kafka_io.create_topics(
        broker.bootstrap,
        {topics.events: 2, topics.dlq: 1, topics.email_requests: 2, topics.outcomes: 1},
    )
    print(f"broker {broker.bootstrap}; files in {DEMO_DIR}", flush=True)

    job = stack.enter_context(_job(config_path, write_flink_conf(DEMO_DIR), DEMO_DIR / "job.log"))
    print(f"job starting (inboxflow run --config {config_path}); its log: {job.log}", flush=True)
    stack.enter_context(_collector(settings, port))
    key = next(iter(settings.write_keys))
    print(
        f"\ndemo shop: http://{HOST}:{port}/shop/\nwrite key: {key}\n"
        f"sign in, add to cart: the reminder is due {abandon_after} after the cart's last "
        "change (the job takes a few seconds to start). Ctrl-C stops.\n",
        flush=True,
    )
    return _tail(
        broker.bootstrap, [topics.email_requests, topics.outcomes], topics.outcomes, job, deadline
    )


def write_config(directory: Path, bootstrap: str, abandon_after: str) -> Path:
    """``directory/job.yaml``: the shipped config for the demo (module docstring), and the
    campaigns file it names, ``directory/campaigns.yaml``."""
    campaigns = yaml.safe_load((DEFAULT_CONFIG.parent / "campaigns.yaml").read_text())
    cart = campaigns["campaigns"]["abandoned_cart"]
    cart["steps"][0]["after"] = abandon_after
    campaigns_path = directory / "campaigns.yaml"
    campaigns_path.write_text(
        "# conf/campaigns.yaml of `inboxflow demo-shop`: abandoned_cart step 1 after "
        f"{abandon_after}\n" + yaml.safe_dump(campaigns, sort_keys=False, allow_unicode=True)
    )
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data = with_absolute_files(data)
    data["campaigns_file"] = str(campaigns_path)
    data["kafka"].update(
        bootstrap_servers=bootstrap, group_id=GROUP_ID, starting_offsets="earliest"
    )
    data["watermarks"].update(out_of_orderness="1s", idleness="1s")
    data["guards"]["quiet_hours"].update(start="", end="")
    data["clickhouse"]["dsn"] = f"chdb://{directory.resolve() / 'clickhouse'}"
    path = directory / "job.yaml"
    path.write_text(
        "# conf/job.yaml of `inboxflow demo-shop` (job/dev/demo_shop.py)\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )
    return path


def write_flink_conf(directory: Path) -> Path:
    """The shipped flink-conf.yaml with checkpoints and savepoints under ``directory``."""
    from job.main import DEFAULT_FLINK_CONF

    data = yaml.safe_load(DEFAULT_FLINK_CONF.read_text())
    data["execution.checkpointing.dir"] = (directory.resolve() / "checkpoints").as_uri()
    data["execution.checkpointing.savepoint-dir"] = (directory.resolve() / "savepoints").as_uri()
    path = directory / "flink-conf.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class _Job:
    """``inboxflow run`` in a session of its own (with the JVM it launches)."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        env = dict(os.environ)
        # the generated config names the broker and the DSN; nothing inherited overrides them
        env.pop(ENV_BOOTSTRAP, None)
        env.pop(ENV_CLICKHOUSE_DSN, None)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rest_url(self) -> str | None:
        found = REST_LINE.search(self.log_tail(200_000))
        return found.group(1) if found else None

    def stop(self) -> None:
        """Ctrl-C to the group (``inboxflow run`` cancels the job), then whatever is left of
        the group after :data:`JOB_STOP_S` is killed."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=JOB_STOP_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=JOB_STOP_S)


@contextlib.contextmanager
def _job(config: Path, flink_conf: Path, log: Path) -> Iterator[_Job]:
    script = Path(sys.executable).with_name("inboxflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "job.cli"]
    command += ["run", "--config", str(config), "--flink-conf", str(flink_conf)]
    job = _Job(command + ["--parallelism", str(PARALLELISM)], log)
    try:
        yield job
    finally:
        job.stop()


@contextlib.contextmanager
def _collector(settings: Any, port: int) -> Iterator[None]:
    """The collector (Starlette on uvicorn) in a thread of this process: uvicorn installs no
    signal handlers outside the main thread, so Ctrl-C and SIGTERM stay this command's."""
    import uvicorn

    from job.collector.app import create_app

    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=HOST,
            port=port,
            # uvicorn's access log prints the query string, which holds the write key
            access_log=False,
            log_config=None,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
    )
    thread = threading.Thread(target=server.run, name="collector", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the collector did not start on {HOST}:{port}")
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _tail(
    bootstrap: str, topics: list[str], outcomes: str, job: _Job, deadline: float | None
) -> int:
    """Prints the email requests, and the outcomes that tell why a step did not go out (yet),
    as they arrive, until ``deadline`` (0) or the job's process ends (1)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
        client_id="inboxflow-demo-shop",
    )
    try:
        assigned = []
        for topic in topics:
            while not (partitions := consumer.partitions_for_topic(topic)):
                time.sleep(0.2)  # the topics exist: their metadata is on its way
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        running = False
        while deadline is None or time.monotonic() < deadline:
            if job.proc.poll() is not None:
                print(
                    f"inboxflow demo-shop: the job ended (exit code {job.proc.returncode}); "
                    f"the end of {job.log}:\n{job.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            if not running and (url := job.rest_url()):
                running = True
                print(f"{_now()} job running; Flink web UI: {url}", flush=True)
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    line = describe(r.topic == outcomes, json.loads(r.value))
                    if line:
                        print(f"{_now()} {line}", flush=True)
        print(f"{_now()} --seconds reached: stopping", flush=True)
        return 0
    finally:
        consumer.close(autocommit=False)


def describe(outcome: bool, value: dict[str, Any]) -> str | None:
    """The line printed for a record of the requests (``outcome`` False) or outcomes topic;
    None for an outcome not shown. No address: the customer id names the shopper."""
    cid = value.get("customer_id")
    if not outcome:
        return (
            f"email     {cid}  {value['campaign']} step {value['step']}  "
            f"subject: {value['subject']}"
        )
    kind, step = value.get("kind"), value.get("step")
    if kind in ("deferred", "skipped"):
        return f"{kind:<9} {cid}  {value.get('campaign')} step {step}  ({value.get('reason')})"
    if kind == "recovered":
        return f"recovered {cid}  a purchase of {value.get('value')} after the step {step} email"
    if kind == "late":
        return f"late      {cid}  event {value.get('event_id')} behind the watermark"
    return None


def _now() -> str:
    return time.strftime("%H:%M:%S")
