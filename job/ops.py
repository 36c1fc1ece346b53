"""Operations on the job's state: resume from a retained checkpoint or a savepoint, take a
savepoint, stop with a savepoint (``inboxflow run --resume``, ``inboxflow savepoint``,
``inboxflow stop``).

Where state lives (``flink-conf.yaml``): checkpoints under ``execution.checkpointing.dir``, one
directory per job id, ``<job id>/chk-<n>``, retained when the job is cancelled or killed
(``RETAIN_ON_CANCELLATION``); savepoints under ``execution.checkpointing.savepoint-dir``,
``savepoint-<job id prefix>-<random>``. A checkpoint or savepoint is complete once its
``_metadata`` file exists: Flink writes it last.

Savepoints are taken through the REST API of the cluster that runs the job: a standalone
cluster (``http://127.0.0.1:8081``) or the mini-cluster of ``inboxflow run``, which logs its
REST URL and takes a fixed port with ``--rest-port``. Stop-with-savepoint never drains:
draining would advance event time to the end and send every pending reminder early.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from job.config import ENV_REST

log = logging.getLogger("inboxflow")

DEFAULT_REST = "http://127.0.0.1:8081"
CHECKPOINT_DIR_KEY = "execution.checkpointing.dir"
SAVEPOINT_DIR_KEY = "execution.checkpointing.savepoint-dir"
RECOVERY_KEY = "execution.state-recovery.path"
IGNORE_UNCLAIMED_KEY = "execution.state-recovery.ignore-unclaimed-state"
METADATA = "_metadata"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_POLL_S = 0.5


class OpsError(RuntimeError):
    """An operation cannot be done; the message says why and what to do, for the user."""


@dataclass(frozen=True)
class Snapshot:
    """A completed checkpoint or savepoint directory."""

    path: Path
    kind: str  # "checkpoint" or "savepoint"
    completed_at: float  # mtime of its _metadata, seconds since the epoch

    @property
    def uri(self) -> str:
        return self.path.as_uri()

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.completed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.kind} {self.path} (completed {when})"


# --- finding state ---------------------------------------------------------------------------


def local_path(value: str) -> Path | None:
    """A local directory from a path or a ``file:`` URI; None for another scheme (s3://...)."""
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        return None
    return Path(value).expanduser().resolve()


def _snapshot(metadata: Path, kind: str) -> Snapshot | None:
    try:
        stat = metadata.stat()
    except OSError:  # deleted meanwhile (Flink keeps only the newest checkpoints)
        return None
    return Snapshot(metadata.parent, kind, stat.st_mtime) if stat.st_size > 0 else None


def completed_snapshots(
    checkpoint_dir: Path | None, savepoint_dir: Path | None = None
) -> list[Snapshot]:
    """Every completed checkpoint (``<dir>/<job id>/chk-<n>/_metadata``) and savepoint
    (``<dir>/savepoint-*/_metadata``), oldest first by completion time."""
    found: list[Snapshot] = []
    if checkpoint_dir is not None and checkpoint_dir.is_dir():
        found += [
            s
            for m in checkpoint_dir.glob(f"*/chk-*/{METADATA}")
            if (s := _snapshot(m, "checkpoint"))
        ]
    if savepoint_dir is not None and savepoint_dir.is_dir():
        found += [
            s
            for m in savepoint_dir.glob(f"savepoint-*/{METADATA}")
            if (s := _snapshot(m, "savepoint"))
        ]
    return sorted(found, key=_order)


def _order(s: Snapshot) -> tuple:
    # completion time; within the same second, the higher checkpoint number
    number = s.path.name.removeprefix("chk-")
    return (s.completed_at, int(number) if number.isdigit() else -1, str(s.path))


def _dir_setting(settings: dict[str, str], key: str) -> tuple[Path | None, str | None]:
    value = settings.get(key)
    if not value:
        return None, None
    return local_path(value), value


def latest_snapshot(settings: dict[str, str]) -> Snapshot:
    """The newest completed checkpoint or savepoint under the directories of ``settings``."""
    checkpoints, raw_checkpoints = _dir_setting(settings, CHECKPOINT_DIR_KEY)
    savepoints, raw_savepoints = _dir_setting(settings, SAVEPOINT_DIR_KEY)
    remote = [
        v
        for p, v in ((checkpoints, raw_checkpoints), (savepoints, raw_savepoints))
        if v and p is None
    ]
    found = completed_snapshots(checkpoints, savepoints)
    if found:
        return found[-1]
    looked = " and ".join(str(p) for p in (checkpoints, savepoints) if p is not None)
    hint = (
        f"; {', '.join(remote)} cannot be searched from here: give the path, --resume PATH"
        if remote
        else ""
    )
    raise OpsError(
        f"--resume: no completed checkpoint or savepoint under {looked or 'nothing'} "
        f"(a checkpoint is complete once its {METADATA} file is written; with "
        f"{CHECKPOINT_DIR_KEY} unset there are none){hint}. Start without --resume for an "
        f"empty state, or give the path: --resume PATH"
    )


def resolve_snapshot(value: str) -> Snapshot:
    """``value``: a local checkpoint or savepoint directory (or its ``_metadata`` file), as a
    path or ``file:`` URI; a directory holding several (a job's checkpoint directory, the
    savepoint directory) gives the newest of them."""
    path = local_path(value)
    if path is None:
        raise OpsError(f"--resume {value}: not a local path")
    if path.name == METADATA:
        path = path.parent
    if (path / METADATA).is_file():
        kind = "checkpoint" if path.name.startswith("chk-") else "savepoint"
        snapshot = _snapshot(path / METADATA, kind)
        if snapshot is not None:
            return snapshot
        raise OpsError(
            f"--resume {value}: {path / METADATA} is empty (an incomplete "
            f"checkpoint); use an older one or the newest: --resume"
        )
    if not path.exists():
        raise OpsError(f"--resume {value}: {path} does not exist")
    if path.is_dir():
        inside = completed_snapshots(path, path) + [
            s for m in path.glob(f"chk-*/{METADATA}") if (s := _snapshot(m, "checkpoint"))
        ]
        if inside:
            return max(inside, key=_order)
    raise OpsError(
        f"--resume {value}: {path} is not a completed checkpoint or savepoint "
        f"(no {METADATA} in it or below it)"
    )


def resume_settings(
    settings: dict[str, str], resume: str | None, *, allow_non_restored: bool = False
) -> dict[str, str]:
    """``settings`` that restore the job from ``resume`` (None: no change; ``""``: the
    newest completed checkpoint or savepoint). Logs which one it uses."""
    if resume is None:
        if allow_non_restored:
            raise OpsError("--allow-non-restored-state needs --resume")
        return settings
    if resume and local_path(resume) is None:  # s3://... : Flink checks it
        log.info("resuming from %s", resume)
        out = {**settings, RECOVERY_KEY: resume}
    else:
        snapshot = resolve_snapshot(resume) if resume else latest_snapshot(settings)
        log.info("resuming from %s", snapshot.describe())
        out = {**settings, RECOVERY_KEY: snapshot.uri}
    if allow_non_restored:
        out[IGNORE_UNCLAIMED_KEY] = "true"
    return out


# --- the REST API ----------------------------------------------------------------------------


class FlinkRest:
    """The few calls of Flink's REST API the savepoint commands need."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            raise _HttpError(exc.code, _errors(exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OpsError(
                f"cannot reach Flink's REST API at {self.url} ({reason}): is the cluster (or "
                f"`inboxflow run`, which logs its REST URL) running? Give it with --rest URL "
                f"or {ENV_REST}"
            ) from None
        return json.loads(text) if text.strip() else {}

    def job_status(self, job_id: str) -> str:
        try:
            return str(self._call("GET", f"/jobs/{job_id}")["state"])
        except _HttpError as exc:
            if exc.status == 404:
                raise OpsError(
                    f"no job {job_id} on {self.url} (list the jobs: {self.url}/jobs/overview)"
                ) from None
            raise OpsError(f"job {job_id} on {self.url}: {exc}") from None

    def require_running(self, job_id: str) -> None:
        if not _JOB_ID.match(job_id):
            raise OpsError(
                f"{job_id!r} is not a Flink job id (32 hex digits, as `inboxflow "
                f"run` logs it and {self.url}/jobs/overview lists it)"
            )
        status = self.job_status(job_id)
        if status != "RUNNING":
            raise OpsError(
                f"job {job_id} on {self.url} is {status}: only a running job can take a savepoint"
            )

    def savepoint(self, job_id: str, target_dir: str | None, timeout_s: float) -> str:
        """Trigger a savepoint and wait for it; its location."""
        self.require_running(job_id)
        body: dict = {"cancel-job": False}
        if target_dir is not None:
            body["target-directory"] = target_dir
        trigger = self._trigger(f"/jobs/{job_id}/savepoints", body)
        return self._await(job_id, trigger, timeout_s, "savepoint")

    def stop_with_savepoint(self, job_id: str, target_dir: str | None, timeout_s: float) -> str:
        """Stop the job with a savepoint (no drain: pending timers stay pending); its
        location once the savepoint is complete."""
        self.require_running(job_id)
        body: dict = {"drain": False}
        if target_dir is not None:
            body["targetDirectory"] = target_dir
        trigger = self._trigger(f"/jobs/{job_id}/stop", body)
        return self._await(job_id, trigger, timeout_s, "stop-with-savepoint")

    def cancel(self, job_id: str) -> None:
        self.require_running(job_id)
        try:
            self._call("PATCH", f"/jobs/{job_id}?mode=cancel")
        except _HttpError as exc:
            raise OpsError(f"cancelling job {job_id} on {self.url} failed: {exc}") from None

    def _trigger(self, path: str, body: dict) -> str:
        try:
            return str(self._call("POST", path, body)["request-id"])
        except _HttpError as exc:
            if "savepoint" in str(exc).lower() and "not set" in str(exc).lower():
                raise OpsError(
                    f"the cluster at {self.url} has no default savepoint directory "
                    f"({SAVEPOINT_DIR_KEY}): give one with --dir PATH"
                ) from None
            raise OpsError(f"POST {self.url}{path} failed: {exc}") from None

    def _await(self, job_id: str, trigger: str, timeout_s: float, what: str) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            except _HttpError as exc:
                raise OpsError(f"{what} of job {job_id}: status unavailable: {exc}") from None
            if (reply.get("status") or {}).get("id") == "COMPLETED":
                operation = reply.get("operation") or {}
                if "location" in operation and not operation.get("failure-cause"):
                    return str(operation["location"])
                raise OpsError(
                    f"{what} of job {job_id} failed: {_cause(operation.get('failure-cause'))}"
                )
            if time.monotonic() > deadline:
                raise OpsError(
                    f"{what} of job {job_id} not complete after {timeout_s:.0f} s "
                    f"(trigger {trigger}); see the job's checkpoints in the web UI "
                    f"{self.url}"
                )
            time.sleep(_POLL_S)


class _HttpError(Exception):
    def __init__(self, status: int, errors: str) -> None:
        super().__init__(f"HTTP {status}: {errors}")
        self.status = status


def _errors(body: bytes) -> str:
    """The first line of each of Flink's error messages (a message may hold a stack trace)."""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:200]
    return "; ".join(str(e).strip().splitlines()[0][:300] for e in errors if str(e).strip())


def _cause(cause: object) -> str:
    """Class and message of a serialized Flink exception, innermost reason first lines."""
    if not isinstance(cause, dict):
        return "unknown cause"
    trace = str(cause.get("stack-trace") or "")
    lines = [
        ln.strip()
        for ln in trace.splitlines()
        if ln.strip() and not ln.strip().startswith(("at ", "..."))
    ]
    causes = [ln.removeprefix("Caused by: ") for ln in lines if ln.startswith("Caused by:")]
    first = lines[0] if lines else str(cause.get("class") or "unknown cause")
    return first[:300] + (f" (caused by {causes[-1][:300]})" if causes else "")


# --- the commands ----------------------------------------------------------------------------


def _target_dir(value: str | None) -> str | None:
    """A URI for Flink; None: the cluster's own ``execution.checkpointing.savepoint-dir``."""
    if value is None:
        return None
    path = local_path(value)
    return path.as_uri() if path is not None else value


def _take_savepoint(
    args: argparse.Namespace,
    command: str,
    doing: str,
    take: Callable[[FlinkRest, str, str | None, float], str],
) -> str | None:
    """The location of the savepoint that ``take`` (a :class:`FlinkRest` method) makes of
    ``args.job_id`` into ``--dir``, logged first as ``doing`` (with the job id and the REST
    URL); None once ``inboxflow COMMAND: why`` is printed."""
    rest = FlinkRest(args.rest)
    try:
        target = _target_dir(args.dir)
        log.info(
            doing + " into %s",
            args.job_id,
            rest.url,
            target or "the cluster's savepoint directory",
        )
        return take(rest, args.job_id, target, args.timeout)
    except OpsError as exc:
        print(f"inboxflow {command}: {exc}", file=sys.stderr)
        return None


def savepoint_command(args: argparse.Namespace) -> int:
    location = _take_savepoint(args, "savepoint", "savepoint of job %s on %s", FlinkRest.savepoint)
    if location is None:
        return 1
    log.info("savepoint complete; resume from it with: inboxflow run --resume %s", location)
    print(location)
    return 0


def stop_command(args: argparse.Namespace) -> int:
    if not args.savepoint:
        rest = FlinkRest(args.rest)
        log.info(
            "cancelling job %s on %s (no savepoint; its last checkpoint is kept)",
            args.job_id,
            rest.url,
        )
        try:
            rest.cancel(args.job_id)
        except OpsError as exc:
            print(f"inboxflow stop: {exc}", file=sys.stderr)
            return 1
        return 0
    location = _take_savepoint(
        args, "stop", "stopping job %s on %s with a savepoint", FlinkRest.stop_with_savepoint
    )
    if location is None:
        return 1
    log.info(
        "job %s stopped; resume from its savepoint with: inboxflow run --resume %s",
        args.job_id,
        location,
    )
    print(location)
    return 0


def register(sub) -> None:
    """The ``savepoint`` and ``stop`` subcommands."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "job_id",
            metavar="JOB_ID",
            help="Flink job id (`inboxflow run` logs it; the web UI lists it)",
        )
        parser.add_argument(
            "--rest",
            default=os.environ.get(ENV_REST, DEFAULT_REST),
            metavar="URL",
            help=f"Flink REST API (default ${ENV_REST} or {DEFAULT_REST}, the "
            f"standalone cluster; `inboxflow run` logs its own URL)",
        )
        parser.add_argument(
            "--dir",
            metavar="PATH",
            help="savepoint directory (default: the cluster's "
            "execution.checkpointing.savepoint-dir; flink-conf.yaml sets "
            "var/savepoints)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="how long to wait for the savepoint (default 300)",
        )

    savepoint = sub.add_parser(
        "savepoint",
        help="take a savepoint of a running job; prints its path",
        description="Take a savepoint of a running job and print its path; the job keeps "
        "running. Resume from it with `inboxflow run --resume PATH`.",
    )
    common(savepoint)
    savepoint.set_defaults(func=savepoint_command)
    stop = sub.add_parser(
        "stop",
        help="stop a running job with a savepoint (--savepoint); prints its path",
        description="Stop a running job. With --savepoint: stop-with-savepoint (pending "
        "reminders stay pending; nothing is drained) and print the savepoint's "
        "path. Without: cancel it (its last checkpoint is kept).",
    )
    common(stop)
    stop.add_argument(
        "--savepoint", action="store_true", help="take a savepoint as the job stops (recommended)"
    )
    stop.set_defaults(func=stop_command)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
