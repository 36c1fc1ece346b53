"""An operator edits ``conf/campaigns.yaml`` between a stop-with-savepoint and the resume: a
campaign removed and another retimed, with journeys of both in flight. The real
``inboxflow run`` (its own process, the real CLI and broker), as in ``test_resume.py``.

Run 1 runs welcome (step 2 after 3 days) and browse_abandonment (2 h); every customer signs up
at T0 (welcome step 1 goes out before the stop) and views a product at T0 + 5 min (browse step
due at T0 + 2h05). Run 2 resumes from the savepoint with browse_abandonment removed from the
file and welcome's step 2 moved to 1 day:

* the browse journeys end at their due time without sending: outcome ``cancelled``, reason
  ``campaign_removed``;
* welcome step 2 goes out at T0 + 1 day (the entry time plus the new offset), with the request
  id of that step (it does not depend on the timing), never at T0 + 3 days;
* a product view after the resume enters nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from job.dev.broker import TansuBroker
from tests.e2e.test_resume import BOUND, RunProcess, Scenario, cli, clock, wait_for_requests
from tests.factories import DAY, HOUR, MINUTE, NO_GUARDS, ROOT, T0, ev, identify, keys_by_partition
from udfs.core.journey import request_id

pytestmark = pytest.mark.slow

SHIPPED = yaml.safe_load((ROOT / "conf" / "campaigns.yaml").read_text())["campaigns"]


def view(cid: str, ts: int, pid: str, **props: object) -> dict:
    return ev("product_view", cid, ts, properties={"product_id": pid, **props})


def campaigns_file(path: Path, campaigns: dict) -> str:
    path.write_text(yaml.safe_dump({"campaigns": campaigns}, sort_keys=False))
    return str(path)


def config(sc: Scenario, name: str, campaigns: dict) -> Path:
    """The scenario's config with exactly ``campaigns`` in its campaigns file, no frequency
    cap or quiet hours (the times below are the steps' own)."""
    path = campaigns_file(sc.tmp / f"{name}-campaigns.yaml", campaigns)
    return sc.config(name, {"guards": NO_GUARDS, "campaigns_file": path})


def test_campaign_removed_and_retimed_between_savepoint_and_resume(
    broker: TansuBroker, tmp_path: Path
) -> None:
    sc = Scenario(broker, tmp_path)
    welcome = SHIPPED["welcome"]
    before = {"welcome": welcome, "browse_abandonment": SHIPPED["browse_abandonment"]}
    retimed = dict(welcome, steps=[welcome["steps"][0], {**welcome["steps"][1], "after": "1d"}])
    after = {"welcome": retimed}

    keys = keys_by_partition(2, 2, f"{sc.prefix}-")  # [customer, clock] per partition
    customers = [k[0] for k in keys]
    sc.produce(
        [
            e
            for cid in customers
            for e in (
                identify(cid, T0, email=f"{cid}@example.com", first_name="Kim"),
                view(cid, T0 + 5 * MINUTE, "p1", name="Lamp", price=45.0, category="home"),
            )
        ]
        + clock(keys, T0 + 10 * MINUTE + BOUND)
    )
    welcome_1 = [(cid, 1, T0) for cid in customers]

    reader = sc.reader()
    first = RunProcess(sc, "run-1", "--config", str(config(sc, "a", before)), "--parallelism", "2")
    try:
        job_id = first.job()
        wait_for_requests(reader, sc.topics["requests"], welcome_1, first.alive, "welcome 1")
        stopped = cli(
            "stop", job_id, "--savepoint", "--rest", first.rest_url, "--dir", str(tmp_path / "sp")
        )
        assert stopped.returncode == 0, stopped.stderr
        first.proc.wait(timeout=240)
        assert first.proc.returncode == 0, first.tail()
    finally:
        first.kill()

    second = RunProcess(
        sc,
        "run-2",
        "--config",
        str(config(sc, "b", after)),
        "--parallelism",
        "1",
        "--resume",
        stopped.stdout.strip(),
    )
    try:
        second.job()
        late_viewer = keys[0][0] + "-new"
        sc.produce(
            [
                identify(late_viewer, T0 + 2 * DAY, email="new@example.com"),
                view(late_viewer, T0 + 2 * DAY + MINUTE, "p2"),
            ]
            + clock(keys, T0 + 2 * DAY + HOUR + BOUND)
        )
        expected = welcome_1 + [(cid, 2, T0 + DAY) for cid in customers]
        expected.append((late_viewer, 1, T0 + 2 * DAY))
        wait_for_requests(
            reader, sc.topics["requests"], expected, second.alive, "welcome 2 at the new time"
        )
        sent = {
            (r.value["customer_id"], r.value["campaign"], r.value["step"]): r.value["request_id"]
            for r in reader.of(sc.topics["requests"])
        }
        assert set(sent) == {(cid, "welcome", step) for cid, step, _ in expected}
        for cid in customers:
            assert sent[cid, "welcome", 2] == request_id("welcome", cid, None, T0, 2)
        ended = sorted(
            (o["customer_id"], o["campaign"], o["step"], o["reason"], o["event_time"])
            for o in (r.value for r in reader.of(sc.topics["outcomes"]))
            if o["kind"] == "cancelled"
        )
        assert ended == sorted(
            (cid, "browse_abandonment", 1, "campaign_removed", T0 + 5 * MINUTE + 2 * HOUR)
            for cid in customers
        )
    finally:
        second.kill()
        reader.close()
