"""Mini-cluster helpers: run the real topology on a bounded collection and collect every
output stream. End of input fires every pending timer (docs/DESIGN.md#end-of-input), so
expectations include every step of every journey still open at the end."""

from __future__ import annotations

import json
from collections import defaultdict

from job.config import load_config
from job.main import create_env, flink_settings


def bounded_settings(parallelism: int) -> dict[str, str]:
    settings = flink_settings(overrides={"parallelism.default": str(parallelism)})
    # bounded runs need no checkpoints
    settings.pop("execution.checkpointing.interval", None)
    return settings


def run_bounded(
    raw_events: list[str],
    parallelism: int,
    overrides: dict | None = None,
    store: bool = False,
    flink: dict[str, str] | None = None,
) -> dict[str, list[tuple[str | None, dict]]]:
    """Returns {"requests"|"dlq"|"outcomes": [(key, parsed JSON value), ...]}; ``flink``:
    Flink settings over the shipped ones."""
    from pyflink.common import Row, Types

    from job.pipeline import build

    base = {"clickhouse": {"enabled": store}}
    cfg = load_config(overrides={**base, **(overrides or {})})
    env = create_env({**bounded_settings(parallelism), **(flink or {})})
    # a parallel source would interleave one customer's events; Kafka keeps them in order
    # per partition, and a collection source of parallelism 1 does too.
    src = env.from_collection(raw_events, type_info=Types.STRING())
    out = build(cfg, src, store=store)
    tagged = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING()])

    def tag(kind: str):
        return lambda r: Row(kind, r[0], r[1])

    merged = out.requests.map(tag("requests"), output_type=tagged).union(
        out.dlq.map(tag("dlq"), output_type=tagged),
        out.outcomes.map(tag("outcomes"), output_type=tagged),
    )
    results: dict[str, list] = defaultdict(list)
    with merged.execute_and_collect("inboxflow-test") as rows:
        for kind, key, value in rows:
            results[kind].append((key, json.loads(value)))
    return results
