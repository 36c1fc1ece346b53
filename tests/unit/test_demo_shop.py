"""``inboxflow demo-shop`` (job/dev/demo_shop.py): the config it writes for the job, the lines
it prints, its argument checks. The command itself runs in
tests/e2e/test_demo_shop_command.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from job import cli
from job.config import load_config
from job.dev import demo_shop

ROOT = Path(__file__).resolve().parents[2]
INBOXFLOW = Path(sys.executable).with_name("inboxflow")


# --------------------------------------------------------------------------- the config


def test_the_job_config_is_the_shipped_one_made_live_and_local(tmp_path: Path) -> None:
    path = demo_shop.write_config(tmp_path, "127.0.0.1:19092", "45s")
    cfg = load_config(path, env={})
    shipped = load_config(env={})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert (cfg.kafka.group_id, cfg.kafka.starting_offsets) == (demo_shop.GROUP_ID, "earliest")
    assert cfg.kafka.topics == shipped.kafka.topics
    assert cfg.clickhouse.enabled
    assert cfg.clickhouse.dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    w = cfg.watermarks
    assert (w.out_of_orderness_ms, w.idleness_ms) == (1000, 1000)
    assert w.idle_advance_ms == shipped.watermarks.idle_advance_ms > 0  # the lull rule
    assert cfg.guard_settings.quiet_hours is None
    assert cfg.guard_settings.cap_limit == shipped.guard_settings.cap_limit
    by_name = {c.name: c for c in cfg.campaigns}
    shipped_by_name = {c.name: c for c in shipped.campaigns}
    cart = by_name["abandoned_cart"]
    assert cart.steps[0].after_ms == 45_000
    assert cart.steps[1:] == shipped_by_name["abandoned_cart"].steps[1:]
    assert {n: c for n, c in by_name.items() if n != "abandoned_cart"} == {
        n: c for n, c in shipped_by_name.items() if n != "abandoned_cart"
    }
    # the files it names resolve wherever the config file is
    assert cfg.fallback_products == shipped.fallback_products
    assert cfg.catalog.file == str(ROOT / "conf" / "catalog.jsonl")


def test_the_flink_conf_keeps_checkpoints_under_the_demo_directory(tmp_path: Path) -> None:
    from job.main import flink_settings

    settings = flink_settings(demo_shop.write_flink_conf(tmp_path))
    assert settings["execution.checkpointing.dir"] == (tmp_path / "checkpoints").as_uri()
    assert settings["execution.checkpointing.savepoint-dir"] == (tmp_path / "savepoints").as_uri()
    assert settings["python.execution-mode"] == "thread"


def test_the_printed_lines() -> None:
    request = {
        "customer_id": "demo-1a2b3c",
        "campaign": "abandoned_cart",
        "step": 1,
        "to": "ada@example.com",
        "subject": "Ada, you left something in your cart",
    }
    line = demo_shop.describe(False, request)
    assert line == (
        "email     demo-1a2b3c  abandoned_cart step 1  "
        "subject: Ada, you left something in your cart"
    )
    assert "ada@example.com" not in line
    deferred = {
        "kind": "deferred",
        "customer_id": "c",
        "campaign": "abandoned_cart",
        "step": 2,
        "reason": "frequency_cap",
    }
    assert (
        demo_shop.describe(True, deferred) == "deferred  c  abandoned_cart step 2  (frequency_cap)"
    )
    assert demo_shop.describe(True, {"kind": "sent", "customer_id": "c"}) is None
    assert demo_shop.describe(True, {"kind": "abandoned", "customer_id": "c"}) is None


@pytest.mark.parametrize("after", ["0s", "5", "soon"])
def test_a_bad_abandon_after_is_refused(after: str, capsys) -> None:
    assert cli.main(["demo-shop", "--abandon-after", after]) == 2
    assert "--abandon-after" in capsys.readouterr().err


def test_a_busy_port_is_refused(capsys) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert cli.main(["demo-shop", "--port", str(port)]) == 2
    assert f"port {port} of 127.0.0.1 is not free" in capsys.readouterr().err
