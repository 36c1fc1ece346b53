"""The product catalog's file, read where the job is built (docs/DESIGN.md#catalog).

``catalog.file`` (JSON lines, one product record each, conf/schemas/catalog/product.json) is
read and checked here, line by line, and handed to ``io.inboxflow.flink.CatalogJoin`` as its
initial catalog: the records of ``catalog.topic`` then replace or remove them as they arrive.
A line that breaks the schema stops the job before it starts, with the line named (the file
is configuration, checked at start like the rest; records arriving on the topic are judged in
the stream and go to the dead-letter topic instead). Blank lines are skipped; a later line for
the same product replaces an earlier one.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from job.config import ROOT, ConfigError, JobConfig

SCHEMA = ROOT / "conf" / "schemas" / "catalog" / "product.json"


@cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft202012Validator(schema)


def file_path(cfg: JobConfig) -> Path | None:
    """The catalog file ``cfg`` names (relative to its config directory), or None."""
    name = cfg.catalog.file
    return cfg.config_dir / name if name else None


def problems(record: Any) -> list[str]:
    """What is wrong with one parsed product record (``path: message``), empty when valid."""
    found = []
    for error in sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path)):
        path = "$" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in error.path)
        found.append(f"{path}: {error.message}")
    return found


def read_file(path: Path) -> list[str]:
    """The records of the catalog file ``path``, each as its JSON text, in file order.
    Raises :class:`ConfigError` naming the file, the line and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"catalog.file: {path}: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"catalog.file: {path}: line {number}: not JSON ({exc})") from None
        found = problems(record)
        if found:
            raise ConfigError(f"catalog.file: {path}: line {number}: {found[0]}")
        records.append(line)
    return records


def file_records(cfg: JobConfig) -> list[str]:
    """The records of ``cfg``'s catalog file, or [] when it names none."""
    path = file_path(cfg)
    return [] if path is None else read_file(path)
