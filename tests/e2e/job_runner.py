"""Runs the real Kafka job, bounded, in a process of its own, so a test can kill it hard.

``python -m tests.e2e.job_runner SPEC.json`` where the spec holds ``config`` (overrides merged
over conf/job.yaml), ``flink`` (overrides of flink-conf.yaml, e.g. the checkpoint directory or
``execution.state-recovery.path``) and optionally ``stopping_offsets`` (partition -> exclusive
end offset). Bounded, it exits 0 once the input is fully processed; unbounded, it runs until
it is killed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from job.config import load_config
from job.main import flink_settings, run


def main(spec_path: str) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(env={}, overrides=spec["config"])
    settings = flink_settings(overrides=spec["flink"])
    stopping = spec.get("stopping_offsets")
    offsets = {int(p): int(o) for p, o in stopping.items()} if stopping else None
    run(cfg, settings, offsets, job_name="inboxflow-crash-test")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
