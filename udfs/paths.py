"""Paths of the job's own files (JSON Schemas, templates, ClickHouse DDL) that hold wherever
the code runs.

The config is loaded where the job is built (``inboxflow run``, or the ``flink run`` client,
which unpacks the ``-pyfs`` archive into a temporary directory it deletes once a detached job
is submitted). A TaskManager runs its own copy of the code, so a path inside the code's tree
travels relative to it and is resolved against the copy the function runs from; a path
outside it (an operator's own templates) stays absolute and must exist on every TaskManager.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def portable(path: str | Path) -> str:
    """``path`` relative to the code's root when it lies inside it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return str(resolved)


def local(path: str) -> Path:
    """A :func:`portable` path on this machine."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p
