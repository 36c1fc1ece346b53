"""Hosts the embedded ClickHouse engine (chdb) in a child process of the Flink TaskManager.

Why: chdb installs ClickHouse's fatal-signal handlers for SIGSEGV/SIGBUS/SIGILL/SIGFPE when
its library is loaded and again when the engine starts, with raw system calls (libjsig cannot
intercept them). The JVM raises SIGSEGV itself on every safepoint poll and implicit null
check, so a JVM thread that faults while the large library loads lands in ClickHouse's
handler, never returns, and the whole TaskManager hangs at its next safepoint
(docs/DESIGN.md#chdb-signals). No window exists if the engine never enters the JVM: the
writer's Store talks to this process, which owns the chdb path, over a socket pair. A crash
of the engine then kills this process, not the TaskManager: the Store sees a transient error
and starts a new host.

Protocol (``multiprocessing.connection`` framing, pickle): the parent sends
``(method, args, kwargs)`` for ``command``, ``query`` and ``raw_insert``; the host answers
``("ok", value)`` or ``("error", kind, message)`` where ``kind`` names the
:class:`udfs.clickhouse.errors.StoreError` subclass it classified the failure as. The first
message from the host is its answer to opening the engine. The host exits when its socket
closes, so it never outlives the TaskManager (SIGKILL included) by more than the insert it is
running.

``python -m udfs.clickhouse.host FD PATH`` is the host's entry point; :class:`HostedClient` is the
parent's side, with the subset of the clickhouse-connect client API that ``Store`` uses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from udfs.clickhouse import errors
from udfs.clickhouse.engine import open_client

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_CLOSE_TIMEOUT_S = 30


def python_executable() -> str:
    """The interpreter to run the host with: the one whose library this process runs.

    Embedded in the JVM (Flink thread mode) ``sys.executable`` is whatever ``python3`` the
    PATH gave (a pyenv shim, say) and can be another version; ``sys.exec_prefix`` is the
    installation whose libpython is loaded. The host gets this process's ``sys.path``, so it
    sees the same packages (the virtualenv's included) whichever binary runs it.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for path in (os.path.join(sys.exec_prefix, "bin", version), sys.executable):
        if path and os.path.basename(path).startswith("python") and os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"no {version} interpreter found for the chdb host under {sys.exec_prefix}")


class HostedClient:
    """The parent's side: ``command``, ``query``, ``raw_insert`` and ``close``, forwarded.

    Not thread-safe on its own; the client module serialises every call on its connection lock.
    ``dead`` turns true once the host is gone, and the Store then starts a new one.
    """

    def __init__(self, chdb_path: str):
        self._errors = {
            cls.__name__: cls
            for cls in (
                errors.StoreError,
                errors.TransientStoreError,
                errors.RowRejected,
                errors.StoreLockedError,
            )
        }
        self.dead = False
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            dict.fromkeys(p for p in (_PACKAGE_ROOT, *sys.path) if p)
        )
        # The engine resolves paths against its working directory on every insert: it must
        # outlive the job's code directory, which a TaskManager deletes while this host (and
        # the module that started it) can live on (udfs/paths.py).
        workdir = os.path.dirname(chdb_path.rstrip("/")) or "/"
        os.makedirs(workdir, exist_ok=True)
        try:
            self._proc = subprocess.Popen(
                [
                    python_executable(),
                    "-m",
                    "udfs.clickhouse.host",
                    str(theirs.fileno()),
                    chdb_path,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=workdir,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self._answer()  # the engine is open, or the reason it is not
        except BaseException:
            self.close()
            raise

    def _answer(self) -> Any:
        try:
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.dead = True
            try:
                code = self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # its socket is gone: it is of no use any more
                self._proc.kill()
                code = self._proc.wait()
            raise self._errors["TransientStoreError"](
                f"the chdb host process (pid {self._proc.pid}) exited with code {code}"
            ) from exc
        if message[0] == "ok":
            return message[1]
        _, kind, text = message
        raise self._errors.get(kind, self._errors["StoreError"])(text)

    def _request(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.dead:
            raise self._errors["TransientStoreError"]("the chdb host process is gone")
        try:
            self._conn.send((method, args, kwargs))
        except OSError as exc:
            self.dead = True
            raise self._errors["TransientStoreError"](
                f"the chdb host process (pid {self._proc.pid}) is gone: {exc}"
            ) from exc
        return self._answer()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._request("command", sql, parameters=parameters)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> SimpleNamespace:
        names, rows = self._request("query", sql, parameters=parameters)
        return SimpleNamespace(column_names=names, result_rows=rows)

    def raw_insert(self, table: str, **kwargs: Any) -> None:
        self._request("raw_insert", table, **kwargs)

    def close(self) -> None:
        """Ask the host to close the engine (releasing the path's lock) and wait for it."""
        if not self._conn.closed:
            try:
                if not self.dead:
                    self._conn.send(("close", (), {}))
            except OSError:
                pass
            self._conn.close()
        self.dead = True
        try:
            self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# --------------------------------------------------------------------------- the host


def _plain(value: Any) -> Any:
    """What ``command`` returned, if it is data (EXISTS, SELECT 1); summaries are dropped."""
    return value if isinstance(value, (int, float, str, bytes, list, tuple, type(None))) else None


def _error_reply(exc: Exception) -> tuple[str, str, str]:
    """``("error", kind, message)``: the failure as :func:`errors.classify_error` sorts it."""
    error = errors.classify_error(exc)
    return ("error", type(error).__name__, str(error))


def serve(conn: Connection, chdb_path: str) -> None:
    try:
        client = open_client("chdb://" + chdb_path)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(_error_reply(exc))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except EOFError:
                return
            if method == "close":
                return
            try:
                if method == "query":
                    result = client.query(*args, **kwargs)
                    value: Any = (
                        list(result.column_names),
                        [tuple(row) for row in result.result_rows],
                    )
                elif method == "command":
                    value = _plain(client.command(*args, **kwargs))
                elif method == "raw_insert":
                    client.raw_insert(*args, **kwargs)
                    value = None
                else:
                    raise errors.StoreError(f"unknown chdb host request {method!r}")
            except Exception as exc:  # noqa: BLE001 - classified and sent to the parent
                conn.send(_error_reply(exc))
            else:
                conn.send(("ok", value))
    finally:
        client.close()


def main(argv: list[str]) -> int:
    fd, chdb_path = int(argv[0]), argv[1]
    conn = Connection(fd)
    try:
        serve(conn, chdb_path)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
