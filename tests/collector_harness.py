"""The real collector (Starlette on uvicorn) in a thread of the test process, on a free port
of 127.0.0.1, and a small HTTP client for it (the standard library's, so the bytes sent are
exactly the test's)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from job.collector.app import Settings, create_app
from job.ops import free_port

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "test-web-key-0001"


def settings(bootstrap: str, topics: Mapping[str, str], **changes: Any) -> Settings:
    """The shipped config's collector settings on ``bootstrap`` and ``topics`` (keys
    ``events``, ``dlq``), with the write key :data:`WRITE_KEY` for source ``web``."""
    from job.config import load_config

    cfg = load_config(
        overrides={
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topics": {"events": topics["events"], "dlq": topics["dlq"]},
            },
            "collector": {"write_keys": {"web": WRITE_KEY}},
        },
        env={},
        check_template_files=False,
    )
    return dataclasses.replace(Settings.from_config(cfg, env={}), **changes)


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=data, headers=dict(headers or {}))
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def events(self, body: bytes | str | Any, key: str | None = WRITE_KEY, **headers: str) -> Reply:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json", **headers}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        return self.request("POST", "/v1/events", body, h)


@contextmanager
def running_collector(s: Settings) -> Iterator[Client]:
    import uvicorn

    port = free_port("127.0.0.1")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(s),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_config=None,
            timeout_keep_alive=5,
        )
    )
    thread = threading.Thread(target=server.run, name="collector", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the collector did not start")
        time.sleep(0.02)
    try:
        yield Client("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
