"""The job's own files (JSON Schemas, email templates) travel inside the Flink function.

The config is loaded where the job is built: ``inboxflow run``, or the ``flink run`` client,
which unpacks the ``-pyfs`` archive into a temporary directory and deletes it once a detached
job is submitted. A TaskManager cannot rely on either path, nor on its own copy of the code:
in thread mode the interpreter of a TaskManager keeps the modules of the first job it ran
(``sys.modules`` is per process), so ``__file__`` of a module can point into a finished job's
deleted directory. The function therefore reads the files on the client (:func:`snapshot`)
and writes them to a directory of its own on the TaskManager when it opens
(:func:`materialize`), which is what the validator and the renderer read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def snapshot(directory: str | Path, *patterns: str) -> dict[str, bytes]:
    """Every file under ``directory`` matching one of ``patterns``: relative POSIX path ->
    content. A missing directory or no matching file is an error that names the directory."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"directory does not exist: {root}")
    files = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for pattern in patterns
        for p in sorted(root.rglob(pattern))
        if p.is_file()
    }
    if not files:
        raise ValueError(f"no {' or '.join(patterns)} files in {root}")
    return files


def materialize(files: dict[str, bytes], parent: Path | None = None) -> Path:
    """A new directory (under ``parent``, else the system's temp dir) holding ``files``."""
    target = Path(tempfile.mkdtemp(prefix="inboxflow-", dir=parent))
    for name, content in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return target
