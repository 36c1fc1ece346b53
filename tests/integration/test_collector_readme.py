"""The README's collector commands, exactly as written there, with the shipped
``conf/job.yaml`` (its port 8088, its topic names); only the broker comes from
``INBOXFLOW_KAFKA_BOOTSTRAP``, as the README says. The commands are read from the README, so a
change there is a change to what this test runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request

from job.config import ENV_BOOTSTRAP
from job.dev.broker import TansuBroker
from job.dev.kafka_io import consume, create_topics
from tests.factories import ROOT

SECTION = "## Collector: events from the shop's pages and from webhooks"


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text[text.index(SECTION) :]
    body = body[: body.index("\n## ", 1)]
    block = re.findall(r"```\n(.*?)```", body, re.DOTALL)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_collector_commands_work_as_written() -> None:
    export, collect, post, health = readme_block()
    assert export.startswith("export INBOXFLOW_WRITE_KEYS=")
    name, value = shlex.split(export.removeprefix("export "))[0].split("=", 1)
    assert collect.endswith("&")
    with TansuBroker() as broker:
        create_topics(broker.bootstrap, {"events": 2, "events.dlq": 1})
        env = {**os.environ, name: value, ENV_BOOTSTRAP: broker.bootstrap}
        proc = subprocess.Popen(
            shlex.split(collect.removesuffix("&")),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                try:
                    with urllib.request.urlopen("http://127.0.0.1:8088/healthz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the collector did not come up"
                time.sleep(0.3)
            out = subprocess.run(post, shell=True, env=env, capture_output=True, check=True)
            assert json.loads(out.stdout) == {"accepted": 1}
            out = subprocess.run(health, shell=True, env=env, capture_output=True, check=True)
            assert json.loads(out.stdout) == {"status": "ok", "broker": "reachable"}
            [record] = consume(broker.bootstrap, "events", until_count=1, max_wait_s=30)
            sent = json.loads(shlex.split(post)[-1])
            assert (record.key, json.loads(record.value)) == ("c-readme", sent)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        log = proc.stdout.read().decode()
    # uvicorn shuts down cleanly, then ends the process by the signal it got
    assert code == -signal.SIGTERM, log[-2000:]
    # the structured log: JSON lines only (uvicorn's too), naming the source, never the key
    lines = [json.loads(x) for x in log.splitlines()]
    messages = [x["message"] for x in lines]
    assert any("sources: web" in m for m in messages), log[-2000:]
    assert "Application shutdown complete." in messages
    assert value.split("=", 1)[1] not in log
