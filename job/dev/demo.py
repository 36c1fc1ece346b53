"""``inboxflow demo``: the whole job end to end on its embedded defaults.

Starts a Tansu broker on 127.0.0.1, creates the topics, produces a synthetic stream (Kafka
record time = now, event time = early January: days apart on purpose), runs the job until
the stream is processed (bounded by the producer's delivery offsets), then prints what came
out of Kafka and ClickHouse, and stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter

from job.config import ROOT, load_config

DEMO_DIR = ROOT / "var" / "demo"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the job end to end on a synthetic stream")
    p.add_argument("--customers", type=int, default=3000)
    p.add_argument("--events", type=int, default=40000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument(
        "--no-store",
        dest="store",
        action="store_false",
        help="skip the ClickHouse writer (on by default, embedded chdb in var/demo)",
    )
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from job.dev import gen, kafka_io
    from job.dev.broker import TansuBroker
    from job.main import flink_settings, run

    started = time.monotonic()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    with TansuBroker(log_path=DEMO_DIR / "tansu.log").start() as broker:
        cfg = load_config(
            overrides={
                "kafka": {
                    "bootstrap_servers": broker.bootstrap,
                    "group_id": "inboxflow-demo",
                    "starting_offsets": "earliest",
                },
                "clickhouse": {"dsn": f"chdb://{DEMO_DIR / 'clickhouse'}", "enabled": args.store},
            },
            env={},
        )
        topics = cfg.kafka.topics
        kafka_io.create_topics(
            broker.bootstrap,
            {topics.events: 2, topics.dlq: 1, topics.email_requests: 2, topics.outcomes: 1},
        )
        print(
            f"broker {broker.bootstrap}; generating {args.events} events for "
            f"{args.customers} customers (seed {args.seed})",
            flush=True,
        )
        records = gen.generate(args.seed, args.customers, args.events, gen.DEFAULT_START_MS)
        deliveries = kafka_io.produce(
            broker.bootstrap, topics.events, ((r.key, r.value, None) for r in records)
        )
        stops = kafka_io.end_offsets_from_deliveries(deliveries)
        print(
            f"produced {len(deliveries)} events; running the job (parallelism {args.parallelism})",
            flush=True,
        )
        settings = flink_settings(
            overrides={
                "parallelism.default": str(args.parallelism),
                "execution.checkpointing.dir": (DEMO_DIR / "checkpoints").as_uri(),
            }
        )
        job_started = time.monotonic()
        run(cfg, settings, stopping_offsets=stops, job_name="inboxflow-demo")
        job_seconds = time.monotonic() - job_started
        requests = kafka_io.consume(broker.bootstrap, topics.email_requests, idle_timeout_s=3)
        dlq = kafka_io.consume(broker.bootstrap, topics.dlq, idle_timeout_s=3)
        outcomes = kafka_io.consume(broker.bootstrap, topics.outcomes, idle_timeout_s=3)
    print_summary(len(deliveries), job_seconds, requests, dlq, outcomes)
    if cfg.clickhouse.enabled:
        print_store_summary(cfg)
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s; broker stopped; "
        f"files in {DEMO_DIR}"
    )
    return 0


def print_summary(produced: int, job_seconds: float, requests, dlq, outcomes) -> None:
    decoded = [json.loads(r.value) for r in outcomes]
    kinds = Counter(o["kind"] for o in decoded)
    reasons = Counter(json.loads(r.value)["reason"] for r in dlq)
    parsed = [json.loads(r.value) for r in requests]
    sent = Counter((r["campaign"], r["step"]) for r in parsed)
    deferred = Counter(o.get("reason") for o in decoded if o["kind"] == "deferred")
    skipped = Counter(o.get("reason") for o in decoded if o["kind"] == "skipped")
    print("\n=== inboxflow demo summary ===")
    print(
        f"events in            {produced}  ({produced / job_seconds:,.0f} events/s over "
        f"{job_seconds:.1f} s of job time, start-up included)"
    )
    print(f"invalid (DLQ)        {len(dlq)}  {dict(reasons.most_common())}")
    print(f"late                 {kinds['late']}")
    print(f"duplicates dropped   {kinds['duplicate']}")
    print(f"carts abandoned      {kinds['abandoned']}")
    for campaign, step in sorted(sent):
        print(f"sent {campaign} step {step}".ljust(40) + f" {sent[campaign, step]}")
    print(f"steps deferred       {sum(deferred.values())}  {dict(deferred.most_common())}")
    print(f"steps not sent       {sum(skipped.values())}  {dict(skipped.most_common())}")
    print(f"journeys cancelled   {kinds['cancelled']}")
    print(f"purchases recovered  {kinds['recovered']}")
    by_locale = Counter(r["locale"] for r in parsed)
    print(f"emails by language   {dict(by_locale.most_common())}")
    for locale, language in (("en", "English"), ("de", "German")):
        example = pick_example(parsed, locale)
        if example is None:
            print(f"\n--- no {language} email in this run ---")
            continue
        print(f"\n--- one {language} email request ---")
        print(
            f"to:       {example['to']}\nsubject:  {example['subject']}\n"
            f"request:  {example['request_id']} ({example['campaign']} step "
            f"{example['step']}, due {example['trigger_event_time']})\n"
            f"List-Unsubscribe: <{example['metadata']['list_unsubscribe']}>\n"
        )
        print(example["text"])


def pick_example(requests: list[dict], locale: str) -> dict | None:
    """A request in ``locale`` that shows the most: a cart email with products and
    recommendations when there is one (the hostile product name of gen's stream when it
    went out in this language), else any in that language."""
    mine = [r for r in requests if r["locale"] == locale]
    if not mine:
        return None
    hostile = [r for r in mine if "<script>" in json.dumps(r["metadata"]["items"])]
    rich = [r for r in mine if r["metadata"]["items"] and r["metadata"]["recommended"]]
    return (hostile or rich or mine)[0]


def print_store_summary(cfg) -> None:
    from udfs.clickhouse.client import get_client

    client = get_client(cfg.clickhouse.dsn)
    try:
        _, ((profiles,),) = client.query("SELECT count() FROM customer_profiles_latest")
        cols, rows = client.query("SELECT * FROM campaign_summary ORDER BY campaign")
    finally:
        client.close()
    print(f"\n--- ClickHouse ({cfg.clickhouse.dsn}) ---\ncustomer profiles    {profiles}")
    print("by campaign          " + " | ".join(cols))
    for row in rows:
        print("                     " + " | ".join(str(v) for v in row))
