"""Builds the inboxflow topology from a config and a stream of raw event strings.

Sources and sinks are attached by the caller (``job.main`` attaches Kafka; tests attach
bounded collections), so the same wiring runs in production, in the demo and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedStream

from job import flink_bridge
from job.config import ConfigError, JobConfig, render_settings
from job.jvm import helper_classes
from udfs.core.contract import Kind
from udfs.core.customer import CoreSettings
from udfs.core.journey import JourneySettings
from udfs.flink.customer_function import (
    KEYED_EVENT,
    KEYED_JSON,
    KEYED_STORE_ROW,
    RAW_EVENT,
    ROUTED,
    STORE_ROW,
    CustomerFunction,
)


@dataclass(frozen=True)
class Outputs:
    """Every stream is ``KEYED_JSON`` = Row(key, JSON): ready for a Kafka sink."""

    requests: DataStream
    dlq: DataStream
    outcomes: DataStream


def journey_settings(cfg: JobConfig) -> JourneySettings:
    return JourneySettings(
        campaigns=cfg.campaigns,
        guards=cfg.guard_settings,
        recent_products=cfg.limits.recent_products,
        favourite_categories=cfg.limits.favourite_categories,
        attribution_window_ms=cfg.clickhouse.attribution_window_ms,
        session_gap_ms=cfg.recommendations.session_gap_ms,
        fallback_products=cfg.fallback_products,
    )


def core_settings(cfg: JobConfig, store: bool) -> CoreSettings:
    """What the customer function's core is built from; ``store``: it emits ClickHouse rows."""
    return CoreSettings(
        journey=journey_settings(cfg),
        render=render_settings(cfg),
        store_shards=cfg.clickhouse.shards if store else 0,
        schema_dir=cfg.schema_dir,
        max_event_bytes=cfg.limits.max_event_bytes,
        max_future_ms=cfg.limits.max_future_ms,
    )


def writer_parallelism(cfg: JobConfig) -> int | None:
    """1 for the embedded engine (``chdb://``): one process may open its path, and with
    several TaskManagers writer subtasks would run in several processes, so every row goes
    to one writer subtask. None (the job's parallelism) for a ClickHouse server."""
    return 1 if cfg.clickhouse.dsn.startswith("chdb:") else None


def event_time_strategy(cfg: JobConfig):
    """The Java WatermarkStrategy for ``KEYED_EVENT`` envelopes
    (``io.inboxflow.flink.SubtaskWatermarks``): bounded out-of-orderness per Kafka partition,
    idleness and the lull rule decided for the whole source subtask, the event's own
    ``timestamp`` as event time (``EventTimeAssigner``), never Kafka's record time."""

    w = cfg.watermarks
    return helper_classes().SubtaskWatermarks(
        w.out_of_orderness_ms, w.idleness_ms, w.idle_advance_ms
    )


def keyed_by_customer(cfg: JobConfig, raw: DataStream, enveloped: bool = False) -> KeyedStream:
    """:func:`timed_events` keyed by customer (no catalog join)."""
    return flink_bridge.key_by_first_field(
        timed_events(cfg, raw, enveloped), Types.STRING(), RAW_EVENT
    )


def timed_events(cfg: JobConfig, raw: DataStream, enveloped: bool = False) -> DataStream:
    """Key and event time for each event, read on the JVM without a Python operator.

    ``enveloped``: ``raw`` already holds ``KEYED_EVENT`` envelopes stamped with event time
    and watermarks at the source (the Kafka source does this per partition with
    ``io.inboxflow.flink.EnvelopeDeserializer`` and :func:`event_time_strategy`). Otherwise
    ``raw`` holds raw strings (bounded test inputs): ``io.inboxflow.flink.EnvelopeExtractor``
    reads the top-level ``customer_id`` and ``timestamp`` and emits ``Row(key, RAW_EVENT)``,
    the shape PyFlink's own ``key_by`` builds with a Python map, and the same strategy
    assigns event time right after it. In thread mode all Python operators share one
    interpreter lock, so every Python operator kept off the per-event path is throughput.
    """
    timed = raw
    if not enveloped:
        parallelism = flink_bridge.parallelism(raw)
        # Same parallelism as the source so it chains: a rebalance would reorder one
        # customer's events before they are keyed.
        extracted = flink_bridge.process_on_jvm(
            raw,
            helper_classes().EnvelopeExtractor(cfg.limits.max_future_ms),
            KEYED_EVENT,
            name="extract-key-and-time",
            uid="extract",
        )
        timed = (
            extracted.assign_timestamps_and_watermarks(WatermarkStrategy(event_time_strategy(cfg)))
            .set_parallelism(parallelism)
            .name("event-time")
            .uid("event-time")
        )
    return timed


def join_catalog(
    cfg: JobConfig,
    events: DataStream,
    catalog: DataStream | None = None,
    catalog_first: bool = False,
) -> tuple[DataStream, DataStream | None]:
    """``events`` (``KEYED_EVENT`` envelopes stamped with event time) through
    ``io.inboxflow.flink.CatalogJoin`` (docs/DESIGN.md#catalog): each event's raw JSON gets
    the current name, image, category, url and price of the products it names, from
    ``catalog.file`` (read here) and then ``catalog`` (``KEYED_JSON`` product records,
    ``Row(product_id, json or None)``, broadcast to every subtask; None: no stream). At the
    parallelism of ``events`` (forward: each partition's order is kept); without a stream it
    is a one-input operator chained to the source. ``catalog_first``: ``catalog`` is bounded
    and is read whole before any event (tests, a snapshot).

    Returns the events and the dead-letter records of refused catalog records (None without
    a stream); with neither a file nor a stream, ``events`` as they are and None."""
    from job.catalog import file_records

    records = file_records(cfg)
    if catalog is None and not records:
        return events, None
    classes = helper_classes()
    j_records = "\n".join(records)  # one string: one call through the gateway
    max_bytes = cfg.limits.max_event_bytes
    if catalog is None:
        joined = flink_bridge.transform_on_jvm(
            events, classes.CatalogJoin(j_records, max_bytes), KEYED_EVENT, "catalog", "catalog"
        )
        return joined, None
    join = classes.CatalogJoin
    operator = (
        join.catalogFirst(j_records, max_bytes) if catalog_first else join(j_records, max_bytes)
    )
    joined = flink_bridge.connect_on_jvm(
        events, catalog.broadcast(), operator, KEYED_EVENT, name="catalog", uid="catalog"
    )
    return joined, flink_bridge.side_output(joined, classes.CatalogJoin.REJECTED)


PROCESS_MODE_REFUSED = (
    "python.execution-mode: the job runs in thread mode only (flink-conf.yaml: "
    "python.execution-mode: thread); in process mode the customer operator could not batch "
    "its calls into Python, and PyFlink's per-element operator cannot carry a DLQ record "
    "without a customer id"
)


def process_customers(
    keyed: KeyedStream, function: CustomerFunction, batch_events: int, batch_delay_ms: int
) -> DataStream:
    """The customer operator: ``io.inboxflow.flink.BatchCustomerOperator`` with ``function``,
    which applies batches of up to ``batch_events`` events (at most ``batch_delay_ms`` old)
    with one call into Python each (docs/DESIGN.md#batched-operator). Thread mode only:
    in process mode there is no interpreter in the JVM to call, so this refuses with a
    :class:`~job.config.ConfigError` naming the setting."""
    if not flink_bridge.is_thread_mode(keyed):
        raise ConfigError(PROCESS_MODE_REFUSED)
    return flink_bridge.embedded_keyed_process(
        keyed,
        function,
        ROUTED,
        helper_classes().BatchCustomerOperator,
        batch_events,
        batch_delay_ms,
    )


def limit_send_rate(requests: DataStream, send_rate: int) -> tuple[DataStream, DataStream]:
    """``requests`` (``KEYED_JSON``) through ``io.inboxflow.flink.SendRateLimiter``
    (docs/DESIGN.md#send-rate): at most ``send_rate`` per second across the job, each of its
    subtasks allowing ``send_rate / parallelism`` per second; the others wait, in order, in
    checkpointed state. Chained to the operator that produces ``requests`` (same parallelism,
    forward). Returns the requests as they are released and the ``deferred`` outcome
    (``KEYED_JSON``) of each request that had to wait."""
    limiter = helper_classes().SendRateLimiter
    limited = flink_bridge.transform_on_jvm(
        requests, limiter(send_rate), KEYED_JSON, name="send-rate", uid="send-rate"
    )
    return limited, flink_bridge.side_output(limited, limiter.DEFERRED)


def build(
    cfg: JobConfig,
    raw: DataStream,
    *,
    store: bool | None = None,
    enveloped: bool = False,
    catalog: DataStream | None = None,
    catalog_first: bool = False,
) -> Outputs:
    """``raw``: raw event strings whose stream timestamps do not matter (event time is
    assigned here from each event's ``timestamp``, docs/DESIGN.md#event-time), or with
    ``enveloped`` ``KEYED_EVENT`` envelopes already stamped with event time at the source.
    ``catalog``: a stream of product records (``KEYED_JSON``, :func:`join_catalog`) joined to
    the events with ``catalog.file``'s; ``catalog_first``: it is bounded and is read whole
    before any event (tests)."""
    flink_bridge.check_version()
    store = cfg.clickhouse.enabled if store is None else store
    events, catalog_rejected = join_catalog(
        cfg, timed_events(cfg, raw, enveloped), catalog, catalog_first
    )
    customers = (
        process_customers(
            flink_bridge.key_by_first_field(events, Types.STRING(), RAW_EVENT),
            CustomerFunction(
                core_settings(cfg, store),
                log_level=cfg.logging.level,
                log_format=cfg.logging.format,
            ),
            cfg.processing.batch_events,
            cfg.processing.batch_delay_ms,
        )
        .name("customers")
        .uid("customers")
    )
    router = helper_classes().OutputRouter
    # chained to the customer function (same parallelism, forward): no network hop
    routed = flink_bridge.process_on_jvm(
        customers, router(), KEYED_STORE_ROW, name="route-outputs", uid="route-outputs"
    )

    def side(kind: Kind) -> DataStream:
        return flink_bridge.side_output(routed, router.tag(kind.value))

    dlq = side(Kind.DLQ)
    if catalog_rejected is not None:
        dlq = dlq.union(catalog_rejected)
    if store:
        from udfs.flink.writer_function import WriterFunction

        rejected = (
            flink_bridge.key_by_first_field(routed, Types.INT(), STORE_ROW)
            .process(
                WriterFunction(
                    cfg.clickhouse.dsn,
                    cfg.ddl_dir,
                    cfg.clickhouse.flush_rows,
                    cfg.clickhouse.flush_interval_ms,
                    cfg.clickhouse.freshness_log or None,
                    log_level=cfg.logging.level,
                    log_format=cfg.logging.format,
                ),
                output_type=KEYED_JSON,
            )
            .name("clickhouse-writer")
            .uid("clickhouse-writer")
        )
        if writer_parallelism(cfg) is not None:
            rejected = rejected.set_parallelism(writer_parallelism(cfg))
        dlq = dlq.union(rejected)
    requests, outcomes = side(Kind.REQUEST), side(Kind.OUTCOME)
    if cfg.guards.send_rate > 0:  # 0: unlimited, no limiter in the graph
        requests, deferred = limit_send_rate(requests, cfg.guards.send_rate)
        outcomes = outcomes.union(deferred)
    return Outputs(requests=requests, dlq=dlq, outcomes=outcomes)
