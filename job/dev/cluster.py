"""A local Flink standalone cluster made from the installed PyFlink distribution (a
development tool: a real cluster has its own). The job's artifacts and ``flink run`` are in
:mod:`job.submit`.

``python -m job.dev.cluster up [--taskmanagers N] [--slots S] [--port 8081]`` / ``down`` /
``status`` (``make cluster-up`` / ``make cluster-down``).

The cluster's ``FLINK_HOME`` is ``var/flink/``: real copies (never symlinks: ``config.sh``
resolves a symlinked ``bin/`` to the wheel's own folder, with its ``conf/`` and ``log/``) of
PyFlink's ``bin/``, ``lib/`` + ``opt/flink-python`` (``io.inboxflow.flink.BatchCustomerOperator``
extends PyFlink's embedded operators, so flink-python must be on the cluster's classpath),
``opt/`` and ``plugins/metrics-prometheus``, and ``conf/config.yaml`` generated from the
project's ``flink-conf.yaml`` plus the cluster settings below.

Thread mode runs the Python functions in an interpreter embedded in the TaskManager's JVM.
It is started from ``python.executable`` but does not activate that venv, so the TaskManager
also gets ``python.pythonpath`` = the venv's site-packages (else ``No module named
'pemja'``); the job's own code (``job/``, ``udfs/``) comes from the ``-pyfs`` archive. All
Python operators of one TaskManager share one interpreter lock: one slot per TaskManager is
the way to scale out.

Every daemon's pid is in ``var/flink/pids/``; ``down`` stops exactly those processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from job.submit import (
    DEFAULT_HOME,
    DEFAULT_PORT,
    PACKAGE_DIR,
    ROOT,
    ClusterError,
    package,
    script_env,
    submit,
)

PROMETHEUS_PLUGIN = "metrics-prometheus"
# Sized so a JobManager and two TaskManagers fit a small machine; thread mode needs no
# managed memory for Python and the hashmap state backend none for state.
MEMORY = {
    "jobmanager.memory.process.size": "1024m",
    "taskmanager.memory.process.size": "1280m",
    "taskmanager.memory.managed.size": "64m",
    "taskmanager.memory.network.min": "64m",
    "taskmanager.memory.network.max": "64m",
}


def pyflink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def venv_site_packages() -> list[str]:
    """The site-packages of the interpreter running this (the venv): the TaskManager's
    embedded interpreter needs them on its path."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _setting(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def install(home: Path = DEFAULT_HOME) -> Path:
    """Copies PyFlink's distribution into ``home`` (again when PyFlink changed)."""
    import fcntl

    dist = pyflink_home()
    home.mkdir(parents=True, exist_ok=True)
    source = f"{dist} {(dist / 'lib').stat().st_mtime} {(dist / 'opt').stat().st_mtime}"
    with (home / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several test sessions may share this machine
        stamp = home / ".pyflink"
        if stamp.is_file() and stamp.read_text() == source:
            return home
        _populate(home, dist, lambda src, dst: shutil.copy2(src, dst))
        stamp.write_text(source)
    return home


def session_home(parent: Path, name: str) -> Path:
    """A cluster home of its own (e.g. one per test session) made from :func:`install`'s
    copy with hard links: real files, no second 350 MB copy."""
    base = install()
    home = parent / name

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    _populate(home, base, link, conf_from=pyflink_home())
    return home


def _populate(home: Path, dist: Path, copy, conf_from: Path | None = None) -> None:
    for sub in ("bin", "lib", "opt", "plugins"):
        shutil.rmtree(home / sub, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "lib", "opt"):
        shutil.copytree(dist / sub, home / sub, symlinks=False, copy_function=copy)
    # copied, not moved: the client finds flink-python in opt/, the cluster in lib/
    for jar in (dist / "opt").glob("flink-python-*.jar"):
        if not (home / "lib" / jar.name).exists():
            copy(str(jar), str(home / "lib" / jar.name))
    shutil.copytree(
        dist / "plugins" / PROMETHEUS_PLUGIN,
        home / "plugins" / PROMETHEUS_PLUGIN,
        symlinks=False,
        copy_function=copy,
    )
    (home / "conf").mkdir(exist_ok=True)
    for conf in ((conf_from or dist) / "conf").glob("log4j*.properties"):
        shutil.copy2(conf, home / "conf" / conf.name)
    for sub in ("log", "pids", "tmp"):
        (home / sub).mkdir(exist_ok=True)


def cluster_settings(
    home: Path, rest_port: int, rpc_port: int, slots: int, flink_conf: Path | None = None
) -> dict[str, str]:
    """The cluster's ``config.yaml`` as flat settings: PyFlink's defaults (its JVM options
    for Java 17), the project's ``flink-conf.yaml``, then the cluster's own settings."""
    from job.main import DEFAULT_FLINK_CONF, flink_settings

    defaults = yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {}
    settings = {k: _setting(v) for k, v in _flatten(defaults).items()}
    settings.update(flink_settings(flink_conf or DEFAULT_FLINK_CONF))
    site = os.pathsep.join(venv_site_packages())
    settings.update(
        {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": str(rpc_port),
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": str(rest_port),
            "rest.bind-port": str(rest_port),
            "taskmanager.numberOfTaskSlots": str(slots),
            **MEMORY,
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "python.pythonpath": site,
            "env.log.dir": str(home / "log"),
            "env.pid.dir": str(home / "pids"),
            "io.tmp.dirs": str(home / "tmp"),
            # `flink run -py` ships flink-python (with pemja) as the job's jar; the cluster's
            # lib/ has it too, and a second copy of pemja's classes in the job's class loader
            # breaks the embedded interpreter ("loader constraint violation")
            "classloader.parent-first-patterns.additional": "pemja.",
            # a TaskManager that left stays "registered" this long: keep reshaping quick
            "heartbeat.timeout": "20000",
            "resourcemanager.taskmanager-timeout": "5000",
        }
    )
    return settings


def write_conf(home: Path, settings: dict[str, str]) -> Path:
    conf = home / "conf" / "config.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    conf.write_text(
        "# generated by job/dev/cluster.py from flink-conf.yaml; do not edit\n"
        + yaml.safe_dump(settings, sort_keys=True, width=1 << 16)
    )
    return conf


def _pid_files(home: Path) -> list[Path]:
    return sorted((home / "pids").glob("*.pid")) if (home / "pids").is_dir() else []


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split() if line.strip().isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _is_flink(pid: int, home: Path) -> bool:
    """The pid still belongs to one of this cluster's JVMs (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return str(home / "conf") in cmdline or str(home / "lib") in cmdline


def stop_pids(home: Path, daemon: str | None = None, timeout_s: float = 20) -> int:
    """Stops this cluster's daemons (``daemon``: only ``taskexecutor`` or
    ``standalonesession``) by the pids in their pid files: SIGTERM, then SIGKILL."""
    files = [p for p in _pid_files(home) if daemon is None or p.stem.endswith(f"-{daemon}")]
    pids = [pid for path in files for pid in _pids(path) if _alive(pid) and _is_flink(pid, home)]
    for pid in pids:
        with _suppress_gone():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with _suppress_gone():
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in files:
        path.unlink(missing_ok=True)
    return len(pids)


class _suppress_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is ProcessLookupError


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Cluster:
    """One standalone cluster: a JobManager (REST and web UI on 127.0.0.1:``rest_port``) and
    TaskManagers started and stopped by pid. ``reshape`` changes the TaskManagers while the
    JobManager keeps running."""

    home: Path = DEFAULT_HOME
    rest_port: int = DEFAULT_PORT
    package_dir: Path = PACKAGE_DIR
    flink_conf: Path | None = None
    startup_timeout_s: float = 120
    _rpc_port: int | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.address}"

    # --- lifecycle -------------------------------------------------------------------
    def up(self, taskmanagers: int = 1, slots: int = 2) -> Cluster:
        from job.ops import free_port

        if self.running():
            raise ClusterError(
                f"a cluster already runs from {self.home} ({self.rest_url}); "
                f"`make cluster-down` first"
            )
        stop_pids(self.home)  # leftovers of a crashed run
        if _listening(self.rest_port):
            raise ClusterError(f"port {self.rest_port} is in use: pick another with --port")
        install(self.home)
        self._rpc_port = free_port()
        write_conf(
            self.home,
            cluster_settings(self.home, self.rest_port, self._rpc_port, slots, self.flink_conf),
        )
        self._script("jobmanager.sh", "start")
        try:
            self._wait(lambda: self._overview() is not None, "the JobManager's REST API")
            self.reshape(taskmanagers, slots)
        except BaseException:
            self.down()
            raise
        return self

    def reshape(self, taskmanagers: int, slots: int) -> None:
        """Stops every TaskManager, starts ``taskmanagers`` with ``slots`` slots each and
        waits until exactly those are registered."""
        if taskmanagers < 1 or slots < 1:
            raise ClusterError("need at least one TaskManager with one slot")
        stop_pids(self.home, "taskexecutor")
        self._wait(
            lambda: (self._overview() or {}).get("taskmanagers") == 0,
            "the stopped TaskManagers to leave",
        )
        for _ in range(taskmanagers):
            self._script("taskmanager.sh", "start", f"-Dtaskmanager.numberOfTaskSlots={slots}")
        self._wait(
            lambda: self._registered() == (taskmanagers, taskmanagers * slots),
            f"{taskmanagers} TaskManager(s) with {slots} slot(s) each",
        )

    def down(self) -> int:
        """Stops every daemon of this cluster; returns how many processes it stopped."""
        stopped = stop_pids(self.home, "taskexecutor")
        return stopped + stop_pids(self.home)

    def running(self) -> bool:
        return any(
            _alive(pid) and _is_flink(pid, self.home)
            for path in _pid_files(self.home)
            for pid in _pids(path)
        )

    def status(self) -> dict:
        overview = self._overview()
        tms = self._taskmanagers() if overview else []
        return {
            "rest_url": self.rest_url,
            "home": str(self.home),
            "running": overview is not None,
            "taskmanagers": [
                {"id": t["id"], "slots": t["slotsNumber"], "free_slots": t["freeSlots"]}
                for t in tms
            ],
            "jobs": self.jobs() if overview else [],
        }

    # --- jobs --------------------------------------------------------------------------
    def submit(
        self,
        config: Path,
        *,
        parallelism: int | None = None,
        savepoint: str | None = None,
        extra_args: list[str] | tuple = (),
        detached: bool = True,
    ) -> str:
        """``inboxflow submit --cluster ADDRESS --config CONFIG ...``; the Flink job id."""
        return submit(
            config,
            cluster=self.address,
            parallelism=parallelism,
            savepoint=savepoint,
            detached=detached,
            home=self.home,
            package_dir=self.package_dir,
            extra_args=list(extra_args),
        )

    def job(self, job_id: str) -> dict:
        return _get_json(f"{self.rest_url}/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return _get_json(f"{self.rest_url}/jobs")["jobs"]

    def wait_running(self, job_id: str, timeout_s: float = 120) -> None:
        """Until every task of the job is RUNNING; raises with the job's exceptions when it
        fails or restarts instead."""

        def ready() -> bool:
            info = self.job(job_id)
            if info["state"] in ("FAILED", "FAILING", "CANCELED", "FINISHED", "RESTARTING"):
                raise ClusterError(f"job {job_id} is {info['state']}: {self.exceptions(job_id)}")
            vertices = info.get("vertices", [])
            return (
                info["state"] == "RUNNING"
                and bool(vertices)
                and all(v["status"] == "RUNNING" for v in vertices)
            )

        self._wait(ready, f"job {job_id} to run", timeout_s)

    def exceptions(self, job_id: str) -> list[str]:
        try:
            data = _get_json(f"{self.rest_url}/jobs/{job_id}/exceptions")
        except (OSError, ValueError):
            return []
        return [
            e.get("exceptionName", "") + ": " + (e.get("stacktrace") or "")[:2000]
            for e in data.get("exceptionHistory", {}).get("entries", [])
        ]

    def cancel(self, job_id: str, timeout_s: float = 60) -> None:
        request = urllib.request.Request(
            f"{self.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH"
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError:
            pass  # already terminal
        self._wait(
            lambda: self.job(job_id)["state"] in ("CANCELED", "FAILED", "FINISHED"),
            f"job {job_id} to end",
            timeout_s,
        )
        # its slots are free again before the next job asks for them
        self._wait(
            lambda: all(t["freeSlots"] == t["slotsNumber"] for t in self._taskmanagers()),
            "the slots to be released",
        )

    def log_tail(self, lines: int = 80) -> str:
        out = []
        for log in sorted((self.home / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {log.name} <==\n" + "\n".join(text))
        return "\n".join(out)

    # --- internals ---------------------------------------------------------------------
    def _script(self, name: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.home / "bin" / name), *args],
            cwd=self.home,
            env=script_env(self.home),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"{name} {' '.join(args)} failed: {done.stderr[-2000:]}")

    def _overview(self) -> dict | None:
        try:
            return _get_json(f"{self.rest_url}/overview", timeout=2)
        except (OSError, ValueError):
            return None

    def _taskmanagers(self) -> list[dict]:
        return _get_json(f"{self.rest_url}/taskmanagers")["taskmanagers"]

    def _registered(self) -> tuple[int, int]:
        tms = self._taskmanagers()
        return len(tms), sum(t["slotsNumber"] for t in tms)

    def _wait(self, condition, what: str, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        while True:
            try:
                if condition():
                    return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out waiting for {what} ({self.rest_url}); logs in {self.home / 'log'}"
                )
            time.sleep(0.3)


# --- packaging --------------------------------------------------------------------------
# --- benchmark --------------------------------------------------------------------------
def measure_throughput(
    bootstrap: str,
    topics: dict[str, str],
    events: int,
    work_dir: Path,
    *,
    taskmanagers: int = 2,
    slots: int = 1,
    parallelism: int | None = None,
    timeout_s: float = 600,
) -> dict:
    """Events/s of the packaged job on a standalone cluster of its own (default 2
    TaskManagers x 1 slot, parallelism = all slots), store off, over ``events`` records
    already in ``topics["events"]`` (read from the earliest offset by a new group).

    The job runs unbounded; the rate is the slope of the customer operator's records-in
    count (Flink's REST API, refreshed every ``metrics.fetcher.update-interval``) between
    10 % and 90 % of ``events``, so start-up and submission are not counted. ``topics``:
    the ``kafka.topics`` mapping (events, dlq, email_requests, outcomes)."""
    from job.config import with_absolute_files
    from job.ops import free_port

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    parallelism = parallelism or taskmanagers * slots
    package()
    home = session_home(work_dir, "flink")
    cluster = Cluster(home=home, rest_port=free_port())
    config = work_dir / "job.yaml"
    # the shipped campaigns and suppression list: their names resolve against conf/
    config.write_text(
        yaml.safe_dump(
            with_absolute_files(
                {
                    "kafka": {
                        "bootstrap_servers": bootstrap,
                        "starting_offsets": "earliest",
                        "group_id": f"bench-cluster-{os.getpid()}-{int(time.time())}",
                        "topics": dict(topics),
                    },
                    "clickhouse": {"enabled": False},
                }
            )
        )
    )
    flink_conf = work_dir / "flink-conf.yaml"
    settings = yaml.safe_load((ROOT / "flink-conf.yaml").read_text())
    settings.pop("execution.checkpointing.interval", None)  # as the mini-cluster rows
    settings["execution.checkpointing.dir"] = (work_dir / "checkpoints").as_uri()
    flink_conf.write_text(yaml.safe_dump(settings))
    cluster.up(taskmanagers, slots)
    try:
        job_id = cluster.submit(
            config, parallelism=parallelism, extra_args=["--flink-conf", str(flink_conf)]
        )
        samples = _records_in_samples(cluster, job_id, events, timeout_s)
        restarts = len(cluster.exceptions(job_id))
        cluster.cancel(job_id)
    finally:
        cluster.down()
    rate = _slope(samples, 0.1 * events, 0.9 * events)
    return {
        "taskmanagers": taskmanagers,
        "slots": slots,
        "parallelism": parallelism,
        "events": events,
        "events_per_s": rate,
        "restarts": restarts,
        "samples": len(samples),
    }


def _records_in_samples(
    cluster: Cluster, job_id: str, events: int, timeout_s: float
) -> list[tuple[float, int]]:
    """(monotonic time, records into the customer operator) at every change, until all
    ``events`` went in."""
    cluster.wait_running(job_id)
    deadline = time.monotonic() + timeout_s
    samples: list[tuple[float, int]] = []
    while True:
        info = cluster.job(job_id)
        if info["state"] != "RUNNING":
            raise ClusterError(f"job {job_id} is {info['state']}: {cluster.exceptions(job_id)}")
        count = sum(
            v["metrics"]["read-records"]
            for v in info["vertices"]
            if v["name"].startswith("customers") or "KEYED PROCESS" in v["name"]
        )
        now = time.monotonic()
        if not samples or count != samples[-1][1]:
            samples.append((now, count))
        if count >= events:
            return samples
        if now > deadline:
            raise ClusterError(f"only {count} of {events} events processed in {timeout_s}s")
        time.sleep(0.2)


def _slope(samples: list[tuple[float, int]], low: float, high: float) -> float:
    """Least-squares records/s over the samples between ``low`` and ``high`` records (the
    first and last sample when fewer than three fall inside)."""
    inside = [(t, n) for t, n in samples if low <= n <= high]
    if len(inside) < 3:
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
    mean_t = sum(t for t, _ in inside) / len(inside)
    mean_n = sum(n for _, n in inside) / len(inside)
    var = sum((t - mean_t) ** 2 for t, _ in inside)
    return sum((t - mean_t) * (n - mean_n) for t, n in inside) / var


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m job.dev.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (JobManager + TaskManagers)")
    up.add_argument("--taskmanagers", type=int, default=1)
    up.add_argument("--slots", type=int, default=2, help="slots per TaskManager")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="REST API and web UI port")
    sub.add_parser("down", help="stop every process of the cluster")
    sub.add_parser("status", help="TaskManagers, slots and jobs")
    args = parser.parse_args(argv)
    port = getattr(args, "port", None) or _running_port(DEFAULT_HOME)
    cluster = Cluster(rest_port=port)
    try:
        if args.command == "up":
            cluster.up(args.taskmanagers, args.slots)
            print(
                f"Flink cluster up: {args.taskmanagers} TaskManager(s) x {args.slots} "
                f"slot(s); web UI {cluster.rest_url}; FLINK_HOME {cluster.home}"
            )
        elif args.command == "down":
            print(f"stopped {cluster.down()} process(es)")
        else:
            print(json.dumps(cluster.status(), indent=2))
    except ClusterError as exc:
        print(f"job.dev.cluster: {exc}", file=sys.stderr)
        return 1
    return 0


def _running_port(home: Path) -> int:
    """The REST port in the generated config (what `down`/`status` talk to)."""
    conf = home / "conf" / "config.yaml"
    if conf.is_file():
        data = yaml.safe_load(conf.read_text()) or {}
        return int(data.get("rest.port", DEFAULT_PORT))
    return DEFAULT_PORT


if __name__ == "__main__":
    sys.exit(main())
