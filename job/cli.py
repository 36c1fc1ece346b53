"""The ``inboxflow`` command: run the job, generate events, run the demo, talk to the
profile store."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from job import db, main, ops, preview, submit
    from job.collector import server as collector
    from job.dev import demo, demo_shop, gen

    parser = argparse.ArgumentParser(
        prog="inboxflow", description="Real-time abandoned-cart emails on Apache Flink."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the streaming job (Kafka in, Kafka + ClickHouse out)")
    main.add_run_arguments(run)
    run.set_defaults(func=main.run_from_args)
    gen.register(sub)
    demo.register(sub)
    demo_shop.register(sub)
    db.register(sub)
    ops.register(sub)
    preview.register(sub)
    collector.register(sub)
    submit.register_submit(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("kafka", "apache_beam", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
