"""Replays and dry runs of the Kafka job (``inboxflow run --from-timestamp T --dry-run``).

* ``--from-timestamp T`` starts every partition of the events topic at its first record whose
  **Kafka record timestamp** is at or after T. It only chooses where reading starts: event time
  stays the event's own ``timestamp``. The offsets are resolved once on the client before the
  job is submitted (``io.inboxflow.flink.StartingOffsets``) and logged; a job restored from a
  checkpoint or savepoint continues from the offsets in its state instead.
* ``--dry-run`` writes email requests, outcomes and DLQ records to JSONL files instead of Kafka,
  runs without ClickHouse, reads with a consumer group of its own (``GROUP.dry-run``) and never
  commits offsets, so the production group's position does not move. Its checkpoints go under
  the output directory and are deleted when it is cancelled, so they can never be mistaken for
  the production job's. It runs until interrupted (Ctrl-C), like the job itself.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job import flink_bridge
from job.config import JobConfig
from job.jvm import helper_classes

log = logging.getLogger("inboxflow")

DRY_RUN_GROUP_SUFFIX = ".dry-run"
# output name of job.main.build_kafka_job -> file in the dry run's output directory
DRY_RUN_FILES = {
    "requests": "email.requests.jsonl",
    "outcomes": "outcomes.jsonl",
    "dlq": "dlq.jsonl",
}
# How long a partition must stay quiet before a scan for a timestamp takes it as read to its end.
SCAN_QUIET_MS = 2000
_EPOCH_MS = re.compile(r"^\d{1,15}$")


def parse_timestamp(text: str) -> int:
    """``T`` of ``--from-timestamp`` as epoch ms: digits are epoch milliseconds, anything else
    must be RFC 3339 with a UTC offset (``2026-01-05T08:00:00Z``, ``...+01:00``)."""
    text = text.strip()
    if _EPOCH_MS.match(text):
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in text.upper():
        raise ValueError(
            f"--from-timestamp: expected epoch milliseconds or an RFC 3339 time with an offset "
            f"(e.g. 2026-01-05T08:00:00Z), got {text!r}"
        )
    return (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def start_offsets_for_timestamp(cfg: JobConfig, timestamp_ms: int) -> dict[int, int]:
    """partition -> first offset of the events topic whose record timestamp is >= ``timestamp_ms``
    (the partition's end when there is none). Needs the PyFlink gateway (a running JVM)."""
    props = flink_bridge.java_map(
        {
            **{key: str(value) for key, value in cfg.kafka.source_properties.items()},
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
        }
    )
    found = helper_classes().StartingOffsets.forTimestamp(
        cfg.kafka.topics.events, timestamp_ms, props, SCAN_QUIET_MS
    )
    offsets = {int(p): int(found.get(p)) for p in found.keySet()}
    iso = datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
    log.info(
        "starting %s at Kafka record time %s: %s",
        cfg.kafka.topics.events,
        iso,
        ", ".join(f"partition {p} offset {o}" for p, o in sorted(offsets.items())),
    )
    return offsets


def dry_run_config(cfg: JobConfig) -> JobConfig:
    """``cfg`` for a dry run: a group of its own that never commits, ClickHouse off."""
    kafka = dataclasses.replace(
        cfg.kafka,
        group_id=cfg.kafka.group_id + DRY_RUN_GROUP_SUFFIX,
        source_properties={
            **cfg.kafka.source_properties,
            "commit.offsets.on.checkpoint": "false",
            "enable.auto.commit": "false",
        },
    )
    clickhouse = dataclasses.replace(cfg.clickhouse, enabled=False)
    return dataclasses.replace(cfg, kafka=kafka, clickhouse=clickhouse)


def default_output_dir(now: datetime | None = None) -> Path:
    """``var/dry-run/<UTC time>`` under the working directory."""
    now = now or datetime.now(UTC)
    return Path("var", "dry-run", now.strftime("%Y%m%dT%H%M%SZ"))


def prepare_output(output: Path) -> Path:
    """The absolute output directory, created; refuses one that already holds a dry run's
    files, so two runs never mix their lines."""
    output = output.resolve()
    taken = [name for name in DRY_RUN_FILES.values() if (output / name).exists()]
    if taken:
        raise ValueError(
            f"--output {output} already holds {', '.join(taken)}: choose another directory"
        )
    output.mkdir(parents=True, exist_ok=True)
    return output


def dry_run_settings(settings: dict[str, str], output: Path) -> dict[str, str]:
    """Flink settings for a dry run: checkpoints under ``output``, deleted on cancellation."""
    return {
        **settings,
        "execution.checkpointing.dir": (output / "checkpoints").as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "DELETE_ON_CANCELLATION",
    }


def jsonl_sink(path: Path):
    """A sink appending the JSON value of each ``Row(key, json)`` to ``path``, one per line
    (``io.inboxflow.flink.JsonLinesSink``); attach it at parallelism 1."""
    from pyflink.datastream.connectors.base import Sink

    return Sink(helper_classes().JsonLinesSink(str(path)))
