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
from udfs.core import campaigns as campaign_model
from udfs.core.campaigns import Campaign, CampaignError, Guards, QuietHours

if typing.TYPE_CHECKING:
    from udfs.core.render import RenderSettings
from udfs.core.recommend import Product

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "conf" / "job.yaml"

# The environment variables the job and its tools read: one name each, imported by every user.
ENV_BOOTSTRAP = "INBOXFLOW_KAFKA_BOOTSTRAP"
ENV_CLICKHOUSE_DSN = "INBOXFLOW_CLICKHOUSE_DSN"
ENV_REST = "INBOXFLOW_FLINK_REST"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def parse_duration(value: Any, key: str) -> int:
    """``"45m"`` -> 2_700_000 (ms). Bare numbers are rejected: a unit must be explicit."""
    try:
        return campaign_model.parse_duration(value, key)
    except CampaignError as exc:
        raise ConfigError(str(exc)) from None


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


@dataclass(frozen=True)
class QuietHoursConfig:
    """No marketing email between ``start`` and ``end`` (HH:MM, the customer's local time;
    start later than end spans midnight); both empty: off."""

    start: str = "21:00"
    end: str = "08:00"
    # IANA name used for customers whose identify traits carry no valid time zone
    default_timezone: str = "UTC"


@dataclass(frozen=True)
class GuardsConfig:
    """What protects customers from too much email (docs/DESIGN.md#guards)."""

    # an event id seen again within this much event time is a redelivery (dropped)
    dedup_ttl_ms: int = duration("24h")
    # ids remembered per customer at most (the oldest go first)
    dedup_max_ids: int = 500
    # marketing emails per customer per window (0: no cap); transactional ones bypass it
    frequency_cap: int = 2
    frequency_window_ms: int = duration("24h")
    quiet_hours: QuietHoursConfig = QuietHoursConfig()
    # a step due at the same instant as a higher-priority campaign's step waits this long
    collision_gap_ms: int = duration("30m")
    # file of customer ids and addresses never sent marketing email (relative to the
    # config file's directory; "" = none)
    suppression_list: str = "suppression.txt"
    # email requests per second across the job, split over the subtasks (0: unlimited)
    send_rate: int = 0


@dataclass(frozen=True)
class LinksConfig:
    cart_base_url: str = "https://shop.example.com/cart"
    # a product's page: {product_id} is replaced (URL-encoded); UTM parameters are appended
    product_url: str = "https://shop.example.com/products/{product_id}"
    # the List-Unsubscribe target of every request (https: or mailto:); {customer_id} and
    # {campaign} are replaced (URL-encoded)
    unsubscribe_url: str = (
        "https://shop.example.com/email/unsubscribe?customer={customer_id}&campaign={campaign}"
    )


@dataclass(frozen=True)
class LocalesConfig:
    """The languages emails are written in (README "Locales")."""

    # used when the customer's locale is unknown or not supported; then "en"
    default: str = "en"
    # every template is checked at start-up in each of these
    supported: tuple[str, ...] = ("en", "de")


@dataclass(frozen=True)
class RecommendationsConfig:
    """Products an email recommends (a step's ``recommend: N``), from the customer's own
    behaviour (docs/DESIGN.md#recommendations)."""

    # product views within this much event time of each other form one session (co-viewed)
    session_gap_ms: int = duration("30m")
    # JSON list of products shown when nothing personal is known (relative to the config
    # file's directory; "" = none)
    fallback_file: str = "bestsellers.json"


@dataclass(frozen=True)
class CatalogConfig:
    """Product records joined to events in the stream (docs/DESIGN.md#catalog)."""

    # JSON lines, one product record each, loaded at start (relative to the config file's
    # directory; "" = none)
    file: str = "catalog.jsonl"
    # a compacted Kafka topic of product records keyed by product id ("" = none); a record
    # with an empty value removes the product
    topic: str = ""


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
class RateLimitConfig:
    """Token buckets of the collector: ``rate`` requests per second on average, bursts of
    up to ``burst`` (0 = no limit)."""

    rate: int = 0
    burst: int = 0


@dataclass(frozen=True)
class StripeConfig:
    # the endpoint's signing secret (whsec_...); INBOXFLOW_STRIPE_WEBHOOK_SECRET wins; "" = off
    secret: str = ""
    tolerance_ms: int = duration("5m")
    # the Checkout Session / PaymentIntent metadata key holding the inboxflow customer id
    metadata_key: str = "customer_id"


@dataclass(frozen=True)
class ShopifyConfig:
    # the app's client secret; INBOXFLOW_SHOPIFY_WEBHOOK_SECRET wins; "" = off
    secret: str = ""
    tolerance_ms: int = duration("24h")


@dataclass(frozen=True)
class WebhooksConfig:
    stripe: StripeConfig = StripeConfig()
    shopify: ShopifyConfig = ShopifyConfig()
    # JSON object: provider identities ("stripe:cus_..", "shopify:123", "email:a@b.c") to
    # customer ids (relative to the config file's directory; "" = none)
    customer_map: str = ""
    # delivery ids remembered to answer a replayed webhook without producing it again
    replay_cache: int = 100_000


@dataclass(frozen=True)
class CollectorConfig:
    """``inboxflow collect``: HTTP in, validated events on ``kafka.topics.events``."""

    host: str = "127.0.0.1"
    port: int = 8088
    # source name -> write key; INBOXFLOW_WRITE_KEYS="web=KEY,ios=KEY" replaces them
    write_keys: Mapping[str, str] = field(default_factory=dict)
    # origins allowed to call /v1/events from a browser (CORS), e.g. https://shop.example.com
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    max_batch: int = 500
    # a request body must arrive within this long (slow clients get 408)
    body_timeout_ms: int = duration("10s")
    # the broker must acknowledge (acks=all) within this long, else 503
    produce_timeout_ms: int = duration("10s")
    rate_limit_key: RateLimitConfig = RateLimitConfig(rate=1000, burst=2000)
    rate_limit_ip: RateLimitConfig = RateLimitConfig(rate=50, burst=100)
    # librdkafka producer settings added to (or replacing) the collector's own
    producer_properties: Mapping[str, str] = field(default_factory=dict)
    webhooks: WebhooksConfig = WebhooksConfig()


@dataclass(frozen=True)
class JobConfig:
    kafka: KafkaConfig
    watermarks: WatermarkConfig
    limits: LimitsConfig
    links: LinksConfig
    clickhouse: ClickHouseConfig
    processing: ProcessingConfig = ProcessingConfig()
    logging: LoggingConfig = LoggingConfig()
    guards: GuardsConfig = GuardsConfig()
    locales: LocalesConfig = LocalesConfig()
    recommendations: RecommendationsConfig = RecommendationsConfig()
    catalog: CatalogConfig = CatalogConfig()
    collector: CollectorConfig = CollectorConfig()
    # conf/campaigns.yaml by default, relative to the config file's directory
    campaigns_file: str = "campaigns.yaml"
    # the directory of the config file: relative file names in it resolve against this
    config_dir: Path = ROOT / "conf"
    # derived at load time (not YAML keys): the parsed campaigns and guards
    campaigns: tuple[Campaign, ...] = ()
    guard_settings: Guards = Guards()
    # the products of recommendations.fallback_file (udfs.core.recommend.load_products)
    fallback_products: tuple[Product, ...] = ()
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
        if f"{where}{unknown[0]}" in _MOVED:
            raise ConfigError(_MOVED[f"{where}{unknown[0]}"])
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


_PATH_FIELDS = {
    "schema_dir",
    "template_dir",
    "ddl_dir",
    "campaigns",
    "guard_settings",
    "fallback_products",
    "config_dir",
}
# keys of earlier versions, with where their setting lives now
_MOVED = {
    "journey": "journey: moved to the campaign abandoned_cart in conf/campaigns.yaml",
    "limits.dedup_window": "limits.dedup_window: replaced by guards.dedup_ttl and "
    "guards.dedup_max_ids",
}


def _validate(cfg: JobConfig) -> None:
    def positive(key: str, value: int) -> None:
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value!r}")

    if cfg.kafka.starting_offsets not in ("earliest", "latest", "committed"):
        raise ConfigError(
            f"kafka.starting_offsets: expected earliest, latest or committed, "
            f"got {cfg.kafka.starting_offsets!r}"
        )
    positive("limits.max_event_bytes", cfg.limits.max_event_bytes)
    positive("guards.dedup_ttl", cfg.guards.dedup_ttl_ms)
    positive("guards.dedup_max_ids", cfg.guards.dedup_max_ids)
    positive("guards.frequency_window", cfg.guards.frequency_window_ms)
    if cfg.guards.frequency_cap < 0:
        raise ConfigError("guards.frequency_cap: must not be negative (0: no cap)")
    if cfg.guards.send_rate < 0:
        raise ConfigError("guards.send_rate: must not be negative (0: unlimited)")
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
    product_url = cfg.links.product_url
    if not product_url.startswith(("https://", "http://")) or "{product_id}" not in product_url:
        raise ConfigError(
            "links.product_url: expected an http(s) URL holding {product_id}, got "
            f"{product_url!r}"
        )
    if not cfg.links.unsubscribe_url.startswith(("https://", "http://", "mailto:")):
        raise ConfigError(
            "links.unsubscribe_url: expected an http(s) or mailto: URL, got "
            f"{cfg.links.unsubscribe_url!r}"
        )
    _validate_locales(cfg.locales)
    if cfg.recommendations.session_gap_ms <= 0:
        raise ConfigError("recommendations.session_gap: must be positive")
    _validate_collector(cfg.collector)


def _validate_collector(c: CollectorConfig) -> None:
    if not 0 < c.port < 65536:
        raise ConfigError(f"collector.port: expected 1 to 65535, got {c.port!r}")
    for key, value in (
        ("collector.max_body_bytes", c.max_body_bytes),
        ("collector.max_batch", c.max_batch),
        ("collector.body_timeout", c.body_timeout_ms),
        ("collector.produce_timeout", c.produce_timeout_ms),
        ("collector.webhooks.stripe.tolerance", c.webhooks.stripe.tolerance_ms),
        ("collector.webhooks.shopify.tolerance", c.webhooks.shopify.tolerance_ms),
        ("collector.webhooks.replay_cache", c.webhooks.replay_cache),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value!r}")
    for name, limit in (("rate_limit_key", c.rate_limit_key), ("rate_limit_ip", c.rate_limit_ip)):
        if limit.rate < 0 or limit.burst < 0:
            raise ConfigError(f"collector.{name}: rate and burst must not be negative (0: off)")
    for origin in c.cors_origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                "collector.cors_origins: expected origins like https://shop.example.com "
                f"(scheme and host, no path) or *, got {origin!r}"
            )


def _validate_locales(locales: LocalesConfig) -> None:
    from udfs.core.l10n import normalize_locale

    if not locales.supported:
        raise ConfigError("locales.supported: expected at least one locale, e.g. [en]")
    for i, name in enumerate(locales.supported):
        if normalize_locale(name) != name:
            raise ConfigError(
                f"locales.supported[{i}]: expected a language code Babel knows, e.g. en or de, "
                f"got {name!r}"
            )
    if locales.default not in locales.supported:
        raise ConfigError(
            f"locales.default: {locales.default!r} is not in locales.supported "
            f"({', '.join(locales.supported)})"
        )


def render_settings(cfg: JobConfig) -> RenderSettings:
    """What the job's renderer is built from."""
    from udfs.core.render import RenderSettings

    return RenderSettings(
        template_dir=cfg.template_dir,
        cart_base_url=cfg.links.cart_base_url,
        product_url=cfg.links.product_url,
        unsubscribe_url=cfg.links.unsubscribe_url,
        locales=cfg.locales.supported,
        default_locale=cfg.locales.default,
        default_timezone=cfg.guards.quiet_hours.default_timezone or "UTC",
    )


def check_templates(cfg: JobConfig) -> None:
    """Stops start-up when a template a campaign names is missing, does not compile, does
    not render for a sample customer in every supported locale, or has a string without a
    translation (:meth:`udfs.core.render.Renderer.check`); the message names the file."""
    from udfs.core.render import Renderer, TemplateError

    settings = render_settings(cfg)
    steps = [
        (campaign.name, step.template, i + 1, step.recommend)
        for campaign in cfg.campaigns
        for i, step in enumerate(campaign.steps)
    ]
    # The same templates (name, size and mtime of every file) checked with the same settings
    # and steps pass again: a process that loads the config many times (the tests, a
    # restart) checks once.
    seen = (settings, tuple(steps), _files_stamp(Path(settings.template_dir)))
    if seen in _CHECKED:
        return
    try:
        renderer = Renderer(settings)
    except TemplateError as exc:
        raise ConfigError(f"templates: {exc}") from None
    for campaign in cfg.campaigns:
        for i, step in enumerate(campaign.steps):
            if renderer.missing_templates([step.template]):
                raise ConfigError(
                    f"campaigns.{campaign.name}.steps[{i}].template: template "
                    f"{step.template!r} is missing or broken in {cfg.template_dir} (needs "
                    f"{step.template}.subject.j2, {step.template}.html.j2, "
                    f"{step.template}.txt.j2)"
                )
    try:
        renderer.check(steps)
    except TemplateError as exc:
        raise ConfigError(f"templates: {exc}") from None
    _CHECKED.add(seen)


_CHECKED: set[tuple[Any, ...]] = set()


def _files_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    if not directory.is_dir():
        return ()
    stamp = []
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            stat = p.stat()  # one stat per file
            stamp.append((p.relative_to(directory).as_posix(), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


def _quiet_hours(q: QuietHoursConfig) -> QuietHours | None:
    if not q.start and not q.end:
        return None
    from udfs.core.campaigns import parse_clock
    from udfs.core.guards import zone_or_none

    for name, value in (("start", q.start), ("end", q.end)):
        if value.isdigit():  # YAML 1.1 reads an unquoted 21:00 as the number 1260
            raise ConfigError(
                f"guards.quiet_hours.{name}: expected a time of day in quotes, e.g. "
                f'"21:00" (unquoted, YAML reads 21:00 as the number {value})'
            )
    try:
        start = parse_clock(q.start, "guards.quiet_hours.start")
        end = parse_clock(q.end, "guards.quiet_hours.end")
    except CampaignError as exc:
        raise ConfigError(str(exc)) from None
    if start == end:
        raise ConfigError(
            "guards.quiet_hours: start and end are the same time (leave both empty for no "
            "quiet hours)"
        )
    if zone_or_none(q.default_timezone) is None:
        raise ConfigError(
            f"guards.quiet_hours.default_timezone: unknown IANA time zone {q.default_timezone!r}"
        )
    return QuietHours(start, end, q.default_timezone)


def _campaigns(cfg: JobConfig, base: Path, overrides: Mapping[str, Any] | None) -> JobConfig:
    """Reads the campaigns file and the suppression list into the derived fields."""
    from udfs.core.campaigns import parse_campaigns, parse_suppression_list
    from udfs.core.validation import event_types

    path = base / cfg.campaigns_file
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"campaigns_file: campaigns file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"campaigns"}:
        raise ConfigError(f"{path}: expected one top-level key, campaigns")
    campaigns_data = data.get("campaigns") or {}
    if overrides:
        campaigns_data = _merge(campaigns_data, overrides)
    try:
        campaigns = parse_campaigns(campaigns_data, event_types(cfg.schema_dir))
    except CampaignError as exc:
        raise ConfigError(str(exc)) from None
    ids: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()
    if cfg.guards.suppression_list:
        listed = base / cfg.guards.suppression_list
        try:
            ids, emails = parse_suppression_list(listed.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"guards.suppression_list: cannot read {listed}: {type(exc).__name__}"
            ) from None
    g = cfg.guards
    guards = Guards(
        dedup_ttl_ms=g.dedup_ttl_ms,
        dedup_max_ids=g.dedup_max_ids,
        cap_limit=g.frequency_cap,
        cap_window_ms=g.frequency_window_ms,
        quiet_hours=_quiet_hours(g.quiet_hours),
        collision_gap_ms=g.collision_gap_ms,
        suppressed_ids=ids,
        suppressed_emails=emails,
    )
    return dataclasses.replace(cfg, campaigns=campaigns, guard_settings=guards)


def _fallback_products(cfg: JobConfig, base: Path) -> JobConfig:
    """Reads recommendations.fallback_file ("" = none) into ``fallback_products``."""
    from udfs.core.recommend import load_products

    name = cfg.recommendations.fallback_file
    if not name:
        return cfg
    try:
        products = load_products(base / name)
    except ValueError as exc:
        raise ConfigError(f"recommendations.fallback_file: {exc}") from None
    return dataclasses.replace(cfg, fallback_products=products)


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_template_files: bool = True,
) -> JobConfig:
    """Load, override from the environment and validate. ``overrides`` is a nested mapping
    merged over the file (tests and the benchmark use it instead of editing YAML); its key
    ``campaigns`` is merged over the campaigns file's ``campaigns`` instead."""
    env = os.environ if env is None else env
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    campaign_overrides = (overrides or {}).get("campaigns")
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if k != "campaigns"})
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
    cfg = dataclasses.replace(cfg, config_dir=path.parent.resolve())
    _validate(cfg)
    cfg = _campaigns(cfg, path.parent, campaign_overrides)
    cfg = _fallback_products(cfg, path.parent)
    if check_template_files:
        check_templates(cfg)
    return cfg


def with_absolute_files(data: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """``data`` (a job config mapping) with ``campaigns_file`` and
    ``guards.suppression_list`` made absolute against ``base`` (the shipped ``conf/``), for
    a config file written somewhere else: relative names resolve against the directory of
    the file that names them."""
    base = base or DEFAULT_CONFIG.parent
    out = dict(data)
    out["campaigns_file"] = str(base / out.get("campaigns_file", "campaigns.yaml"))
    guards = dict(out.get("guards") or {})
    listed = guards.get("suppression_list", GuardsConfig.suppression_list)
    if listed:
        guards["suppression_list"] = str(base / listed)
    out["guards"] = guards
    recommendations = dict(out.get("recommendations") or {})
    fallback = recommendations.get("fallback_file", RecommendationsConfig.fallback_file)
    if fallback:
        recommendations["fallback_file"] = str(base / fallback)
    out["recommendations"] = recommendations
    catalog = dict(out.get("catalog") or {})
    file = catalog.get("file", CatalogConfig.file)
    if file:
        catalog["file"] = str(base / file)
    out["catalog"] = catalog
    return out


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
