"""Typed, frozen job configuration loaded from ``conf/job.yaml``.

Every key is checked at start-up: an unknown key, a value of the wrong type, a bad duration
or a missing template stops the job with a message that names the key and the value.
Endpoints can be overridden from the environment (secrets never live in the file).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# defined where the ClickHouse client reads it (udfs never imports job), re-exported here
from udfs.clickhouse.dsn import ENV_CLICKHOUSE_PASSWORD as ENV_CLICKHOUSE_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "conf" / "job.yaml"

# The environment variables the job and its tools read: one name each, imported by every user.
ENV_BOOTSTRAP = "INBOXFLOW_KAFKA_BOOTSTRAP"
ENV_CLICKHOUSE_DSN = "INBOXFLOW_CLICKHOUSE_DSN"
ENV_REST = "INBOXFLOW_FLINK_REST"

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def parse_duration(value: Any, key: str) -> int:
    """``"45m"`` -> 2_700_000 (ms). Bare numbers are rejected: a unit must be explicit."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise ConfigError(
        f"{key}: bad duration {value!r} (expected a number with a unit: ms, s, m, h or d, "
        f"e.g. '45m')"
    )


def duration(default: str) -> Any:
    """Marks a field whose YAML value is a human duration, stored as milliseconds."""
    return field(default=parse_duration(default, "default"), metadata={"duration": True})


@dataclass(frozen=True)
class Topics:
    events: str = "events"
    dlq: str = "events.dlq"
    email_requests: str = "email.requests"
    outcomes: str = "inboxflow.outcomes"


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "inboxflow"
    starting_offsets: str = "committed"
    topics: Topics = Topics()
    source_properties: Mapping[str, str] = field(default_factory=dict)
    sink_properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatermarkConfig:
    out_of_orderness_ms: int = duration("5s")
    idleness_ms: int = duration("30s")
    # the lull rule: see io.inboxflow.flink.SubtaskWatermarks (0 = off; needs idleness > 0)
    idle_advance_ms: int = duration("2m")


@dataclass(frozen=True)
class LimitsConfig:
    max_event_bytes: int = 65536
    max_future_ms: int = duration("1d")
    recent_products: int = 10
    favourite_categories: int = 3
    dedup_window: int = 64


@dataclass(frozen=True)
class StepConfig:
    after_ms: int = duration("24h")
    template: str = ""


@dataclass(frozen=True)
class JourneyConfig:
    campaign: str = "abandoned_cart"
    abandon_after_ms: int = duration("24h")
    template: str = "abandoned_cart_1"
    steps: tuple[StepConfig, ...] = ()

    def schedule(self) -> tuple[tuple[int, str], ...]:
        """(offset from the last cart activity in ms, template) for step 1, 2, ..."""
        return ((self.abandon_after_ms, self.template),) + tuple(
            (s.after_ms, s.template) for s in self.steps
        )


@dataclass(frozen=True)
class LinksConfig:
    cart_base_url: str = "https://shop.example.com/cart"


@dataclass(frozen=True)
class ClickHouseConfig:
    enabled: bool = True
    dsn: str = "chdb://var/clickhouse"
    flush_rows: int = 5000
    flush_interval_ms: int = duration("500ms")
    shards: int = 2
    attribution_window_ms: int = duration("7d")
    # When set, the writer appends one line per profile row it commits: milliseconds from
    # the event's append to Kafka until the insert committed (read by `make bench`).
    freshness_log: str = ""


@dataclass(frozen=True)
class ProcessingConfig:
    """The customer operator's batches (``io.inboxflow.flink.BatchCustomerOperator``)."""

    # events (and fired timers) applied with one call into Python
    batch_events: int = 1000
    # a batch waits at most this long (processing time) after its first event
    batch_delay_ms: int = duration("5ms")


@dataclass(frozen=True)
class LoggingConfig:
    """Logs of the Python functions in the TaskManagers (``udfs/logs.py``)."""

    level: str = "INFO"
    # json: one JSON object per line; text: TIME LEVEL LOGGER MESSAGE key=value ...
    format: str = "json"


@dataclass(frozen=True)
class JobConfig:
    kafka: KafkaConfig
    watermarks: WatermarkConfig
    limits: LimitsConfig
    journey: JourneyConfig
    links: LinksConfig
    clickhouse: ClickHouseConfig
    processing: ProcessingConfig = ProcessingConfig()
    logging: LoggingConfig = LoggingConfig()
    schema_dir: Path = ROOT / "conf" / "schemas"
    template_dir: Path = ROOT / "templates"
    ddl_dir: Path = ROOT / "conf" / "clickhouse"


def _yaml_key(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("duration"):
        return f.name.removesuffix("_ms")
    return f.name


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return types.MappingProxyType({str(k): str(v) for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls) if f.name not in _PATH_FIELDS}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for yaml_key, f in fields.items():
        key = f"{prefix}.{yaml_key}" if prefix else yaml_key
        if yaml_key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[f.name] = _build(hints[f.name], {}, key)
            continue
        value = data[yaml_key]
        if f.metadata.get("duration"):
            kwargs[f.name] = parse_duration(value, key)
        else:
            kwargs[f.name] = _convert(hints[f.name], value, key)
    return cls(**kwargs)


_PATH_FIELDS = {"schema_dir", "template_dir", "ddl_dir"}


def _validate(cfg: JobConfig) -> None:
    def positive(key: str, value: int) -> None:
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value!r}")

    if cfg.kafka.starting_offsets not in ("earliest", "latest", "committed"):
        raise ConfigError(
            f"kafka.starting_offsets: expected earliest, latest or committed, "
            f"got {cfg.kafka.starting_offsets!r}"
        )
    positive("journey.abandon_after", cfg.journey.abandon_after_ms)
    previous = cfg.journey.abandon_after_ms
    for i, step in enumerate(cfg.journey.steps):
        if step.after_ms <= previous:
            raise ConfigError(
                f"journey.steps[{i}].after: {step.after_ms} ms must be later than the step "
                f"before it ({previous} ms)"
            )
        if not step.template:
            raise ConfigError(f"journey.steps[{i}].template: missing")
        previous = step.after_ms
    positive("limits.max_event_bytes", cfg.limits.max_event_bytes)
    positive("limits.dedup_window", cfg.limits.dedup_window)
    positive("clickhouse.flush_rows", cfg.clickhouse.flush_rows)
    positive("clickhouse.shards", cfg.clickhouse.shards)
    positive("processing.batch_events", cfg.processing.batch_events)
    if cfg.processing.batch_delay_ms < 0:
        raise ConfigError("processing.batch_delay: must not be negative")
    if cfg.watermarks.out_of_orderness_ms < 0:
        raise ConfigError("watermarks.out_of_orderness: must not be negative")

    from udfs.logs import FORMATS, LEVELS

    if cfg.logging.level not in LEVELS:
        raise ConfigError(
            f"logging.level: expected one of {', '.join(LEVELS)}, got {cfg.logging.level!r}"
        )
    if cfg.logging.format not in FORMATS:
        raise ConfigError(
            f"logging.format: expected one of {', '.join(FORMATS)}, got {cfg.logging.format!r}"
        )

    if not cfg.links.cart_base_url.startswith(("https://", "http://")):
        raise ConfigError(
            f"links.cart_base_url: expected an http(s) URL, got {cfg.links.cart_base_url!r}"
        )


def check_templates(cfg: JobConfig) -> None:
    """Stops start-up when a template named in the journey is missing or does not compile."""
    from udfs.core.render import Renderer

    renderer = Renderer(cfg.template_dir, cfg.links.cart_base_url)
    names = [name for _, name in cfg.journey.schedule()]
    missing = renderer.missing_templates(names)
    if missing:
        keys = {cfg.journey.template: "journey.template"}
        keys.update(
            {s.template: f"journey.steps[{i}].template" for i, s in enumerate(cfg.journey.steps)}
        )
        name = missing[0]
        raise ConfigError(
            f"{keys.get(name, 'journey')}: template {name!r} is missing or broken in "
            f"{cfg.template_dir} (needs {name}.subject.j2, {name}.html.j2, {name}.txt.j2)"
        )


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_template_files: bool = True,
) -> JobConfig:
    """Load, override from the environment and validate. ``overrides`` is a nested mapping
    merged over the file (tests and the benchmark use it instead of editing YAML)."""
    env = os.environ if env is None else env
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        data = _merge(data, overrides)
    cfg: JobConfig = _build(JobConfig, data, "")
    if env.get(ENV_BOOTSTRAP):
        cfg = dataclasses.replace(
            cfg, kafka=dataclasses.replace(cfg.kafka, bootstrap_servers=env[ENV_BOOTSTRAP])
        )
    if env.get(ENV_CLICKHOUSE_DSN):
        cfg = dataclasses.replace(
            cfg, clickhouse=dataclasses.replace(cfg.clickhouse, dsn=env[ENV_CLICKHOUSE_DSN])
        )
    cfg = dataclasses.replace(
        cfg, clickhouse=dataclasses.replace(cfg.clickhouse, dsn=_resolve_dsn(cfg.clickhouse.dsn))
    )
    _validate(cfg)
    if check_template_files:
        check_templates(cfg)
    return cfg


def _resolve_dsn(dsn: str) -> str:
    """A relative embedded path is resolved against the working directory, once, here: the
    Flink workers may run elsewhere."""
    from udfs.clickhouse.dsn import DsnError, resolve_dsn

    try:
        return resolve_dsn(dsn, Path.cwd())
    except DsnError as exc:
        raise ConfigError(f"clickhouse.dsn: {exc}") from None


def _merge(base: Any, over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base or {})
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
