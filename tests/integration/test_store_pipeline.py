"""The real topology with the ClickHouse writer on Flink's mini-cluster (parallelism 1 and 2,
embedded chdb engine), read back through the analyst views with `inboxflow query`. A third
run at parallelism 2 has its chdb host processes killed twice while the job writes: the
writer retries and the tables come out the same.

Every expected figure is computed here from the event set with plain arithmetic over the
events (counts, sums, times), not by the job's own code: which reminders a cart earns follows
from the journey's published rules (step 1 one hour after the last cart activity, step 2 a day
after it, a purchase of the cart ends the journey, a purchase within 7 days after a sent
reminder recovers the cart and is credited to the last reminder sent).

Events are in global event-time order, so none is behind the watermark and every due step
fires before the customer's next event is applied, whichever of watermark or event comes first.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests import factories as f
from tests.factories import CAMPAIGN, DAY, HOUR, MINUTE, T0, query_cli, run_cli
from tests.integration.conftest import run_bounded
from udfs.core.journey import request_id

STEP_AFTER = {1: HOUR, 2: DAY}
ATTRIBUTION_MS = 7 * DAY
BEHAVIOURS = (
    "browse",
    "abandon",
    "abandon_no_email",
    "quick_buy",
    "recover_1",
    "recover_2",
    "too_late",
)


def event_set(seed: int = 11, customers: int = 28) -> tuple[list[dict], dict[str, str]]:
    """Events (normalized form, time-ordered) and each customer's behaviour."""
    rng = random.Random(seed)
    events: list[dict] = []
    behaviour: dict[str, str] = {}
    for i in range(customers):
        cid = f"cust-{i:03d}"
        kind = behaviour[cid] = BEHAVIOURS[i % len(BEHAVIOURS)]
        t = T0 + i * MINUTE
        if kind != "abandon_no_email":
            events.append(f.identify(cid, t, email=f"{cid}@example.com", first_name=f"N{i}"))
        for _ in range(rng.randint(0, 2)):
            t += rng.randint(1, 5) * MINUTE
            events.append(f.page_view(cid, t))
        if kind == "browse":
            continue
        cart_id, value = f"cart-{cid}", 0.0
        for n in range(rng.randint(1, 3)):
            t += rng.randint(1, 9) * MINUTE
            price, qty = rng.choice([4.5, 12.0, 19.99, 35.0]), rng.randint(1, 3)
            value += price * qty
            events.append(f.cart_add(cid, t, f"sku-{n}", price, qty, cart_id))
        last_activity, revenue = t, round(value, 2)
        after = {
            "quick_buy": rng.randint(5, 55) * MINUTE,
            "recover_1": HOUR + rng.randint(1, 22 * 60) * MINUTE,
            "recover_2": DAY + rng.randint(1, 5 * 24 * 60) * MINUTE,
            "too_late": DAY + ATTRIBUTION_MS + rng.randint(1, 600) * MINUTE,
        }.get(kind)
        if after is not None:
            events.append(
                f.purchase(cid, last_activity + after, cart_id, revenue, order_id=f"order-{cid}")
            )
    events.sort(key=lambda e: e["timestamp"])
    return events, behaviour


def expected(events: list[dict]) -> dict:
    """Profiles, email requests and recoveries, from the events and the journey rules."""
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_customer[e["customer_id"]].append(e)
    profiles, requests, recoveries = {}, set(), set()
    for cid, evs in by_customer.items():
        email = next((e["traits"]["email"] for e in evs if e["traits"].get("email")), None)
        adds = [e for e in evs if e["event_type"] == "cart_add"]
        buys = [e for e in evs if e["event_type"] == "purchase"]
        sent, status = [], "idle"
        if adds:
            armed = adds[-1]["timestamp"]
            bought_at = buys[0]["timestamp"] if buys else None
            status = "purchased" if buys else "completed"
            for step, after in STEP_AFTER.items():
                due = armed + after
                if bought_at is not None and bought_at < due:
                    break
                rid = request_id(CAMPAIGN, cid, adds[-1]["properties"]["cart_id"], armed, step)
                requests.add(
                    (
                        rid,
                        cid,
                        step,
                        "sent" if email else "suppressed",
                        "" if email else "no_email",
                        due,
                        tuple(a["properties"]["product_id"] for a in adds),
                    )
                )
                if email:
                    sent.append((step, rid, due))
            if buys and sent and buys[0]["timestamp"] - sent[-1][2] <= ATTRIBUTION_MS:
                step, rid, due = sent[-1]
                b = buys[0]
                recoveries.add(
                    (
                        cid,
                        b["properties"]["cart_id"],
                        b["properties"]["order_id"],
                        step,
                        rid,
                        b["properties"]["revenue"],
                        (b["timestamp"] - due) / 1000,
                    )
                )
        revenue = round(sum(b["properties"]["revenue"] for b in buys), 2)
        open_items = [] if buys else [a["properties"] for a in adds]
        profiles[cid] = {
            "customer_id": cid,
            "email": email,
            "first_name": next(
                (e["traits"]["first_name"] for e in evs if e["traits"].get("first_name")), None
            ),
            "first_seen": evs[0]["timestamp"],
            "last_seen": evs[-1]["timestamp"],
            "event_counts": dict(Counter(e["event_type"] for e in evs)),
            "revenue_total": revenue,
            "order_count": len(buys),
            "avg_order_value": round(revenue / len(buys), 2) if buys else 0.0,
            "last_purchase_at": buys[-1]["timestamp"] if buys else None,
            "cart_value": round(sum(p["price"] * p["quantity"] for p in open_items), 2),
            "cart_items": sum(p["quantity"] for p in open_items),
            "journey_status": status,
            "emails_sent": len(sent),
            "unsubscribed": False,
        }
    return {"profiles": profiles, "requests": requests, "recoveries": recoveries}


PROFILE_SQL = """
SELECT customer_id, email, first_name,
       toUnixTimestamp64Milli(first_seen) AS first_seen,
       toUnixTimestamp64Milli(last_seen) AS last_seen,
       event_counts, revenue_total, order_count, avg_order_value,
       toUnixTimestamp64Milli(last_purchase_at) AS last_purchase_at,
       cart_value, cart_items, journey_status, emails_sent, unsubscribed
FROM customer_profiles_latest ORDER BY customer_id"""
REQUEST_SQL = """
SELECT request_id, customer_id, step, status, reason, toUnixTimestamp64Milli(due_at) AS due_at,
       product_ids, count() AS copies
FROM email_requests FINAL GROUP BY ALL ORDER BY request_id"""
RECOVERY_SQL = """
SELECT customer_id, cart_id, order_id, reminder_step, reminder_request_id, revenue,
       seconds_to_purchase
FROM cart_recoveries FINAL ORDER BY customer_id"""
SUMMARY_SQL = "SELECT * FROM recovery_summary_by_step ORDER BY step"


def request_rows(dsn: str) -> set[tuple]:
    """The email_requests table in the shape of :func:`expected`'s requests; every request
    is written exactly once."""
    rows = query_cli(dsn, REQUEST_SQL)
    assert [r["copies"] for r in rows] == [1] * len(rows)
    return {
        (
            r["request_id"],
            r["customer_id"],
            r["step"],
            r["status"],
            r["reason"],
            r["due_at"],
            tuple(r["product_ids"]),
        )
        for r in rows
    }


def recovery_rows(dsn: str) -> set[tuple]:
    """The cart_recoveries table in the shape of :func:`expected`'s recoveries."""
    return {
        (
            r["customer_id"],
            r["cart_id"],
            r["order_id"],
            r["reminder_step"],
            r["reminder_request_id"],
            r["revenue"],
            r["seconds_to_purchase"],
        )
        for r in query_cli(dsn, RECOVERY_SQL)
    }


@pytest.fixture(scope="module")
def scenario():
    events, behaviour = event_set()
    assert set(behaviour.values()) == set(BEHAVIOURS)
    return events, expected(events)


class HostKiller(threading.Thread):
    """Fault injection inside the running job: SIGKILLs the first ``kills`` chdb host
    processes (udfs/clickhouse/host.py) that serve ``path``, each as soon as it appears, whatever
    it is doing (opening the engine, inserting). The writer must retry and lose nothing."""

    def __init__(self, path: str, kills: int):
        super().__init__(daemon=True)
        self.path, self.kills = path.encode(), kills
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.killed) < self.kills:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    args = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if (
                    b"udfs.clickhouse.host" in args
                    and self.path in args
                    and int(proc.name) not in self.killed
                ):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(proc.name), signal.SIGKILL)
                        self.killed.append(int(proc.name))
            time.sleep(0.01)


def run_job(events: list[dict], parallelism: int, dsn: str) -> dict:
    """The bounded job with the writer on. Neither the customer operator's batch limits nor
    the writer's size limit fire during the run: every row reaches the writer only as
    watermarks move or the input ends, and must still be written."""
    return run_bounded(
        [f.raw(e) for e in events],
        parallelism,
        store=True,
        overrides={
            "clickhouse": {
                "enabled": True,
                "dsn": dsn,
                "flush_rows": 100_000,
            },
            "processing": {"batch_events": 100_000, "batch_delay": "1h"},
            **f.cart_only(),
        },
    )


RUNS = {"parallelism-1": (1, 0), "parallelism-2": (2, 0), "parallelism-2-hosts-killed": (2, 2)}


@pytest.fixture(scope="module", params=list(RUNS))
def store_run(request, scenario, tmp_path_factory):
    events, _ = scenario
    parallelism, kills = RUNS[request.param]
    path = str(tmp_path_factory.mktemp(f"chdb-{request.param}") / "clickhouse")
    dsn = "chdb://" + path
    run_cli(dsn, "db", "migrate")
    killer = HostKiller(path, kills)
    if kills:
        killer.start()
    try:
        outputs = run_job(events, parallelism, dsn)
    finally:
        killer.stop.set()
    assert len(killer.killed) == kills  # the faults happened inside the run
    assert outputs["dlq"] == []  # no row rejected by ClickHouse
    return dsn, outputs


def test_latest_profiles_match_the_events(store_run, scenario):
    dsn, _ = store_run
    got = {r["customer_id"]: r for r in query_cli(dsn, PROFILE_SQL)}
    want = scenario[1]["profiles"]
    assert sorted(got) == sorted(want)
    for cid, profile in want.items():
        row = dict(got[cid], event_counts={k: int(v) for k, v in got[cid]["event_counts"].items()})
        assert row == profile, cid


def test_email_requests_hold_every_decision_once(store_run, scenario):
    dsn, outputs = store_run
    got = request_rows(dsn)
    assert got == scenario[1]["requests"]
    # what went to Kafka is exactly what the table calls sent
    assert {req["request_id"] for _, req in outputs["requests"]} == {
        r[0] for r in got if r[3] == "sent"
    }


def test_cart_recoveries_credit_the_last_reminder(store_run, scenario):
    dsn, _ = store_run
    got = recovery_rows(dsn)
    assert got == scenario[1]["recoveries"]
    assert {r[3] for r in got} == {1, 2}  # both steps recover something


def test_recovery_summary_by_step(store_run, scenario):
    dsn, _ = store_run
    want = scenario[1]
    summary = []
    for step in (1, 2):
        sent = sum(1 for r in want["requests"] if r[2] == step and r[3] == "sent")
        recovered = [r for r in want["recoveries"] if r[3] == step]
        summary.append(
            {
                "campaign": CAMPAIGN,
                "step": step,
                "reminders_sent": sent,
                "carts_recovered": len(recovered),
                "recovery_rate": pytest.approx(len(recovered) / sent),
                "revenue_recovered": pytest.approx(sum(r[5] for r in recovered)),
            }
        )
    assert query_cli(dsn, SUMMARY_SQL) == summary


# --------------------------------------------------------------------------- rejected rows

REJECTED = "cust-004"  # recover_1: events, a step-1 reminder and a recovery


@pytest.fixture(scope="module")
def rejecting_run(scenario, tmp_path_factory):
    """The job at parallelism 2 against a database whose ``customer_profiles`` carries a CHECK
    constraint (as an analyst might add one) that refuses every row of one customer: the
    server rejects those inserts for their content (VIOLATED_CONSTRAINT) while the job runs."""
    events, _ = scenario
    dsn = "chdb://" + str(tmp_path_factory.mktemp("chdb-rejecting") / "clickhouse")
    constraint = (
        "ALTER TABLE customer_profiles ADD CONSTRAINT no_rejected "
        f"CHECK customer_id != '{REJECTED}'"
    )
    run_cli(dsn, "db", "migrate")
    run_cli(dsn, "query", constraint)
    return dsn, run_job(events, 2, dsn)


def test_rows_clickhouse_rejects_go_to_the_dlq_and_the_rest_of_the_batch_is_written(
    rejecting_run, scenario
):
    dsn, outputs = rejecting_run
    events, want = scenario
    # One profile version per event of the customer and per reminder step that fired (sent
    # or suppressed), versions 1.. in event-time order; a batch writes the newest version of
    # each of its customers. Every row written is in the DLQ, keyed and labelled by the
    # customer, with the row itself for a replay, and the last is the newest version.
    times = sorted(
        [e["timestamp"] for e in events if e["customer_id"] == REJECTED]
        + [r[5] for r in want["requests"] if r[1] == REJECTED]
    )
    assert len(times) > len([e for e in events if e["customer_id"] == REJECTED])  # a step fired
    dlq = sorted(
        ((key, record) for key, record in outputs["dlq"]),
        key=lambda kr: json.loads(kr[1]["payload"])["version"],
    )
    assert dlq and [key for key, _ in dlq] == [REJECTED] * len(dlq)
    assert {(r["reason"], r["path"], r["customer_id"]) for _, r in dlq} == {
        ("store_rejected", "$.customer_profiles", REJECTED)
    }
    assert all("no_rejected" in r["message"] for _, r in dlq)  # the server's reason
    rows = [json.loads(r["payload"]) for _, r in dlq]  # as inserted: times in seconds
    versions = [row["version"] for row in rows]
    assert versions == sorted(set(versions)) and versions[-1] == len(times)
    assert [round(row["updated_at"] * 1000) for row in rows] == [times[v - 1] for v in versions]
    # every other profile, and every email request and recovery (the rejected customer's
    # included: only its profile rows were refused), is written exactly
    got = {r["customer_id"]: r for r in query_cli(dsn, PROFILE_SQL)}
    assert sorted(got) == sorted(cid for cid in want["profiles"] if cid != REJECTED)
    for cid, row in got.items():
        row["event_counts"] = {k: int(v) for k, v in row["event_counts"].items()}
        assert row == want["profiles"][cid], cid
    assert request_rows(dsn) == want["requests"]
    recoveries = recovery_rows(dsn)
    assert recoveries == want["recoveries"]
    assert REJECTED in {r[0] for r in recoveries}
