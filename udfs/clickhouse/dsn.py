"""ClickHouse DSNs: one string selects the backend, the rest of the code path is shared.

- ``chdb:///abs/path`` (or a path relative to the project): the embedded ClickHouse engine
  (chdb) through clickhouse-connect's own chdb client. chdb locks its directory: one process at
  a time, and a process can host the engine for one path only (docs/DESIGN.md#chdb-lock).
- ``http(s)://user@host:8123/database``: a ClickHouse server; the password comes from the
  environment variable ``INBOXFLOW_CLICKHOUSE_PASSWORD``, never from the DSN.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

ENV_CLICKHOUSE_PASSWORD = "INBOXFLOW_CLICKHOUSE_PASSWORD"
DEFAULT_CHDB_DIR = Path("var") / "clickhouse"


class DsnError(ValueError):
    """The ClickHouse DSN is malformed or uses an unsupported scheme."""


_DSN_FORMS = "chdb:///absolute/path, chdb://relative/path, http(s)://user@host:8123/database"


def resolve_dsn(dsn: str | None, base_dir: Path) -> str:
    """Return a canonical DSN: chdb paths absolute, http(s) DSNs checked and returned unchanged.

    None or "" selects the embedded default ``chdb:///<base_dir>/var/clickhouse``. A chdb path
    not starting with "/" is relative to ``base_dir``, so the job and the CLI agree on one
    directory whatever their working directory (chdb compares paths literally).
    """
    if not dsn:
        return "chdb://" + str((Path(base_dir) / DEFAULT_CHDB_DIR).resolve())
    scheme, sep, rest = dsn.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise DsnError(f"ClickHouse DSN {dsn!r} has no scheme; expected one of: {_DSN_FORMS}")
    if scheme == "chdb":
        path = rest.removeprefix("//")
        if not path or path in ("memory", ":memory:") or path.startswith(("memory/", ":memory:")):
            raise DsnError(
                f"ClickHouse DSN {dsn!r}: an in-memory chdb engine loses every row at exit; "
                "give a directory, e.g. chdb:///var/lib/inboxflow/clickhouse"
            )
        if "?" in path or "#" in path:
            raise DsnError(f"ClickHouse DSN {dsn!r}: chdb options (?...) are not supported")
        return "chdb://" + str((Path(base_dir) / path).resolve())
    if scheme in ("http", "https"):
        parts = urlsplit(dsn)
        if not parts.hostname:
            raise DsnError(f"ClickHouse DSN {dsn!r} has no host; expected {_DSN_FORMS}")
        if parts.password is not None:
            raise DsnError(
                f"ClickHouse DSN for host {parts.hostname!r} contains a password; "
                f"put it in the environment variable {ENV_CLICKHOUSE_PASSWORD} instead"
            )
        try:
            parts.port  # noqa: B018 - property raises on a non-numeric port
        except ValueError as exc:
            raise DsnError(f"ClickHouse DSN {dsn!r}: {exc}") from None
        return dsn
    raise DsnError(
        f"ClickHouse DSN scheme {scheme!r} is not supported; expected one of: {_DSN_FORMS}"
    )


def chdb_path(dsn: str) -> str | None:
    """The engine directory of a canonical chdb DSN, None for http(s)."""
    if not dsn.startswith("chdb:"):
        return None
    rest = dsn[len("chdb:") :]
    return os.path.realpath(rest.removeprefix("//"))


def redact(dsn: str) -> str:
    """The DSN with its user name masked, for logs."""
    parts = urlsplit(dsn)
    if parts.username:
        return dsn.replace(parts.username + "@", "***@", 1)
    return dsn
