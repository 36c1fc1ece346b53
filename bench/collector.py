"""The collector row of ``make bench`` (``--only collector``): sustained requests/s and p50/p99
latency of ``inboxflow collect`` for single events and for batches of 100, against the bench's
Tansu broker, next to a "produce floor": the same events produced straight through librdkafka.

One run of a shape (:func:`child_shape`, a child process of the bench like every other run):

1. a fresh events topic (2 partitions) and a config file that differs from the shipped one
   only in the broker, that topic and the rate limits (off);
2. the collector in a process of its own (``python -m job.cli collect``: the load generator
   must not share its GIL), write key in ``INBOXFLOW_WRITE_KEYS``; ``GET /healthz`` 200 first;
3. ``connections`` keep-alive HTTP/1.1 connections (a small asyncio client over raw streams,
   Content-Length framing), each sending ``POST /v1/events`` back to back: a warm-up of
   ``warmup_s`` (not counted), then ``seconds`` measured. Bodies are built before each phase
   starts (unique event ids, timestamps = now, customers spread over :data:`CUSTOMERS`); the
   measured phase's pool is sized from the warm-up's rate. Latency = send start -> full
   response read;
4. the collector is stopped (SIGTERM: uvicorn's graceful shutdown), the topic is read back and
   counted: it must hold exactly the events answered 202 (warm-up included). Any answer other
   than 202, a transport error, or a count that differs fails the run: no rate is reported
   from errors.

The floor (:func:`child_floor`, a child process too): the same events (as many as the round's
largest collector run accepted, at least :data:`FLOOR_MIN_EVENTS`) produced by one
confluent-kafka Producer with the collector's own settings (``acks=all``, ``linger.ms`` 2,
no idempotence), as fast as it takes them, timed from the first produce to the last delivery
report; then counted back the same way. The collector's events/s are quoted as a fraction of
it, per round (the runs of a round are made one after the other: single, batch, floor).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run import _count_records, median, percentile, ratio_summary
from udfs.clock import wall_ms

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("single", "batch")
SHAPE_LABELS = {"single": "single event", "batch": "batch of 100"}
BATCH_EVENTS = 100
CONNECTIONS = 16
SECONDS, SECONDS_QUICK = 10, 3
WARMUP_S = 2.0
CUSTOMERS = 1000
PARTITIONS = 2
SOURCE = "bench"
WRITE_KEY = "bench-collector-write-key-0001"
HOST = "127.0.0.1"
PATH = "/v1/events"
# the produce floor moves at least this many events (fewer take less than its start-up noise)
FLOOR_MIN_EVENTS = 100_000
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
EXCHANGE_TIMEOUT_S = 30.0
# requests built for the warm-up, per shape (the pool refills itself on the fly if short)
WARMUP_POOL = {"single": 6_000, "batch": 500}
# the measured phase's pool: the warm-up's rate x seconds x this, at most POOL_MAX_BYTES
# (a single event takes ~15 µs to build, a batch ~0.9 ms: the batch's pool is kept smaller)
POOL_HEADROOM = {"single": 3.0, "batch": 2.0}
POOL_MAX_BYTES = 400 * 1024 * 1024
# a phase this long after the last one reconnects first (the collector's keep-alive is 5 s)
RECONNECT_AFTER_S = 3.0
# non-202 answers kept verbatim per run (the first ones)
ERROR_SAMPLES = 5


# --------------------------------------------------------------------------- pure helpers


def event(n: int, tag: str, now_ms: int) -> dict[str, Any]:
    """Event ``n`` of a run tagged ``tag``: a cart_add or a page_view (alternating) of one of
    :data:`CUSTOMERS` customers, event id ``{tag}-{n}``, stamped ``now_ms``."""
    cid = f"bench-c{n % CUSTOMERS:04d}"
    product = f"p{n % 50}"
    base: dict[str, Any] = {"event_id": f"{tag}-{n}", "customer_id": cid, "timestamp": now_ms}
    if n % 2 == 0:
        return {
            "event_type": "cart_add",
            **base,
            "properties": {
                "product_id": product,
                "price": 19.5,
                "quantity": 1,
                "currency": "EUR",
                "cart_id": f"cart-{cid}",
                "name": "Mug",
                "category": "kitchen",
            },
        }
    return {
        "event_type": "page_view",
        **base,
        "properties": {
            "path": f"/products/{product}",
            "url": f"https://shop.example.com/products/{product}",
            "title": "Mug",
        },
    }


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def event_count(shape: str) -> int:
    """Events per request of ``shape``."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    return BATCH_EVENTS if shape == "batch" else 1


def body(shape: str, first: int, tag: str, now_ms: int) -> bytes:
    """The JSON body of one request of ``shape`` holding events ``first``, ``first + 1``,
    ...: one event, or ``{"batch": [100 events]}``."""
    if event_count(shape) == 1:
        return _dumps(event(first, tag, now_ms))
    return _dumps({"batch": [event(first + k, tag, now_ms) for k in range(BATCH_EVENTS)]})


def request(payload: bytes, key: str = WRITE_KEY, host: str = HOST) -> bytes:
    """The whole HTTP/1.1 request (keep-alive, Content-Length) posting ``payload``."""
    head = (
        f"POST {PATH} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + payload


def accepted_body(events: int) -> bytes:
    """The collector's 202 body for ``events`` (Starlette's compact JSON)."""
    return _dumps({"accepted": events})


class ProtocolError(Exception):
    """An answer the client cannot frame (no status line, no Content-Length, ...)."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection before the answer's first byte."""


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased) of a response head, the blank line included
    or not."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response from ``reader``: status, headers, body (Content-Length framing only: the
    collector never chunks)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionClosed("the server closed the connection") from None
        raise ProtocolError("the connection closed inside a response head") from None
    status, headers = parse_head(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ProtocolError("chunked response (the client frames by Content-Length only)")
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        raise ProtocolError(f"response {status} without a Content-Length")
    try:
        payload = await reader.readexactly(int(length))
    except asyncio.IncompleteReadError:
        raise ProtocolError("the connection closed inside a response body") from None
    return status, headers, payload


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, p50, p90, p99 (nearest rank) and max of latencies in ms."""
    return {
        "count": len(latencies_ms),
        "mean": sum(latencies_ms) / len(latencies_ms) if latencies_ms else None,
        "p50": percentile(latencies_ms, 50),
        "p90": percentile(latencies_ms, 90),
        "p99": percentile(latencies_ms, 99),
        "max": max(latencies_ms) if latencies_ms else None,
    }


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of the values that are present."""
    present = [v for v in values if v is not None]
    return {
        "median": median(present),
        "min": min(present) if present else None,
        "max": max(present) if present else None,
    }


def run_problems(result: dict[str, Any]) -> list[str]:
    """Why a collector run reports no rate: answers other than 202, transport errors, 202
    bodies that do not name the events sent, and a topic that does not hold exactly the
    events answered 202."""
    problems = []
    statuses = {s: n for s, n in result["statuses"].items() if s != "202"}
    if statuses:
        listed = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        problems.append(f"{sum(statuses.values())} answers other than 202 ({listed})")
    if result["transport_errors"]:
        problems.append(f"{result['transport_errors']} transport errors")
    if result["accepted_mismatches"]:
        problems.append(f"{result['accepted_mismatches']} 202 bodies not naming the events sent")
    records = result.get("records_in_topic")
    if records is not None and records != result["accepted_total"]:
        problems.append(
            f"the topic holds {records:,} records, the collector answered 202 for "
            f"{result['accepted_total']:,} events"
        )
    return problems


def floor_events(round_results: Sequence[dict[str, Any]]) -> int:
    """Events for the produce floor of a round: as many as the round's largest collector run
    accepted in its measured phase, at least :data:`FLOOR_MIN_EVENTS`."""
    accepted = [r.get("events", 0) for r in round_results if r.get("events")]
    return max([FLOOR_MIN_EVENTS, *accepted])


# --------------------------------------------------------------------------- load generator


@dataclass
class Phase:
    """What the connections saw in one phase: per request latency and status."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    events: int = 0  # events of the requests answered 202
    transport_errors: int = 0
    accepted_mismatches: int = 0
    samples: list[str] = field(default_factory=list)
    started: float = 0.0
    last_answer: float = 0.0

    @property
    def seconds(self) -> float:
        return max(0.0, self.last_answer - self.started)

    def note(self, text: str) -> None:
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(text[:300])


class Pool:
    """Requests built ahead of a phase (unique event numbers across the run); one built on
    the spot when the pool runs dry is counted in ``built_late``."""

    def __init__(self, shape: str, tag: str) -> None:
        self.shape, self.tag = shape, tag
        self.per_request = event_count(shape)
        self.next_event = 0
        self.built_late = 0
        self._ready: deque[bytes] = deque()

    def _build(self, now_ms: int) -> bytes:
        payload = body(self.shape, self.next_event, self.tag, now_ms)
        self.next_event += self.per_request
        return request(payload)

    def fill(self, count: int) -> None:
        now = wall_ms()
        self._ready.extend(self._build(now) for _ in range(count))

    def take(self) -> bytes:
        if self._ready:
            return self._ready.popleft()
        self.built_late += 1
        return self._build(wall_ms())

    def __len__(self) -> int:
        return len(self._ready)


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.connects += 1

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            await self.connect()
        assert self.writer is not None and self.reader is not None
        self.writer.write(data)
        await self.writer.drain()
        status, headers, payload = await read_response(self.reader)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload


async def _worker(client: Client, pool: Pool, phase: Phase, end: float) -> None:
    ok_body = accepted_body(pool.per_request)
    clock = time.perf_counter
    while clock() < end:
        data = pool.take()
        started = clock()
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
                status, payload = await client.exchange(data)
        except (OSError, ProtocolError, TimeoutError) as exc:
            phase.transport_errors += 1
            phase.note(f"transport: {type(exc).__name__}: {exc}")
            await client.close()
            continue
        done = clock()
        phase.latencies_ms.append((done - started) * 1000)
        phase.statuses[status] += 1
        phase.requests += 1
        phase.last_answer = max(phase.last_answer, done)
        if status == 202:
            if payload == ok_body or _accepted(payload) == pool.per_request:
                phase.events += pool.per_request
            else:
                phase.accepted_mismatches += 1
                phase.note(f"202 {payload[:200]!r}")
        else:
            phase.note(f"{status} {payload[:200]!r}")


def _accepted(payload: bytes) -> int | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc.get("accepted") if isinstance(doc, dict) else None


async def _phase(clients: list[Client], pool: Pool, seconds: float) -> Phase:
    phase = Phase()
    phase.started = phase.last_answer = time.perf_counter()
    end = phase.started + seconds
    await asyncio.gather(*(_worker(c, pool, phase, end) for c in clients))
    return phase


def _phase_result(phase: Phase, per_request: int) -> dict[str, Any]:
    seconds = phase.seconds
    return {
        "seconds": seconds,
        "requests": phase.requests,
        "events": phase.events,
        "requests_per_s": phase.requests / seconds if seconds else None,
        "events_per_s": phase.events / seconds if seconds else None,
        "latency_ms": latency_summary(phase.latencies_ms),
        "statuses": {str(s): n for s, n in sorted(phase.statuses.items())},
        "transport_errors": phase.transport_errors,
        "accepted_mismatches": phase.accepted_mismatches,
        "samples": phase.samples,
        "per_request": per_request,
    }


async def load(
    host: str,
    port: int,
    shape: str,
    connections: int = CONNECTIONS,
    seconds: float = SECONDS,
    warmup_s: float = WARMUP_S,
    tag: str | None = None,
) -> dict[str, Any]:
    """Warm-up, then the measured phase, over ``connections`` keep-alive connections; see the
    module's docstring. Returns the measured phase's figures, the warm-up's, and every
    status and error of both."""
    tag = tag or f"bc{uuid.uuid4().hex[:8]}"
    pool = Pool(shape, tag)
    pool.fill(WARMUP_POOL[shape])
    clients = [Client(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        warm = await _phase(clients, pool, warmup_s)
        # the measured phase's bodies, built now (the connections idle meanwhile)
        built_at = time.perf_counter()
        rate = warm.requests / warm.seconds if warm.seconds else 0.0
        size = math.ceil(rate * seconds * POOL_HEADROOM[shape]) + connections
        per_request_bytes = len(request(body(shape, 0, tag, 0)))
        size = min(size, max(connections, POOL_MAX_BYTES // per_request_bytes))
        late_in_warmup = pool.built_late
        pool.built_late = 0
        pool.fill(max(0, size - len(pool)))
        pool_seconds = time.perf_counter() - built_at
        if pool_seconds > RECONNECT_AFTER_S:
            for c in clients:
                await c.close()
            await asyncio.gather(*(c.connect() for c in clients))
        measured = await _phase(clients, pool, seconds)
    finally:
        for c in clients:
            await c.close()
    out = _phase_result(measured, pool.per_request)
    warm_result = _phase_result(warm, pool.per_request)
    statuses: Counter[str] = Counter(out["statuses"])
    statuses.update(warm_result["statuses"])
    return {
        **out,
        "shape": shape,
        "connections": connections,
        "planned_seconds": seconds,
        "warmup": {
            k: warm_result[k]
            for k in ("seconds", "requests", "events", "requests_per_s", "statuses")
        },
        # every phase: the topic must hold exactly these events
        "accepted_total": measured.events + warm.events,
        "statuses": dict(sorted(statuses.items())),
        "transport_errors": measured.transport_errors + warm.transport_errors,
        "accepted_mismatches": measured.accepted_mismatches + warm.accepted_mismatches,
        "samples": (warm.samples + measured.samples)[:ERROR_SAMPLES],
        "pool": {
            "measured_requests_built": size,
            "built_seconds": pool_seconds,
            "built_late": pool.built_late,
            "built_late_in_warmup": late_in_warmup,
        },
        "reconnects": sum(c.connects for c in clients) - connections,
        "tag": tag,
    }


# --------------------------------------------------------------------------- the collector


def collector_config(bootstrap: str, topic: str) -> dict[str, Any]:
    """The bench's config file: the shipped defaults except the broker, the events topic and
    the rate limits (off), with the shipped files named absolutely (relative names resolve
    against the config file's directory, which is not conf/)."""
    from job.config import with_absolute_files

    return with_absolute_files(
        {
            "kafka": {"bootstrap_servers": bootstrap, "topics": {"events": topic}},
            "collector": {
                "rate_limit_key": {"rate": 0, "burst": 0},
                "rate_limit_ip": {"rate": 0, "burst": 0},
            },
        }
    )


class CollectorProcess:
    """``inboxflow collect`` (``python -m job.cli collect``) in a child process on a free
    port of 127.0.0.1, started and waited for (``GET /healthz`` 200), stopped with SIGTERM
    (killed if it does not end within :data:`STOP_TIMEOUT_S`). The child stays in the
    caller's process group, so a bench run killed as a group takes it along. ``wrapper``: a
    command put before the interpreter (a profiler, a measurement wrapper); ``extra_args``:
    more arguments of ``inboxflow collect``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        work_dir: Path,
        log_path: Path,
        extra_args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.work_dir, self.log_path = Path(work_dir), Path(log_path)
        self.extra_args, self.wrapper = list(extra_args), list(wrapper)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        self.exit_code: int | None = None

    def start(self) -> CollectorProcess:
        import yaml

        from job.ops import free_port

        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "collector.yaml"
        config.write_text(yaml.safe_dump(collector_config(self.bootstrap, self.topic)))
        self.port = free_port(HOST)
        cmd = [
            *self.wrapper,
            sys.executable,
            "-m",
            "job.cli",
            "collect",
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        env = {**os.environ, "INBOXFLOW_WRITE_KEYS": f"{SOURCE}={WRITE_KEY}"}
        started = time.monotonic()
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_healthy(started + HEALTH_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _wait_healthy(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the collector exited with {self.proc.returncode} before it was healthy; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if healthz(HOST, self.port) == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the collector was not healthy within {HEALTH_TIMEOUT_S:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.exit_code = proc.returncode

    def log_tail(self, max_bytes: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def healthz(host: str, port: int, timeout_s: float = 5.0) -> int | None:
    """Status of ``GET /healthz``; None when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def running_collector(
    bootstrap: str, topic: str, work_dir: Path, log_path: Path, **kwargs: Any
) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(bootstrap, topic, work_dir, log_path, **kwargs).start()
    try:
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- child runs


def shape_spec(
    bootstrap: str,
    shape: str,
    name: str,
    seconds: float,
    connections: int,
    warmup_s: float = WARMUP_S,
    collector_log: Path | None = None,
) -> dict[str, Any]:
    """The spec of one collector run (``bench.run.run_child``)."""
    return {
        "kind": "collector",
        "bootstrap": bootstrap,
        "store": False,
        "shape": shape,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "connections": connections,
        "topic": f"bench.collector.{name}",
        "collector_log": str(collector_log) if collector_log else None,
    }


def floor_spec(bootstrap: str, name: str, events: int) -> dict[str, Any]:
    return {
        "kind": "collector_floor",
        "bootstrap": bootstrap,
        "store": False,
        "events": events,
        "topic": f"bench.collector.{name}",
    }


def shape_timeout(spec: dict[str, Any]) -> float:
    """Start-up, the phases, building the bodies, the stop and counting the topic back."""
    return 240 + spec["warmup_s"] + spec["seconds"] * 2


def floor_timeout(spec: dict[str, Any]) -> float:
    return 180 + spec["events"] / 2000


def _count(bootstrap: str, topic: str, expected: int) -> int:
    return _count_records(bootstrap, topic, expected, max_wait_s=60 + expected / 2000)


def child_shape(spec: dict[str, Any]) -> dict[str, Any]:
    """One collector run (module docstring); the result has an ``error`` (and every figure)
    when an answer was not 202 or the topic does not hold exactly what was accepted."""
    from job.dev import kafka_io

    work = Path(spec["work_dir"])
    bootstrap, topic, shape = spec["bootstrap"], spec["topic"], spec["shape"]
    kafka_io.create_topics(bootstrap, {topic: PARTITIONS})
    log_path = Path(spec.get("collector_log") or work / "collector.log")
    with running_collector(bootstrap, topic, work, log_path) as proc:
        result = asyncio.run(
            load(
                HOST,
                proc.port,
                shape,
                connections=spec["connections"],
                seconds=spec["seconds"],
                warmup_s=spec["warmup_s"],
            )
        )
        result["collector_start_seconds"] = proc.start_seconds
    result["collector_exit_code"] = proc.exit_code
    started = time.monotonic()
    result["records_in_topic"] = _count(bootstrap, topic, result["accepted_total"])
    result["count_seconds"] = time.monotonic() - started
    result["cores"] = os.cpu_count()
    result["collector_log"] = str(log_path)
    problems = run_problems(result)
    if problems:
        result["error"] = "; ".join(problems)
    return result


def floor_records(events: int, tag: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``events`` events as the collector would produce them: keyed by
    customer id, the event's JSON."""
    now = wall_ms()
    out = []
    for n in range(events):
        e = event(n, tag, now)
        out.append((e["customer_id"].encode(), _dumps(e)))
    return out


def child_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The produce floor (module docstring): events/s of one librdkafka producer with the
    collector's settings, first produce to last delivery report; the topic counted back."""
    from confluent_kafka import Producer

    from job.collector.producer import producer_config
    from job.dev import kafka_io

    bootstrap, topic, events = spec["bootstrap"], spec["topic"], int(spec["events"])
    kafka_io.create_topics(bootstrap, {topic: PARTITIONS})
    records = floor_records(events, f"bf{uuid.uuid4().hex[:8]}")
    config = producer_config(bootstrap, 30.0)
    config.pop("logger")
    config["client.id"] = "inboxflow-bench-floor"
    producer = Producer(config)
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else None,
        "undelivered": left,
        "failed_deliveries": len(errors),
        "cores": os.cpu_count(),
        "producer": {k: v for k, v in config.items() if k != "bootstrap.servers"},
    }
    result["records_in_topic"] = _count(bootstrap, topic, events)
    problems = []
    if left or errors:
        problems.append(f"{left} undelivered, {len(errors)} failed (first: {errors[:1]})")
    if result["records_in_topic"] != events:
        problems.append(f"the topic holds {result['records_in_topic']:,} of {events:,} records")
    if problems:
        result["error"] = "; ".join(problems)
    return result


# --------------------------------------------------------------------------- summary, table


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The collector entries of the bench's summary: per shape the median (min, max) of
    requests/s, events/s, p50 and p99 over the runs without an error, every run's errors and
    records-in-topic against accepted, and events/s over the floor's, run i against run i of
    the floor (the same round)."""
    summary: dict[str, dict[str, Any]] = {}
    floor_runs = results.get("collector-floor", [])
    floor_ok = [r for r in floor_runs if "error" not in r]
    if floor_runs:
        summary["collector-floor"] = {
            "runs": len(floor_ok),
            "failed": len(floor_runs) - len(floor_ok),
            "events": spread([r["events"] for r in floor_ok]),
            "events_per_s": spread([r["events_per_s"] for r in floor_ok]),
            "records_in_topic": [r.get("records_in_topic") for r in floor_runs],
        }
    for shape in SHAPES:
        runs = results.get(f"collector-{shape}", [])
        if not runs:
            continue
        ok = [r for r in runs if "error" not in r]
        entry: dict[str, Any] = {
            "shape": shape,
            "runs": len(ok),
            "failed": len(runs) - len(ok),
            "errors": [r.get("error") for r in runs if "error" in r],
            "non_202": sum(
                n for r in runs for s, n in (r.get("statuses") or {}).items() if s != "202"
            ),
            "transport_errors": sum(r.get("transport_errors", 0) for r in runs),
            "connections": next((r["connections"] for r in runs if "connections" in r), None),
            "seconds": next((r["planned_seconds"] for r in runs if "planned_seconds" in r), None),
            "requests_per_s": spread([r["requests_per_s"] for r in ok]),
            "events_per_s": spread([r["events_per_s"] for r in ok]),
            "p50_ms": spread([r["latency_ms"]["p50"] for r in ok]),
            "p99_ms": spread([r["latency_ms"]["p99"] for r in ok]),
            "requests": spread([r["requests"] for r in ok]),
            "records_vs_accepted": [
                [r.get("records_in_topic"), r.get("accepted_total")] for r in runs
            ],
            "built_late": sum(r.get("pool", {}).get("built_late", 0) for r in runs),
        }
        if floor_runs:
            pairs = [
                r["events_per_s"] / f["events_per_s"]
                for r, f in zip(runs, floor_runs, strict=False)
                if "error" not in r and "error" not in f and r["events_per_s"] and f["events_per_s"]
            ]
            floor_rate = summary["collector-floor"]["events_per_s"]["median"]
            of_medians = (
                entry["events_per_s"]["median"] / floor_rate
                if floor_rate and entry["events_per_s"]["median"]
                else None
            )
            entry["vs_floor"] = ratio_summary(pairs, of_medians)
        summary[f"collector-{shape}"] = entry
    return summary


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def _spread_text(s: dict[str, float | None], unit: str = "", digits: int = 0) -> str:
    if s["median"] is None:
        return "n/a"
    return (
        f"{_num(s['median'], unit, digits)} ({_num(s['min'], '', digits)}–"
        f"{_num(s['max'], '', digits)})"
    )


def share_text(r: dict[str, Any]) -> str:
    """A :func:`bench.run.ratio_summary` of events/s over the floor's, as a percentage:
    ``1.1 % of the produce floor's events/s (runs in pairs: 1.1 %, 0.9 %, 1.2 %)``."""
    if r["ratio"] is None:
        return "produce floor n/a"
    note = (
        "runs in pairs: " + ", ".join(f"{x:.1%}".replace("%", " %") for x in r["pairs"])
        if r["pairs"]
        else "ratio of the medians"
    )
    return f"{r['ratio']:.1%}".replace("%", " %") + f" of the produce floor's events/s ({note})"


def format_lines(summary: dict[str, dict[str, Any]], cores: int | None = None) -> list[str]:
    """The collector rows of the bench's table (median (min–max) of the runs)."""
    lines: list[str] = []
    cores = cores if cores is not None else os.cpu_count()
    for shape in SHAPES:
        s = summary.get(f"collector-{shape}")
        if s is None:
            continue
        setup = (
            f"{s['connections']} connections, {_num(s['seconds'])} s, "
            if s["connections"] is not None
            else ""
        )
        head = f"collector, {SHAPE_LABELS[shape]}, {setup}{cores} cores  "
        if not s["runs"]:
            lines.append(head + f"FAILED (every run: {'; '.join(map(str, s['errors']))[:300]})")
            continue
        records = ", ".join(
            f"{_num(rec)}/{_num(acc)}" + ("" if rec == acc else " MISMATCH")
            for rec, acc in s["records_vs_accepted"]
        )
        failed = f"; {s['failed']} runs FAILED" if s["failed"] else ""
        lines.append(
            head
            + f"{_spread_text(s['requests_per_s'], ' req/s')}  "
            + f"{_spread_text(s['events_per_s'], ' ev/s')}  "
            + f"p50 {_spread_text(s['p50_ms'], ' ms', 1)}  "
            + f"p99 {_spread_text(s['p99_ms'], ' ms', 1)}; "
            + f"answers other than 202: {s['non_202']}, transport errors "
            + f"{s['transport_errors']}; records in topic/accepted per run: {records}{failed}"
        )
        if "vs_floor" in s:
            lines.append("  " + share_text(s["vs_floor"]))
    f = summary.get("collector-floor")
    if f is not None:
        if f["runs"]:
            lines.append(
                "produce floor, one librdkafka producer (acks=all, linger 2 ms), "
                f"{_num(f['events']['median'])} events  "
                f"{_spread_text(f['events_per_s'], ' ev/s')}; records in topic per run: "
                + ", ".join(_num(n) for n in f["records_in_topic"])
                + (f"; {f['failed']} runs FAILED" if f["failed"] else "")
            )
        else:
            lines.append("produce floor  FAILED (every run)")
    return lines


def describe(result: dict[str, Any]) -> str:
    """One run, for the bench's progress line."""
    prefix = f"FAILED ({result['error']}); " if "error" in result else ""
    if "shape" not in result:
        if "events_per_s" not in result:
            return "failed"
        return (
            prefix + f"{result['events']:,} events, {_num(result['events_per_s'], ' ev/s')}, "
            f"{_num(result.get('records_in_topic'))} in the topic"
        )
    lat = result["latency_ms"]
    return (
        prefix + f"{_num(result['requests_per_s'], ' req/s')}, "
        f"{_num(result['events_per_s'], ' ev/s')}, p50 {_num(lat['p50'], ' ms', 1)}, "
        f"p99 {_num(lat['p99'], ' ms', 1)}; {_num(result.get('records_in_topic'))} records "
        f"in the topic, {result['accepted_total']:,} accepted"
    )
