"""The collector's ASGI application.

Routes:

* ``POST /v1/events``: one event or ``{"batch": [...]}``, authenticated
  by a write key (``Authorization: Bearer KEY``, Basic with the key as user name, or
  ``?write_key=KEY`` for ``navigator.sendBeacon``, which cannot set headers). Every event
  goes through the job's own validator (:class:`udfs.core.validation.EventValidator`, the
  job's settings); a batch is all or nothing: 400 lists every invalid event with the job's
  reason code and JSON path, and nothing of it is produced. 202 only once the broker
  acknowledged every record (``acks=all``).
* ``POST /v1/webhooks/stripe`` and ``/v1/webhooks/shopify``: signed webhooks
  (:mod:`job.collector.webhooks`) mapped to events; a webhook whose customer cannot be
  found, or whose mapped event the validator refuses, goes to the dead-letter topic with the
  reason, and is acknowledged then (the provider would otherwise retry it for days).
* ``GET /healthz`` (200 when the broker answers a metadata request, else 503),
  ``GET /metrics`` (Prometheus), ``GET /snippet/inboxflow.js``; in demo mode the demo shop
  under ``/shop/``.

The body is read with a size limit (413) and a deadline (408); the limits per write key and
per client address answer 429 with ``Retry-After``; a broker that does not acknowledge in
``produce_timeout`` answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from job.collector.limits import RateLimiter, retry_after
from job.collector.producer import AsyncProducer, ProduceFailed, Record
from job.collector.webhooks import (
    CustomerLookup,
    Mapped,
    ReplayCache,
    ShopifyWebhooks,
    StripeWebhooks,
    WebhookError,
)
from udfs.clock import wall_ms
from udfs.core.contract import safe_dumps
from udfs.core.validation import EventValidator, Invalid, dlq_record
from udfs.logs import fields

log = logging.getLogger("inboxflow.collector")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
ENV_WRITE_KEYS: Final = "INBOXFLOW_WRITE_KEYS"
ENV_STRIPE_SECRET: Final = "INBOXFLOW_STRIPE_WEBHOOK_SECRET"
ENV_SHOPIFY_SECRET: Final = "INBOXFLOW_SHOPIFY_WEBHOOK_SECRET"
# reasons of the collector itself (the event reasons are the job's, udfs.core.validation)
UNAUTHORIZED: Final = "unauthorized"
RATE_LIMITED: Final = "rate_limited"
BODY_TOO_LARGE: Final = "body_too_large"
TOO_MANY_EVENTS: Final = "too_many_events"
EMPTY_BATCH: Final = "empty_batch"
BAD_BATCH: Final = "bad_batch"
BODY_TIMEOUT: Final = "body_timeout"
BROKER_UNAVAILABLE: Final = "broker_unavailable"
UNMAPPED_CUSTOMER: Final = "unmapped_customer"
ROUTES: Final = (
    "/v1/events",
    "/v1/webhooks/stripe",
    "/v1/webhooks/shopify",
    "/healthz",
    "/metrics",
    "/snippet/inboxflow.js",
)


class ConfigError(ValueError):
    """The collector cannot start with these settings (the message says which one)."""


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    events_topic: str
    dlq_topic: str
    schema_dir: Path
    max_event_bytes: int
    max_future_ms: int
    # write key -> source name
    write_keys: Mapping[str, str]
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    max_batch: int = 500
    body_timeout_s: float = 10.0
    produce_timeout_s: float = 10.0
    key_rate: tuple[int, int] = (1000, 2000)
    ip_rate: tuple[int, int] = (50, 100)
    producer_properties: Mapping[str, str] = dataclasses.field(default_factory=dict)
    stripe_secret: str = ""
    stripe_tolerance_s: int = 300
    stripe_metadata_key: str = "customer_id"
    shopify_secret: str = ""
    shopify_tolerance_s: int = 86_400
    customer_map: Path | None = None
    replay_cache: int = 100_000
    demo: bool = False

    @classmethod
    def from_config(cls, cfg: Any, env: Mapping[str, str], demo: bool = False) -> Settings:
        """From the job's config (:func:`job.config.load_config`): the same broker, topics,
        schemas and event limits as the job; secrets from the environment first."""
        c = cfg.collector
        keys = dict(c.write_keys)
        if env.get(ENV_WRITE_KEYS):
            keys = parse_write_keys(env[ENV_WRITE_KEYS])
        if not keys and demo:
            keys = {"demo": "demo-" + secrets.token_hex(8)}
        if not keys:
            raise ConfigError(
                f"no write keys: set {ENV_WRITE_KEYS}=source=KEY[,source=KEY...] or "
                "collector.write_keys in the config"
            )
        by_key: dict[str, str] = {}
        for source, key in keys.items():
            if len(key) < 8:
                raise ConfigError(f"write key of source {source!r}: at least 8 characters")
            if key in by_key:
                raise ConfigError(f"sources {by_key[key]!r} and {source!r} share a write key")
            by_key[key] = source
        w = c.webhooks
        customer_map = (cfg.config_dir / w.customer_map) if w.customer_map else None
        return cls(
            bootstrap=cfg.kafka.bootstrap_servers,
            events_topic=cfg.kafka.topics.events,
            dlq_topic=cfg.kafka.topics.dlq,
            schema_dir=cfg.schema_dir,
            max_event_bytes=cfg.limits.max_event_bytes,
            max_future_ms=cfg.limits.max_future_ms,
            write_keys=by_key,
            cors_origins=tuple(c.cors_origins),
            max_body_bytes=c.max_body_bytes,
            max_batch=c.max_batch,
            body_timeout_s=c.body_timeout_ms / 1000,
            produce_timeout_s=c.produce_timeout_ms / 1000,
            key_rate=(c.rate_limit_key.rate, c.rate_limit_key.burst),
            ip_rate=(c.rate_limit_ip.rate, c.rate_limit_ip.burst),
            producer_properties=dict(c.producer_properties),
            stripe_secret=env.get(ENV_STRIPE_SECRET) or w.stripe.secret,
            stripe_tolerance_s=w.stripe.tolerance_ms // 1000,
            stripe_metadata_key=w.stripe.metadata_key,
            shopify_secret=env.get(ENV_SHOPIFY_SECRET) or w.shopify.secret,
            shopify_tolerance_s=w.shopify.tolerance_ms // 1000,
            customer_map=customer_map,
            replay_cache=w.replay_cache,
            demo=demo,
        )


def parse_write_keys(text: str) -> dict[str, str]:
    """``source=KEY,source=KEY`` (spaces around items are ignored)."""
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, key = item.partition("=")
        if not sep or not source.strip() or not key.strip():
            raise ConfigError(f"{ENV_WRITE_KEYS}: expected source=KEY items, got {item!r}")
        keys[source.strip()] = key.strip()
    return keys


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Metric(
            "inboxflow_collector_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "inboxflow_collector_request_duration_seconds",
            "Time from the request's arrival to its answer",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.produced = Metric(
            "inboxflow_collector_records_produced",
            "Records the broker acknowledged",
            ["topic"],
            registry=r,
        )
        self.rejected = Metric(
            "inboxflow_collector_rejections",
            "Requests or events refused, by reason",
            ["route", "reason"],
            registry=r,
        )
        self.webhooks = Metric(
            "inboxflow_collector_webhooks",
            "Verified webhooks by provider and what became of them",
            ["provider", "outcome"],
            registry=r,
        )


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers


class Collector:
    """The application's state: validator, producer, limiters, webhook verifiers."""

    def __init__(self, settings: Settings, producer: AsyncProducer | None = None) -> None:
        self.settings = s = settings
        self.validator = EventValidator(s.schema_dir, s.max_event_bytes, s.max_future_ms)
        self._producer = producer
        self.metrics = Metrics()
        self.key_limiter = RateLimiter(*s.key_rate)
        self.ip_limiter = RateLimiter(*s.ip_rate)
        lookup = CustomerLookup.from_file(s.customer_map)
        self.stripe = (
            StripeWebhooks(s.stripe_secret, s.stripe_tolerance_s, s.stripe_metadata_key, lookup)
            if s.stripe_secret
            else None
        )
        self.shopify = (
            ShopifyWebhooks(s.shopify_secret, s.shopify_tolerance_s, lookup)
            if s.shopify_secret
            else None
        )
        self.replays = ReplayCache(max(s.stripe_tolerance_s, s.shopify_tolerance_s), s.replay_cache)
        self._health: tuple[float, bool] = (0.0, False)

    @property
    def producer(self) -> AsyncProducer:
        if self._producer is None:
            s = self.settings
            self._producer = AsyncProducer(s.bootstrap, s.produce_timeout_s, s.producer_properties)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            left = self._producer.close()
            if left:
                log.warning("records not acknowledged at shutdown", extra=fields(records=left))

    # --- requests ---------------------------------------------------------------------------

    def authenticate(self, request: Request) -> str:
        """The source name of the request's write key, or :class:`_Refused` (401)."""
        key = request.query_params.get("write_key")
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                key = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        if key:
            source = None
            for known, name in self.settings.write_keys.items():
                if hmac.compare_digest(known.encode(), key.encode()):
                    source = name
            if source is not None:
                return source
        raise _Refused(401, UNAUTHORIZED, "missing or unknown write key")

    def limit(self, *buckets: tuple[RateLimiter, str]) -> None:
        now = time.monotonic()
        for limiter, key in buckets:
            wait = limiter.take(key, now)
            if wait:
                raise _Refused(
                    429,
                    RATE_LIMITED,
                    "too many requests",
                    **{"Retry-After": retry_after(wait)},
                )

    async def body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _Refused(413, BODY_TOO_LARGE, f"body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, BODY_TOO_LARGE, f"body is larger than {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refused(408, BODY_TIMEOUT, "the body did not arrive in time") from None
        return b"".join(chunks)

    def events_of(self, body: bytes, now: int) -> list[tuple[bytes, dict[str, Any]]]:
        """The body's events as (record value, normalized event), or :class:`_Refused` (400
        naming every invalid event with the job's reason and path; 413 for too many)."""
        doc = _parse(body)
        if isinstance(doc, dict) and "batch" in doc and "event_type" not in doc:
            doc = doc["batch"]
            if not isinstance(doc, list):
                raise _Refused(400, BAD_BATCH, "batch must be a list of events")
        else:
            # one event, judged exactly as the job judges the record (a bare JSON array
            # too: the job says not_object, so the collector does)
            result = self.validator.validate(body, now)
            if isinstance(result, Invalid):
                raise _Invalid([(0, result)])
            return [(body, result)]
        if not doc:
            raise _Refused(400, EMPTY_BATCH, "the batch holds no events")
        if len(doc) > self.settings.max_batch:
            raise _Refused(
                413, TOO_MANY_EVENTS, f"a batch holds at most {self.settings.max_batch} events"
            )
        out: list[tuple[bytes, dict[str, Any]]] = []
        invalid: list[tuple[int, Invalid]] = []
        for i, item in enumerate(doc):
            text = safe_dumps(item)
            result = self.validator.validate(text, now)
            if isinstance(result, Invalid):
                invalid.append((i, result))
            else:
                out.append((text.encode(), result))
        if invalid:
            raise _Invalid(invalid)
        return out

    async def produce(self, records: list[Record]) -> None:
        try:
            await self.producer.send(records)
        except ProduceFailed as exc:
            log.warning(
                "broker did not acknowledge",
                extra=fields(reason=BROKER_UNAVAILABLE, error=exc.reason, records=len(records)),
            )
            raise _Refused(
                503,
                BROKER_UNAVAILABLE,
                "the event store did not acknowledge the events; retry later",
                **{
                    "Retry-After": retry_after(min(30.0, max(1.0, self.settings.produce_timeout_s)))
                },
            ) from None
        for topic, count in Counter(r.topic for r in records).items():
            self.metrics.produced.labels(topic).inc(count)

    async def healthy(self) -> bool:
        at, ok = self._health
        if time.monotonic() - at < 1.0:
            return ok
        ok = await asyncio.to_thread(self.producer.reachable, 2.0)
        self._health = (time.monotonic(), ok)
        return ok

    def dlq(self, raw: bytes | str, invalid: Invalid, now: int) -> Record:
        record = dlq_record(raw, invalid, now, self.settings.max_event_bytes)
        key = invalid.customer_id.encode() if invalid.customer_id else None
        return Record(self.settings.dlq_topic, key, safe_dumps(record).encode())


def log_refused(level: int, message: str, route: str, invalid: Invalid) -> None:
    """One log line for an event the validator refused: its ids, reason and path, never the
    event."""
    log.log(
        level,
        message,
        extra=fields(
            route=route,
            customer_id=invalid.customer_id,
            event_id=invalid.event_id,
            reason=invalid.reason,
            path=invalid.path,
        ),
    )


class _Invalid(_Refused):
    def __init__(self, invalid: list[tuple[int, Invalid]]) -> None:
        super().__init__(400, "invalid_event", "invalid events")
        self.invalid = invalid


def _parse(body: bytes) -> Any:
    """The body's JSON document, or None when it is not JSON (the validator then names the
    exact reason, as the job would). orjson first; the standard library for what orjson
    refuses but the job accepts (integers beyond 64 bits; lone surrogate escapes, which the
    validator then names)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


# --- the ASGI app ---------------------------------------------------------------------------


def create_app(settings: Settings, producer: AsyncProducer | None = None) -> Starlette:
    c = Collector(settings, producer)

    def answer(status: int, payload: Mapping[str, Any], **headers: str) -> Response:
        return JSONResponse(dict(payload), status_code=status, headers=headers or None)

    def refused(route: str, r: _Refused) -> Response:
        payload: dict[str, Any] = {"error": r.reason, "message": r.message}
        if isinstance(r, _Invalid):
            payload = {
                "error": "invalid_event",
                "errors": [
                    {
                        "index": i,
                        "reason": inv.reason,
                        "path": inv.path,
                        "message": inv.message,
                        "event_id": inv.event_id,
                    }
                    for i, inv in r.invalid
                ],
            }
            for _, inv in r.invalid:
                c.metrics.rejected.labels(route, inv.reason).inc()
                log_refused(logging.INFO, "event refused", route, inv)
        else:
            c.metrics.rejected.labels(route, r.reason).inc()
            log.info("request refused", extra=fields(route=route, status=r.status, reason=r.reason))
        return answer(r.status, payload, **r.headers)

    async def events(request: Request) -> Response:
        route = "/v1/events"
        try:
            # the address first: a flood of unknown keys is limited too
            c.limit((c.ip_limiter, request.client.host if request.client else "-"))
            source = c.authenticate(request)
            c.limit((c.key_limiter, source))
            body = await c.body(request)
            now = wall_ms()
            parsed = c.events_of(body, now)
            topic = settings.events_topic
            await c.produce([Record(topic, e["customer_id"].encode(), raw) for raw, e in parsed])
        except _Refused as r:
            return refused(route, r)
        log.debug("events accepted", extra=fields(route=route, source=source, records=len(parsed)))
        return answer(202, {"accepted": len(parsed)})

    async def webhook(request: Request, provider: str) -> Response:
        route = f"/v1/webhooks/{provider}"
        verifier = c.stripe if provider == "stripe" else c.shopify
        if verifier is None:
            return answer(
                404, {"error": "not_configured", "message": f"{provider} webhooks are off"}
            )
        try:
            c.limit((c.key_limiter, f"webhook:{provider}"))
            body = await c.body(request)
            try:
                if isinstance(verifier, StripeWebhooks):
                    mapped = verifier.map(
                        verifier.verify(body, request.headers.get("stripe-signature"))
                    )
                else:
                    doc = verifier.verify(body, request.headers.get("x-shopify-hmac-sha256"))
                    mapped = verifier.map(
                        request.headers.get("x-shopify-topic", ""),
                        request.headers.get("x-shopify-webhook-id"),
                        doc,
                    )
            except WebhookError as exc:
                raise _Refused(exc.status, exc.reason, exc.message) from None
            return await deliver(route, provider, body, mapped)
        except _Refused as r:
            return refused(route, r)

    async def deliver(route: str, provider: str, body: bytes, mapped: Mapped) -> Response:
        now_s = time.time()
        if c.replays.seen(mapped.delivery_id, now_s):
            c.metrics.webhooks.labels(provider, "duplicate").inc()
            return answer(200, {"duplicate": True})
        if mapped.ignored is not None:
            c.metrics.webhooks.labels(provider, "ignored").inc()
            log.info("webhook ignored", extra=fields(route=route, reason=mapped.ignored))
            return answer(200, {"ignored": mapped.ignored})
        now = wall_ms()
        records: list[Record] = []
        dead = 0
        if mapped.unmapped is not None:
            records.append(c.dlq(body, Invalid(UNMAPPED_CUSTOMER, "$", mapped.unmapped), now))
            dead += 1
        for event in mapped.events:
            text = safe_dumps(event)
            result = c.validator.validate(text, now)
            if isinstance(result, Invalid):
                records.append(c.dlq(text, result, now))
                dead += 1
                log_refused(logging.WARNING, "webhook event refused", route, result)
            else:
                records.append(
                    Record(settings.events_topic, result["customer_id"].encode(), text.encode())
                )
        await c.produce(records)
        c.replays.add(mapped.delivery_id, now_s)
        c.metrics.webhooks.labels(provider, "dead_lettered" if dead else "accepted").inc()
        return answer(202, {"accepted": len(records) - dead, "dead_lettered": dead})

    async def stripe(request: Request) -> Response:
        return await webhook(request, "stripe")

    async def shopify(request: Request) -> Response:
        return await webhook(request, "shopify")

    async def healthz(request: Request) -> Response:
        if await c.healthy():
            return answer(200, {"status": "ok", "broker": "reachable"})
        return answer(503, {"status": "unavailable", "broker": "unreachable"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def snippet(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "inboxflow.js",
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=300"},
        )

    routes: list[Any] = [
        Route("/v1/events", events, methods=["POST"]),
        Route("/v1/webhooks/stripe", stripe, methods=["POST"]),
        Route("/v1/webhooks/shopify", shopify, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/snippet/inboxflow.js", snippet, methods=["GET"]),
    ]
    if settings.demo:
        demo_key = next(iter(settings.write_keys))

        async def shop_config(request: Request) -> Response:
            config = {"endpoint": "", "writeKey": demo_key}
            return Response(
                f"window.inboxflowConfig = {json.dumps(config)};\n",
                media_type="text/javascript",
            )

        async def home(request: Request) -> Response:
            return RedirectResponse("/shop/")

        routes += [
            Route("/", home, methods=["GET"]),
            Route("/shop/config.js", shop_config, methods=["GET"]),
            Mount("/shop", StaticFiles(directory=STATIC_DIR / "shop", html=True)),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        c.producer  # noqa: B018 - connect at start, not on the first request
        try:
            yield
        finally:
            await asyncio.to_thread(c.close)

    middleware = [Middleware(_Instrument, metrics=c.metrics)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                # the snippet reads Retry-After of a 429 or 503 to time its retry
                expose_headers=["Retry-After"],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.collector = c
    return app


class _Instrument:
    """Counts every request by route and status and times it (pure ASGI middleware)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else ("/shop" if path.startswith("/shop") else "other")
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
