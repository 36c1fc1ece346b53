"""``inboxflow collect``: the collector on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from job.collector.app import Settings

log = logging.getLogger("inboxflow.collector")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "collect",
        help="run the HTTP collector: page events and signed webhooks to the events topic",
    )
    p.add_argument("--config", type=Path, default=None, help="job config (default conf/job.yaml)")
    p.add_argument("--host", default=None, help="listen address (default collector.host)")
    p.add_argument("--port", type=int, default=None, help="listen port (default collector.port)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="also serve the demo shop at /shop/ (a write key is made up when none is set)",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies trusted for X-Forwarded-For (the client address of the per-address "
        "rate limit); default: none, the TCP peer is the client",
    )
    p.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from job.collector.app import ConfigError, Settings
    from job.config import ConfigError as JobConfigError
    from job.config import load_config

    try:
        cfg = load_config(args.config, check_template_files=False)
        settings = Settings.from_config(cfg, os.environ, demo=args.demo)
    except (JobConfigError, ConfigError, ValueError) as exc:
        print(f"inboxflow collect: {exc}", file=sys.stderr)
        return 2
    host = args.host or cfg.collector.host
    port = cfg.collector.port if args.port is None else args.port
    serve(settings, host, port, cfg.logging.level, cfg.logging.format, args.forwarded_allow_ips)
    return 0


def serve(
    settings: Settings,
    host: str,
    port: int,
    level: str = "INFO",
    fmt: str = "json",
    forwarded_allow_ips: str | None = None,
) -> None:
    """Runs the collector until SIGINT/SIGTERM (uvicorn's graceful shutdown: open requests
    finish, then the producer delivers what it holds; uvicorn then ends the process by the
    signal it got, so a SIGTERM'd collector exits with status -15 / 143)."""
    import uvicorn

    from job.collector.app import create_app
    from udfs.logs import configure

    ours = configure(level, fmt)
    # uvicorn's own lines (start, stop, errors) in the same structured format
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = list(ours.handlers)
        logger.setLevel(level)
        logger.propagate = False
    sources = ", ".join(sorted(set(settings.write_keys.values())))
    log.info(
        f"collector on http://{host}:{port} (sources: {sources}), events to "
        f"{settings.events_topic} at {settings.bootstrap}"
    )
    if settings.demo:
        log.info(f"demo shop: http://{host}:{port}/shop/")
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # uvicorn's access log prints the query string, which holds the browser's write key
        access_log=False,
        log_config=None,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
