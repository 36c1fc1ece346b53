"""inboxflow entry point: Kafka ``events`` → validate → customer state and journeys →
``email.requests`` (+ ``events.dlq``, outcomes, ClickHouse).

Local run: ``inboxflow run``. On a cluster: ``flink run --python job/main.py [--config ...]``
with the jars from ``lib/`` (``python -m job.dev.jars``) or the same artifacts from Maven.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `flink run --python job/main.py` starts with job/ on the path
    sys.path.insert(0, str(ROOT))

# After the sys.path line above: as a script, `job` is importable only from here on.
from job import flink_bridge  # noqa: E402
from job.config import DEFAULT_CONFIG, JobConfig, load_config  # noqa: E402
from job.jvm import helper_classes, jar_paths, loaded_helper_classes  # noqa: E402

DEFAULT_FLINK_CONF = ROOT / "flink-conf.yaml"
_PATH_KEYS = ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir")
log = logging.getLogger("inboxflow")


def flink_settings(
    path: Path = DEFAULT_FLINK_CONF, overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """flink-conf.yaml as flat string settings, relative paths made absolute URIs, plus the
    interpreter settings PyFlink needs to find this venv (docs/DESIGN.md#python-interpreter)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    settings = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}
    settings.update(overrides or {})
    for key in _PATH_KEYS:
        value = settings.get(key)
        if value and "://" not in value:
            settings[key] = (ROOT / value).resolve().as_uri()
    settings.setdefault("python.executable", sys.executable)
    settings.setdefault("python.client.executable", sys.executable)
    return settings


def _preload_jsig() -> None:
    """Preload the JVM's libjsig into the JVM that PyFlink launches, so a native library
    loaded by a UDF in the embedded interpreter that installs signal handlers chains to the
    JVM's instead of replacing them. chdb needed it once; chdb installs its handlers with raw
    system calls that libjsig cannot see, so its engine now runs outside the JVM
    (udfs/clickhouse/host.py). The preload stays as a guard for other native libraries."""
    if not sys.platform.startswith("linux"):
        return
    import shutil

    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java:
        return
    jsig = Path(java).resolve().parent.parent / "lib" / "libjsig.so"
    preload = os.environ.get("LD_PRELOAD", "")
    if jsig.is_file() and str(jsig) not in preload:
        os.environ["LD_PRELOAD"] = f"{jsig} {preload}".strip()


def create_env(settings: dict[str, str], lib_dir: Path = ROOT / "lib"):
    """A StreamExecutionEnvironment configured from ``settings`` with the connector jars."""
    # Thread mode runs UDFs in an interpreter embedded in the JVM: it must see the venv's
    # packages and this project (docs/DESIGN.md#python-interpreter).
    paths = [str(ROOT), *[p for p in sys.path if p.endswith("site-packages")]]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys(paths + os.environ.get("PYTHONPATH", "").split(os.pathsep)).keys() - {""}
    )
    _preload_jsig()
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    # under `flink run --jarfile inboxflow-job.jar` the jars are already on the classpath
    jars = [] if _jars_on_client_classpath() else jar_paths(lib_dir)
    missing = [j.name for j in jars if not j.is_file()]
    if missing:
        raise SystemExit(
            f"missing jars in {lib_dir}: {', '.join(missing)} "
            f"(run `python -m job.dev.jars` or `make install`)"
        )
    conf = Configuration()
    for key, value in settings.items():
        conf.set_string(key, value)
    if jars:
        conf.set_string("pipeline.jars", ";".join(j.as_uri() for j in jars))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if "PYFLINK_GATEWAY_PORT" not in os.environ:  # the local mini-cluster loads no plugins
        from job.prometheus import add_reporters_to_classpath

        add_reporters_to_classpath(settings)
    if "parallelism.default" in settings:
        env.set_parallelism(int(settings["parallelism.default"]))
    return env


def _jars_on_client_classpath() -> bool:
    """Under ``flink run``: the job's Java classes came with ``--jarfile``."""
    return "PYFLINK_GATEWAY_PORT" in os.environ and loaded_helper_classes() is not None


def kafka_sink(cfg: JobConfig, topic: str):
    """A Kafka sink for Row(key, value) streams: key = customer id, value = JSON; the record
    timestamp is the producer's wall clock, not the element's event time
    (``io.inboxflow.flink.KeyedJsonRecordSerializer``)."""
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaSink

    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    )
    # PyFlink's set_record_serializer only accepts its own builder's schemas
    flink_bridge.set_record_serializer(builder, helper_classes().KeyedJsonRecordSerializer(topic))
    for key, value in cfg.kafka.sink_properties.items():
        builder = builder.set_property(key, value)
    return builder.build()


def kafka_source(
    cfg: JobConfig,
    stopping_offsets: dict[int, int] | None = None,
    start_timestamp_ms: int | None = None,
):
    """Reads events as ``KEYED_EVENT`` envelopes (key, event time and Kafka append time read
    on the JVM by ``io.inboxflow.flink.EnvelopeDeserializer``). ``stopping_offsets``
    (partition -> exclusive end offset) makes the read bounded; it must come from delivery
    reports, since Tansu's "latest" offsets are wrong (docs/DESIGN.md#tansu).
    ``start_timestamp_ms`` starts at the first record whose Kafka timestamp is at or after it
    (``job.replay``) instead of ``kafka.starting_offsets``."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    from udfs.flink.customer_function import KEYED_EVENT

    topic = cfg.kafka.topics.events
    if start_timestamp_ms is not None:
        from job.replay import start_offsets_for_timestamp

        start = _explicit_offsets(topic, start_offsets_for_timestamp(cfg, start_timestamp_ms))
    else:
        # PyFlink's committed_offsets() needs the SQL fat jar's shaded classes
        start = KafkaOffsetsInitializer(
            helper_classes().StartingOffsets.named(cfg.kafka.starting_offsets)
        )
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(cfg.kafka.group_id)
        .set_starting_offsets(start)
    )
    flink_bridge.set_deserializer(
        builder,
        helper_classes().EnvelopeDeserializer(
            cfg.limits.max_future_ms, KEYED_EVENT.get_java_type_info()
        ),
    )
    for key, value in cfg.kafka.source_properties.items():
        builder = builder.set_property(key, value)
    if stopping_offsets is not None:
        builder = builder.set_bounded(_explicit_offsets(topic, stopping_offsets))
    return builder.build()


def catalog_source(cfg: JobConfig):
    """Reads ``catalog.topic`` (product records keyed by product id, compacted) whole, from
    its earliest offset on every start without a restore (a restore resumes where the
    checkpoint was, the catalog operator's state holding what came before), and never
    stops: ``Row(product_id, json or None)`` (``io.inboxflow.flink.CatalogDeserializer``; a
    None value is a tombstone). Its offsets are committed under ``<group_id>.catalog``."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_topics(cfg.catalog.topic)
        .set_group_id(f"{cfg.kafka.group_id}.catalog")
        .set_starting_offsets(
            KafkaOffsetsInitializer(helper_classes().StartingOffsets.named("earliest"))
        )
    )
    flink_bridge.set_deserializer(builder, helper_classes().CatalogDeserializer())
    for key, value in cfg.kafka.source_properties.items():
        builder = builder.set_property(key, value)
    return builder.build()


def _explicit_offsets(topic: str, offsets: dict[int, int]):
    """``KafkaOffsetsInitializer.offsets`` expects the shaded kafka-clients of the SQL fat
    jar, and py4j hands the JVM Integer offsets where Long ones are needed; a helper class in
    lib/inboxflow-flink-helpers.jar builds it from a string instead."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer

    spec = ",".join(f"{int(p)}:{int(o)}" for p, o in sorted(offsets.items()))
    return KafkaOffsetsInitializer(helper_classes().StoppingOffsets.of(topic, spec))


def build_kafka_job(
    env,
    cfg: JobConfig,
    stopping_offsets: dict[int, int] | None = None,
    store: bool | None = None,
    start_timestamp_ms: int | None = None,
    dry_run_dir: Path | None = None,
) -> None:
    """``dry_run_dir``: requests, outcomes and DLQ records go to JSONL files there instead of
    Kafka (``job.replay``)."""
    from pyflink.common import WatermarkStrategy

    from job.pipeline import build, event_time_strategy
    from udfs.flink.customer_function import KEYED_EVENT

    # Event time and watermarks at the source, one watermark per Kafka partition: a subtask
    # reading several partitions emits the minimum, so a partition that runs ahead cannot
    # make another's events late. The timestamp is the event's own (a Java assigner; a
    # Python one on from_source left Kafka's record time in place, docs/DESIGN.md#event-time).
    raw = env.from_source(
        kafka_source(cfg, stopping_offsets, start_timestamp_ms),
        WatermarkStrategy(event_time_strategy(cfg)),
        "kafka-events",
        type_info=KEYED_EVENT,
    ).uid("kafka-events")
    catalog = None
    if cfg.catalog.topic:  # the catalog never holds back event time: no watermarks
        from udfs.flink.customer_function import KEYED_JSON

        catalog = env.from_source(
            catalog_source(cfg),
            WatermarkStrategy.no_watermarks(),
            "kafka-catalog",
            type_info=KEYED_JSON,
        ).uid("kafka-catalog")
    out = build(cfg, raw, store=store, enveloped=True, catalog=catalog)
    if dry_run_dir is not None:
        from job.replay import DRY_RUN_FILES, jsonl_sink

        for name, stream in (
            ("requests", out.requests),
            ("outcomes", out.outcomes),
            ("dlq", out.dlq),
        ):
            stream.sink_to(jsonl_sink(dry_run_dir / DRY_RUN_FILES[name])).name(
                f"dry-run-{name}"
            ).uid(f"dry-run-{name}").set_parallelism(1)
        return
    topics = cfg.kafka.topics
    out.requests.sink_to(kafka_sink(cfg, topics.email_requests)).name("email-requests").uid(
        "sink-email-requests"
    )
    out.dlq.sink_to(kafka_sink(cfg, topics.dlq)).name("dlq").uid("sink-dlq")
    out.outcomes.sink_to(kafka_sink(cfg, topics.outcomes)).name("outcomes").uid("sink-outcomes")


def prepare_store(cfg: JobConfig) -> None:
    """Applies the ClickHouse migrations before the job starts, then releases the path so
    the writer (possibly another process) can open it (docs/DESIGN.md#chdb-lock)."""
    if not cfg.clickhouse.enabled:
        return
    from udfs.clickhouse.client import get_client
    from udfs.clickhouse.errors import StoreLockedError

    client = get_client(cfg.clickhouse.dsn)
    try:
        client.migrate(cfg.ddl_dir)
    except StoreLockedError as exc:
        # e.g. a TaskManager that ran an earlier job still holds the embedded engine (its
        # writer host stays up after a cancel); the writer applies the migrations itself
        log.warning(
            "migrations not applied before submitting, the ClickHouse writer "
            "applies them when it opens: %s",
            exc,
        )
    finally:
        client.close()


def with_rest_endpoint(settings: dict[str, str]) -> tuple[dict[str, str], str]:
    """``settings`` with a REST endpoint on 127.0.0.1 for the local mini-cluster (a free
    port unless ``rest.port`` is set), and its URL: the job's status, restart count and
    web UI are read there."""
    settings = dict(settings)
    if "rest.port" not in settings:
        from job.ops import free_port

        settings["rest.port"] = str(free_port())
    settings.setdefault("rest.bind-port", settings["rest.port"])
    settings.setdefault("rest.address", "127.0.0.1")
    settings.setdefault("rest.bind-address", settings["rest.address"])
    return settings, f"http://{settings['rest.address']}:{settings['rest.port']}"


def run(
    cfg: JobConfig,
    settings: dict[str, str],
    stopping_offsets=None,
    job_name: str = "inboxflow",
    wait: bool = True,
    start_timestamp_ms: int | None = None,
    dry_run_dir: Path | None = None,
):
    """Submit the job. ``wait``: block until it ends (its JobExecutionResult; raises when
    it fails) while a watcher logs every restart loudly; else return its JobClient."""
    prepare_store(cfg)
    # Under `flink run` the CLI owns the gateway (and the cluster's REST endpoint, where the
    # cluster's web UI shows restarts); a local run gets its own endpoint and watcher.
    local = "PYFLINK_GATEWAY_PORT" not in os.environ
    if local:
        settings, rest_url = with_rest_endpoint(settings)
    env = create_env(settings)
    build_kafka_job(
        env, cfg, stopping_offsets, start_timestamp_ms=start_timestamp_ms, dry_run_dir=dry_run_dir
    )
    client = env.execute_async(job_name)
    if not wait:
        return client
    if not local:
        # `inboxflow submit` reads the job id from this line
        print(f"Job has been submitted with JobID {client.get_job_id()}", flush=True)
        if flink_bridge.is_detached(env):
            return client
        return client.get_job_execution_result().result()
    import threading

    from job.monitor import JobMonitor, log_restart

    job_id = str(client.get_job_id())
    log.info("job %s submitted; REST API and web UI: %s", job_id, rest_url)
    from job.prometheus import announce
    from udfs.logs import log_path

    announce(settings, job_id, log)  # logs the Prometheus URL once it serves the job
    log.info(
        "logs of the Python functions: %s",
        log_path(flink_bridge.system_property("log.file"), cfg.logging.format),
    )
    log.info(
        "savepoint: inboxflow savepoint %s --rest %s; stop with one: inboxflow stop %s "
        "--savepoint --rest %s",
        job_id,
        rest_url,
        job_id,
        rest_url,
    )
    done = threading.Event()
    watcher = threading.Thread(
        target=JobMonitor(rest_url, job_id).wait_until_terminal,
        kwargs={"on_restart": log_restart, "stop": done.is_set},
        name="inboxflow-job-watch",
        daemon=True,
    )
    watcher.start()
    try:
        return client.get_job_execution_result().result()
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling job %s", job_id)
        client.cancel().result()
        raise
    finally:
        done.set()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inboxflow run", description=__doc__)
    add_run_arguments(parser)
    return parser.parse_args(argv)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="job config (default conf/job.yaml)"
    )
    parser.add_argument(
        "--flink-conf",
        type=Path,
        default=DEFAULT_FLINK_CONF,
        help="Flink settings (default flink-conf.yaml)",
    )
    parser.add_argument("--parallelism", type=int, help="override parallelism.default")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="PATH",
        help="restore the state (pending reminders, profiles, Kafka offsets) "
        "from PATH, a checkpoint or savepoint; without PATH from the "
        "newest completed checkpoint or savepoint under "
        "execution.checkpointing.dir / savepoint-dir",
    )
    parser.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="with --resume: skip state of operators the job no longer has",
    )
    parser.add_argument(
        "--rest-port",
        type=int,
        metavar="PORT",
        help="port of the local run's REST API and web UI (default: a free "
        "port, logged at start); `inboxflow savepoint --rest` uses it",
    )
    parser.add_argument(
        "--from-timestamp",
        metavar="T",
        help="start at the first event whose Kafka record timestamp is at or "
        "after T (epoch ms or RFC 3339, e.g. 2026-01-05T08:00:00Z)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="requests, outcomes and DLQ records to JSONL files, nothing to "
        "Kafka or ClickHouse, production offsets untouched; runs until "
        "Ctrl-C",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="directory of the dry run's files (default var/dry-run/<UTC time>)",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    from job.config import ConfigError

    try:
        cfg = load_config(args.config)
        from job.catalog import file_records

        file_records(cfg)  # a bad catalog line stops the run here, like a config error
    except ConfigError as exc:
        print(f"inboxflow: config error: {exc}", file=sys.stderr)
        return 2
    overrides = {"parallelism.default": str(args.parallelism)} if args.parallelism else None
    settings = flink_settings(args.flink_conf, overrides)
    if settings.get("python.execution-mode", "thread") != "thread":
        from job.pipeline import PROCESS_MODE_REFUSED

        print(f"inboxflow: {PROCESS_MODE_REFUSED}", file=sys.stderr)
        return 2
    if "PYFLINK_GATEWAY_PORT" in os.environ and not args.parallelism:
        # under `flink run`, its `-p N` (`inboxflow submit --parallelism N`) or else the
        # cluster's parallelism.default decides, not the copy of flink-conf.yaml read here
        settings.pop("parallelism.default", None)
    if getattr(args, "dry_run", False) and getattr(args, "resume", None) == "":
        print(
            "inboxflow: --dry-run --resume needs a PATH: without one it would restore the "
            "production job's newest checkpoint (its state and Kafka offsets)",
            file=sys.stderr,
        )
        return 2
    from job import ops

    try:
        settings = ops.resume_settings(
            settings,
            getattr(args, "resume", None),
            allow_non_restored=getattr(args, "allow_non_restored_state", False),
        )
    except ops.OpsError as exc:
        print(f"inboxflow: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "rest_port", None):
        settings["rest.port"] = str(args.rest_port)
    from job import replay

    start_ms = dry_run_dir = None
    try:
        if args.from_timestamp is not None:
            start_ms = replay.parse_timestamp(args.from_timestamp)
        if args.output is not None and not args.dry_run:
            raise ValueError("--output needs --dry-run")
        if args.dry_run:
            dry_run_dir = replay.prepare_output(args.output or replay.default_output_dir())
    except ValueError as exc:
        print(f"inboxflow: {exc}", file=sys.stderr)
        return 2
    if dry_run_dir is not None:
        cfg = replay.dry_run_config(cfg)
        settings = replay.dry_run_settings(settings, dry_run_dir)
        log.info(
            "dry run: outputs to %s, consumer group %s (no commits), ClickHouse off",
            dry_run_dir,
            cfg.kafka.group_id,
        )
    if log.level == logging.NOTSET:
        # importing PyFlink's environment lowers the root logger to WARNING (its Beam worker
        # pool module); the run's own INFO lines (offsets, REST URL) must still show
        log.setLevel(logging.INFO)
    try:
        run(cfg, settings, start_timestamp_ms=start_ms, dry_run_dir=dry_run_dir)
    except KeyboardInterrupt:  # Ctrl-C: run() has cancelled the job (how a dry run ends)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
