"""job/ops.py: which checkpoint or savepoint ``--resume`` picks, and the savepoint commands'
REST calls and error messages (against a stand-in for Flink's REST API that answers as
Flink 2.0 does; the real API is exercised in tests/e2e/test_resume.py and
tests/cluster/test_savepoint.py)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from job import cli, ops
from job.config import ENV_REST

JOB = "0123456789abcdef0123456789abcdef"
NOW = 1_767_600_000.0


def completed(path: Path, mtime: float, size: int = 10) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "_metadata").write_bytes(b"x" * size)
    os.utime(path / "_metadata", (mtime, mtime))
    return path


def settings(checkpoints: Path, savepoints: Path | None = None) -> dict[str, str]:
    out = {ops.CHECKPOINT_DIR_KEY: checkpoints.as_uri()}
    if savepoints is not None:
        out[ops.SAVEPOINT_DIR_KEY] = savepoints.as_uri()
    return out


# --- finding the newest state ----------------------------------------------------------------


def test_latest_is_the_newest_completed_checkpoint_across_job_directories(tmp_path: Path):
    cp = tmp_path / "checkpoints"
    completed(cp / "job-a" / "chk-40", NOW - 100)
    newest = completed(cp / "job-b" / "chk-3", NOW - 10)  # fewer checkpoints, but newer
    completed(cp / "job-c" / "chk-7", NOW - 50)
    (cp / "job-b" / "chk-4").mkdir()  # in progress: no _metadata yet
    completed(cp / "job-d" / "chk-9", NOW, size=0)  # _metadata being written
    (cp / "job-a" / "shared").mkdir()
    assert ops.latest_snapshot(settings(cp)) == ops.Snapshot(newest, "checkpoint", NOW - 10)


def test_latest_considers_savepoints_too(tmp_path: Path):
    completed(tmp_path / "cp" / "job-a" / "chk-5", NOW - 60)
    sp = completed(tmp_path / "sp" / "savepoint-012345-abcdef", NOW - 5)
    completed(tmp_path / "sp" / "not-a-savepoint", NOW)
    found = ops.latest_snapshot(settings(tmp_path / "cp", tmp_path / "sp"))
    assert (found.path, found.kind) == (sp, "savepoint")


def test_latest_same_second_prefers_the_higher_checkpoint_number(tmp_path: Path):
    completed(tmp_path / "cp" / "j" / "chk-9", NOW)
    ten = completed(tmp_path / "cp" / "j" / "chk-10", NOW)
    assert ops.latest_snapshot(settings(tmp_path / "cp")).path == ten


def test_latest_with_nothing_completed_is_a_clear_error(tmp_path: Path):
    (tmp_path / "cp" / "job-a" / "chk-1").mkdir(parents=True)
    with pytest.raises(ops.OpsError) as caught:
        ops.latest_snapshot(settings(tmp_path / "cp", tmp_path / "sp"))
    assert str(caught.value).startswith(
        f"--resume: no completed checkpoint or savepoint under {tmp_path / 'cp'} and "
        f"{tmp_path / 'sp'}"
    )
    assert "give the path: --resume PATH" in str(caught.value)


def test_latest_on_remote_storage_asks_for_the_path():
    with pytest.raises(ops.OpsError, match="s3://bucket/cp cannot be searched from here"):
        ops.latest_snapshot({ops.CHECKPOINT_DIR_KEY: "s3://bucket/cp"})


@pytest.mark.parametrize("form", ["dir", "metadata", "uri", "relative"])
def test_explicit_path_in_any_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str):
    sp = completed(tmp_path / "savepoint-aaaaaa-bbbbbb", NOW)
    monkeypatch.chdir(tmp_path)
    value = {
        "dir": str(sp),
        "metadata": str(sp / "_metadata"),
        "uri": sp.as_uri(),
        "relative": sp.name,
    }[form]
    assert ops.resolve_snapshot(value) == ops.Snapshot(sp, "savepoint", NOW)


def test_explicit_directory_holding_several_gives_the_newest(tmp_path: Path):
    completed(tmp_path / "job" / "chk-1", NOW - 5)
    chk2 = completed(tmp_path / "job" / "chk-2", NOW)
    assert ops.resolve_snapshot(str(tmp_path / "job")).path == chk2
    assert ops.resolve_snapshot(str(tmp_path)).path == chk2  # a checkpoint directory


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is not a completed checkpoint or savepoint"),
        (lambda p: completed(p, NOW, size=0), "is empty (an incomplete checkpoint)"),
    ],
)
def test_explicit_path_that_is_not_a_completed_snapshot(tmp_path: Path, make, message: str):
    target = tmp_path / "chk-3"
    make(target)
    with pytest.raises(ops.OpsError) as caught:
        ops.resolve_snapshot(str(target))
    assert message in str(caught.value)


def test_resume_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    chk = completed(tmp_path / "cp" / "j" / "chk-4", NOW)
    base = settings(tmp_path / "cp")
    assert ops.resume_settings(base, None) is base
    with caplog.at_level("INFO", logger="inboxflow"):
        latest = ops.resume_settings(base, "")
    assert latest == {**base, ops.RECOVERY_KEY: chk.as_uri()}
    assert f"resuming from checkpoint {chk} (completed 2026-01-05 08:00:00 UTC)" in caplog.text
    explicit = ops.resume_settings(base, str(chk), allow_non_restored=True)
    assert explicit[ops.RECOVERY_KEY] == chk.as_uri()
    assert explicit[ops.IGNORE_UNCLAIMED_KEY] == "true"
    assert ops.resume_settings(base, "s3://b/sp-1")[ops.RECOVERY_KEY] == "s3://b/sp-1"
    with pytest.raises(ops.OpsError, match="needs --resume"):
        ops.resume_settings(base, None, allow_non_restored=True)


def test_run_resume_errors_exit_2_before_starting_anything(tmp_path: Path, capsys):
    conf = tmp_path / "flink-conf.yaml"
    conf.write_text(f"execution.checkpointing.dir: {(tmp_path / 'cp').as_uri()}\n")
    assert cli.main(["run", "--flink-conf", str(conf), "--resume"]) == 2
    assert "inboxflow: --resume: no completed checkpoint" in capsys.readouterr().err
    assert cli.main(["run", "--flink-conf", str(conf), "--resume", str(tmp_path / "x")]) == 2
    assert f"{tmp_path / 'x'} does not exist" in capsys.readouterr().err


# --- the REST calls --------------------------------------------------------------------------


class FakeFlink:
    """Answers like Flink 2.0's REST API for one job; records every request."""

    def __init__(self) -> None:
        self.state = "RUNNING"
        self.requests: list[tuple[str, str, dict | None]] = []
        self.polls_until_done = 2
        self.failure: dict | None = None
        self.trigger_error: tuple[int, str] | None = None

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        self.requests.append((method, path, body))
        if path.startswith("/jobs/") and not path.startswith(f"/jobs/{JOB}"):
            return 404, {
                "errors": [
                    (
                        "org.apache.flink.runtime.rest.NotFoundException: Job "
                        "not found.\n\tat org.apache..."
                    )
                ]
            }
        if method == "GET" and path == f"/jobs/{JOB}":
            return 200, {"jid": JOB, "state": self.state}
        if method == "POST" and path in (f"/jobs/{JOB}/savepoints", f"/jobs/{JOB}/stop"):
            if self.trigger_error:
                return self.trigger_error[0], {"errors": [self.trigger_error[1]]}
            return 202, {"request-id": "trigger-1"}
        if method == "GET" and path == f"/jobs/{JOB}/savepoints/trigger-1":
            self.polls_until_done -= 1
            if self.polls_until_done > 0:
                return 200, {"status": {"id": "IN_PROGRESS"}}
            if self.failure:
                return 200, {
                    "status": {"id": "COMPLETED"},
                    "operation": {"failure-cause": self.failure},
                }
            return 200, {
                "status": {"id": "COMPLETED"},
                "operation": {"location": "file:/sp/savepoint-012345-abcdef"},
            }
        if method == "PATCH" and path == f"/jobs/{JOB}?mode=cancel":
            return 202, {}
        return 404, {"errors": ["Not found: " + path]}


@pytest.fixture
def flink(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeFlink, str]]:
    fake = FakeFlink()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, reply = fake.handle(self.command, self.path, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    monkeypatch.setattr(ops, "_POLL_S", 0.01)
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_savepoint_triggers_polls_and_prints_the_location(flink, capsys):
    fake, url = flink
    assert cli.main(["savepoint", JOB, "--rest", url]) == 0
    assert capsys.readouterr().out == "file:/sp/savepoint-012345-abcdef\n"
    assert fake.requests == [
        ("GET", f"/jobs/{JOB}", None),
        ("POST", f"/jobs/{JOB}/savepoints", {"cancel-job": False}),
        ("GET", f"/jobs/{JOB}/savepoints/trigger-1", None),
        ("GET", f"/jobs/{JOB}/savepoints/trigger-1", None),
    ]


def test_savepoint_into_a_given_directory(flink, tmp_path: Path):
    fake, url = flink
    assert cli.main(["savepoint", JOB, "--rest", url, "--dir", str(tmp_path)]) == 0
    assert fake.requests[1][2] == {"cancel-job": False, "target-directory": tmp_path.as_uri()}


def test_stop_with_savepoint_never_drains(flink, capsys, tmp_path: Path):
    fake, url = flink
    assert cli.main(["stop", JOB, "--savepoint", "--rest", url, "--dir", "s3://bucket/sp"]) == 0
    assert fake.requests[1] == (
        "POST",
        f"/jobs/{JOB}/stop",
        {"drain": False, "targetDirectory": "s3://bucket/sp"},
    )
    assert capsys.readouterr().out == "file:/sp/savepoint-012345-abcdef\n"


def test_stop_without_savepoint_cancels(flink, capsys):
    fake, url = flink
    assert cli.main(["stop", JOB, "--rest", url]) == 0
    assert fake.requests[-1] == ("PATCH", f"/jobs/{JOB}?mode=cancel", None)
    assert capsys.readouterr().out == ""


def test_unknown_job(flink, capsys):
    _, url = flink
    other = "f" * 32
    assert cli.main(["savepoint", other, "--rest", url]) == 1
    assert capsys.readouterr().err == (
        f"inboxflow savepoint: no job {other} on {url} (list the jobs: {url}/jobs/overview)\n"
    )


def test_not_a_job_id(flink, capsys):
    fake, url = flink
    assert cli.main(["stop", "my-job", "--savepoint", "--rest", url]) == 1
    assert "'my-job' is not a Flink job id (32 hex digits" in capsys.readouterr().err
    assert fake.requests == []


def test_job_not_running(flink, capsys):
    fake, url = flink
    fake.state = "FINISHED"
    assert cli.main(["savepoint", JOB, "--rest", url]) == 1
    assert capsys.readouterr().err == (
        f"inboxflow savepoint: job {JOB} on {url} is FINISHED: only a running job can take a "
        f"savepoint\n"
    )


def test_failed_savepoint_names_the_cause(flink, capsys):
    fake, url = flink
    fake.failure = {
        "class": "org.apache.flink.util.SerializedThrowable",
        "stack-trace": "java.util.concurrent.CompletionException: java.util.concurrent."
        "CompletionException: org.apache.flink.runtime.checkpoint."
        "CheckpointException: Checkpoint was declined.\n\tat org.apache.x(X.java:1)\n"
        "Caused by: java.io.IOException: No space left on device\n\t... 5 more",
    }
    assert cli.main(["stop", JOB, "--savepoint", "--rest", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"inboxflow stop: stop-with-savepoint of job {JOB} failed: "
        f"java.util.concurrent.CompletionException"
    )
    assert err.rstrip().endswith("(caused by java.io.IOException: No space left on device)")


def test_cluster_without_a_savepoint_directory(flink, capsys):
    fake, url = flink
    fake.trigger_error = (
        400,
        (
            "Config key [execution.checkpointing.savepoint-dir] is not "
            "set. Property [target-directory] must be provided."
        ),
    )
    assert cli.main(["savepoint", JOB, "--rest", url]) == 1
    assert capsys.readouterr().err == (
        f"inboxflow savepoint: the cluster at {url} has no default savepoint directory "
        f"(execution.checkpointing.savepoint-dir): give one with --dir PATH\n"
    )


def test_savepoint_that_does_not_complete_in_time(flink, capsys):
    fake, url = flink
    fake.polls_until_done = 10**9
    assert cli.main(["savepoint", JOB, "--rest", url, "--timeout", "0.2"]) == 1
    assert "not complete after 0 s (trigger trigger-1)" in capsys.readouterr().err


def test_unreachable_rest_api(capsys):
    from job.ops import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["savepoint", JOB, "--rest", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"inboxflow savepoint: cannot reach Flink's REST API at {url}")
    assert f"Give it with --rest URL or {ENV_REST}" in err


def test_rest_url_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_REST, "http://flink.internal:8081")
    args = cli.build_parser().parse_args(["savepoint", JOB])
    assert args.rest == "http://flink.internal:8081"
    monkeypatch.delenv(ENV_REST)
    assert cli.build_parser().parse_args(["stop", JOB]).rest == ops.DEFAULT_REST


def test_dry_run_refuses_to_resume_production_state_without_a_path(capsys):
    from job.main import parse_args, run_from_args

    assert run_from_args(parse_args(["--dry-run", "--resume"])) == 2
    assert "--dry-run --resume needs a PATH" in capsys.readouterr().err
