"""The collector's Kafka producer: librdkafka (confluent-kafka) with ``acks=all``, its
delivery reports turned into asyncio futures.

Invariant: :meth:`AsyncProducer.send` returns only after the broker acknowledged every
record of the call (all in-sync replicas, ``acks=all``); any record that failed or was not
acknowledged within ``timeout_s`` raises :class:`ProduceFailed`, so the caller never answers
202 for a record the topic does not hold. The opposite can happen: a record whose
acknowledgement came too late is in the topic although the caller answered 503; the client
retries with the same event id and the job drops the second copy (its event-id dedup).

librdkafka sends from threads of its own; delivery reports are served by one polling thread
of ours, which hands each result to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer


class ProduceFailed(Exception):
    """Some record of a send was not acknowledged (``reason``: a short, value-free text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes


def producer_config(
    bootstrap: str, timeout_s: float, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The librdkafka settings: acks=all, a short linger so concurrent requests share a
    produce request, and a message timeout equal to the answer's deadline, so librdkafka
    gives up on a record by the time the request is answered 503.

    Idempotence is off: after a broker restart Tansu answers an idempotent producer's epoch
    bump with PRODUCER_FENCED, and librdkafka's producer then fails every send for good
    (measured: 8 s of failures after the broker was back, no recovery). Without it a retried
    send may write a record twice; the copy has the same event id and the job drops it. On
    Apache Kafka, ``producer_properties: {enable.idempotence: "true"}`` turns it on."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "inboxflow-collector",
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 2,
        "message.timeout.ms": max(1, int(timeout_s * 1000)),
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        "reconnect.backoff.max.ms": 1000,
        # librdkafka's own log lines go to Python logging (served by the polling thread)
        "logger": logging.getLogger("inboxflow.collector.kafka"),
        **dict(extra or {}),
    }


class AsyncProducer:
    def __init__(
        self, bootstrap: str, timeout_s: float, extra: Mapping[str, str] | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self._producer = Producer(producer_config(bootstrap, timeout_s, extra))
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll, name="inboxflow-collector-delivery", daemon=True
        )
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` and wait for the broker's acknowledgement of every one.

        One future per call, not per record: the delivery reports count down in the polling
        thread, and the event loop is woken once, by the last report or the first failure
        (a future and a wake-up per record cost about a quarter of the event loop on
        batches of 100, docs/PERFORMANCE.md)."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        waiting = _Countdown(len(records), loop, done)
        try:
            for r in records:
                self._producer.produce(r.topic, r.value, r.key, on_delivery=waiting.report)
        except (BufferError, KafkaException) as exc:
            # the reports of what was queued come later; nobody waits for them
            waiting.abandon()
            if isinstance(exc, BufferError):
                raise ProduceFailed("the producer's queue is full") from None
            raise ProduceFailed(_describe(exc.args[0] if exc.args else None)) from None
        try:
            async with asyncio.timeout(self.timeout_s + 1.0):
                await done
        except TimeoutError:
            raise ProduceFailed("no acknowledgement from the broker in time") from None

    def reachable(self, timeout_s: float) -> bool:
        """True when a metadata request to the cluster succeeds within ``timeout_s`` (blocks:
        call it in a thread)."""
        try:
            md = self._producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return bool(md.brokers)

    def close(self, timeout_s: float = 5.0) -> int:
        """Deliver what is queued (up to ``timeout_s``), then stop; returns what is left."""
        left = int(self._producer.flush(timeout_s))
        self._stop.set()
        self._poller.join(timeout=2)
        # librdkafka's handle is destroyed with the object: no reconnecting after close
        del self._producer
        return left


class _Countdown:
    """The delivery reports of one :meth:`AsyncProducer.send` (called in the polling
    thread): settles ``done`` once, with the first failure or after the last success."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]):
        self._left = count
        self._loop = loop
        self._done = done
        self._settled = False
        self._lock = threading.Lock()

    def report(self, err: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            if self._settled:
                return
            self._left -= 1
            if err is None and self._left > 0:
                return
            self._settled = True
        try:
            self._loop.call_soon_threadsafe(_settle, self._done, err)
        except RuntimeError:  # the loop is closed: the collector is stopping
            pass

    def abandon(self) -> None:
        with self._lock:
            self._settled = True


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(ProduceFailed(_describe(err)))


def _describe(err: Any) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return "the broker did not accept the record"
