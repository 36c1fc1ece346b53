"""Schema migrations: ``NNN_name.sql`` files applied once, in order, recorded in a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udfs.clickhouse.errors import StoreError

MIGRATIONS_TABLE = "schema_migrations"

# Bootstrapped by the migrator itself: it has to exist before any file can be recorded.
MIGRATIONS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
    "(version UInt32, name String, applied_at DateTime64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)
_MIGRATION_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One ``NNN_name.sql`` file; applied once, in version order, recorded in schema_migrations."""

    version: int
    name: str
    path: Path


def discover_migrations(ddl_dir: Path) -> list[Migration]:
    """The migration files of ``ddl_dir`` sorted by version; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(ddl_dir).glob("*.sql")):
        match = _MIGRATION_FILE_RE.match(path.name)
        if not match:
            raise StoreError(f"migration file {path} is not named NNN_name.sql")
        version = int(match.group(1))
        if version == 0 or version in found:
            raise StoreError(f"migration version {version} of {path.name} is 0 or used twice")
        found[version] = Migration(version, match.group(2), path)
    if not found:
        raise StoreError(f"no NNN_name.sql migration files in {ddl_dir}")
    return [found[version] for version in sorted(found)]


def split_sql(text: str) -> list[str]:
    """Split a SQL script on top-level ``;``, ignoring those inside quotes and comments.

    Statements that are only comments are dropped; comments inside a statement are kept
    (ClickHouse accepts them).
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            current.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            current.append(text[i:end])
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            current.append(text[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return bool(without_comments.strip())


def read_version(client: Any) -> int:
    if not client.command(f"EXISTS TABLE {MIGRATIONS_TABLE}"):
        return 0
    result = client.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE}")
    return int(result.result_rows[0][0] or 0)
