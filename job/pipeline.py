"""Builds the inboxflow topology from a config and a stream of raw event strings.

Sources and sinks are attached by the caller (``job.main`` attaches Kafka; tests attach
bounded collections), so the same wiring runs in production, in the demo and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.datastream import DataStream

from job.config import JobConfig
from udfs.journey import JourneySettings
from udfs.operators import (DLQ_TAG, KEYED_JSON, OUTCOME_TAG, STORE_TAG, VALID_EVENT,
                            CustomerFunction, EventTimeAssigner, ValidateFunction)


@dataclass(frozen=True)
class Outputs:
    """Every stream is ``KEYED_JSON`` = Row(key, JSON): ready for a Kafka sink."""

    requests: DataStream
    dlq: DataStream
    outcomes: DataStream


def journey_settings(cfg: JobConfig) -> JourneySettings:
    return JourneySettings(
        campaign=cfg.journey.campaign,
        schedule=cfg.journey.schedule(),
        recent_products=cfg.limits.recent_products,
        favourite_categories=cfg.limits.favourite_categories,
        dedup_window=cfg.limits.dedup_window,
        attribution_window_ms=cfg.clickhouse.attribution_window_ms,
    )


def watermark_strategy(cfg: JobConfig) -> WatermarkStrategy:
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(cfg.watermarks.out_of_orderness_ms)
    ).with_timestamp_assigner(EventTimeAssigner())
    if cfg.watermarks.idleness_ms > 0:
        strategy = strategy.with_idleness(Duration.of_millis(cfg.watermarks.idleness_ms))
    return strategy


def build(cfg: JobConfig, raw: DataStream, *, store: bool | None = None) -> Outputs:
    """``raw`` must carry no event-time timestamps of its own that matter: event time is
    assigned here, after validation, from each event's ``timestamp`` (DESIGN trap 1)."""
    store = cfg.clickhouse.enabled if store is None else store
    validated = raw.process(
        ValidateFunction(cfg.schema_dir, cfg.limits.max_event_bytes, cfg.limits.max_future_ms),
        output_type=VALID_EVENT,
    ).name("validate").uid("validate")
    # Same parallelism as the source so validation chains to it: a rebalance here would
    # reorder one customer's events before they are keyed.
    validated.set_parallelism(raw._j_data_stream.getParallelism())
    dlq = validated.get_side_output(DLQ_TAG)

    customers = (
        validated.assign_timestamps_and_watermarks(watermark_strategy(cfg))
        .name("event-time").uid("event-time")
        .key_by(lambda e: e[0], key_type=Types.STRING())
        .process(
            CustomerFunction(journey_settings(cfg), cfg.template_dir,
                             cfg.links.cart_base_url,
                             cfg.clickhouse.shards if store else 0),
            output_type=KEYED_JSON,
        ).name("customers").uid("customers")
    )
    outcomes = customers.get_side_output(OUTCOME_TAG)
    if store:
        from udfs.writer_operator import WriterFunction

        rejected = (
            customers.get_side_output(STORE_TAG)
            .key_by(lambda r: r[0], key_type=Types.INT())
            .process(WriterFunction(cfg.clickhouse.dsn, cfg.ddl_dir,
                                    cfg.clickhouse.flush_rows,
                                    cfg.clickhouse.flush_interval_ms),
                     output_type=KEYED_JSON)
            .name("clickhouse-writer").uid("clickhouse-writer")
        )
        dlq = dlq.union(rejected)
    return Outputs(requests=customers, dlq=dlq, outcomes=outcomes)
