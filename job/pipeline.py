"""Builds the inboxflow topology from a config and a stream of raw event strings.

Sources and sinks are attached by the caller (``job.main`` attaches Kafka; tests attach
bounded collections), so the same wiring runs in production, in the demo and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream

from job.config import JobConfig
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
        campaign=cfg.journey.campaign,
        schedule=cfg.journey.schedule(),
        recent_products=cfg.limits.recent_products,
        favourite_categories=cfg.limits.favourite_categories,
        dedup_window=cfg.limits.dedup_window,
        attribution_window_ms=cfg.clickhouse.attribution_window_ms,
    )


def core_settings(cfg: JobConfig, store: bool) -> CoreSettings:
    """What the customer function's core is built from; ``store``: it emits ClickHouse rows."""
    return CoreSettings(
        journey=journey_settings(cfg),
        template_dir=cfg.template_dir,
        cart_base_url=cfg.links.cart_base_url,
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
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    timed = raw._j_data_stream
    if not enveloped:
        parallelism = timed.getParallelism()
        extracted = timed.process(
            helper_classes().EnvelopeExtractor(cfg.limits.max_future_ms),
            KEYED_EVENT.get_java_type_info(),
        )
        # Same parallelism as the source so it chains: a rebalance would reorder one
        # customer's events before they are keyed.
        extracted.setParallelism(parallelism).name("extract-key-and-time").uid("extract")
        timed = extracted.assignTimestampsAndWatermarks(event_time_strategy(cfg))
        timed.setParallelism(parallelism).name("event-time").uid("event-time")
    j_keyed = timed.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, RAW_EVENT, DataStream(timed))


def process_customers(
    keyed: KeyedStream, function: CustomerFunction, drain_interval_ms: int
) -> DataStream:
    """``keyed.process(function, ROUTED)``; in thread mode with
    ``io.inboxflow.flink.CustomerOperator``, PyFlink's own embedded keyed process operator
    plus the draining of the function's ClickHouse row buffer (before every checkpoint
    barrier, every ``drain_interval_ms``, at the end of the input). In process mode nothing
    drains it and the function emits every event's rows at once."""
    from pyflink.datastream.data_stream import (
        _create_j_data_stream_python_function_info,
    )
    from pyflink.fn_execution.flink_fn_execution_pb2 import (
        UserDefinedDataStreamFunction,
    )
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import get_j_env_configuration

    jvm = get_gateway().jvm
    j_stream = keyed._j_data_stream
    j_conf = get_j_env_configuration(j_stream.getExecutionEnvironment())
    if j_conf.get(jvm.org.apache.flink.python.PythonOptions.PYTHON_EXECUTION_MODE) != "thread":
        return keyed.process(function, output_type=ROUTED)
    j_operator = helper_classes().CustomerOperator(
        j_conf,
        _create_j_data_stream_python_function_info(
            function, UserDefinedDataStreamFunction.KEYED_PROCESS
        ),
        j_stream.getTransformation().getOutputType(),
        ROUTED.get_java_type_info(),
        drain_interval_ms,
    )
    return DataStream(j_stream.transform("KEYED PROCESS", ROUTED.get_java_type_info(), j_operator))


def build(
    cfg: JobConfig, raw: DataStream, *, store: bool | None = None, enveloped: bool = False
) -> Outputs:
    """``raw``: raw event strings whose stream timestamps do not matter (event time is
    assigned here from each event's ``timestamp``, docs/DESIGN.md#event-time), or with
    ``enveloped`` ``KEYED_EVENT`` envelopes already stamped with event time at the source."""
    store = cfg.clickhouse.enabled if store is None else store
    customers = (
        process_customers(
            keyed_by_customer(cfg, raw, enveloped),
            CustomerFunction(
                core_settings(cfg, store),
                log_level=cfg.logging.level,
                log_format=cfg.logging.format,
            ),
            cfg.clickhouse.buffer_interval_ms,
        )
        .name("customers")
        .uid("customers")
    )
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    router = helper_classes().OutputRouter
    # chained to the customer function (same parallelism, forward): no network hop
    j_routed = customers._j_data_stream.process(router(), KEYED_STORE_ROW.get_java_type_info())
    j_routed.setParallelism(customers._j_data_stream.getParallelism())
    j_routed.name("route-outputs").uid("route-outputs")

    def side(kind: Kind) -> DataStream:
        return DataStream(j_routed.getSideOutput(router.tag(kind.value)))

    dlq = side(Kind.DLQ)
    if store:
        from udfs.flink.writer_function import WriterFunction

        j_keyed = j_routed.keyBy(
            jvm.KeyByKeySelector(), Types.ROW([Types.INT()]).get_java_type_info()
        )
        rejected = (
            KeyedStream(j_keyed, STORE_ROW, DataStream(j_routed))
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
    return Outputs(requests=side(Kind.REQUEST), dlq=dlq, outcomes=side(Kind.OUTCOME))
