"""The customer function carries its schemas and templates, not their paths: the ``flink run``
client deletes its unpacked copy of the ``-pyfs`` archive once a detached job is submitted, and
a TaskManager's interpreter keeps the modules (and their ``__file__``) of the first job it
ran, whose directory is deleted when that job ends."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from job.config import load_config
from job.pipeline import core_settings
from udfs import paths
from udfs.flink.customer_function import CustomerFunction


def test_snapshot_and_materialize_round_trip_nested_files(tmp_path: Path):
    (tmp_path / "src" / "partials").mkdir(parents=True)
    (tmp_path / "src" / "a.j2").write_bytes("Grüße {{ x }}".encode())
    (tmp_path / "src" / "partials" / "b.j2").write_bytes(b"b")
    (tmp_path / "src" / "ignored.txt").write_bytes(b"c")
    files = paths.snapshot(tmp_path / "src", "*.j2")
    assert files == {"a.j2": "Grüße {{ x }}".encode(), "partials/b.j2": b"b"}
    out = paths.materialize(files, tmp_path)
    assert (out / "a.j2").read_bytes() == files["a.j2"]
    assert (out / "partials" / "b.j2").read_bytes() == b"b"


def test_snapshot_names_a_missing_or_empty_directory(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        paths.snapshot(tmp_path / "nope", "*.json")
    with pytest.raises(ValueError, match=r"no \*\.json files in"):
        paths.snapshot(tmp_path, "*.json")


def test_the_function_works_after_its_source_directories_are_gone(tmp_path: Path):
    cfg = load_config(env={}, overrides={})
    schemas = shutil.copytree(cfg.schema_dir, tmp_path / "schemas")
    templates = shutil.copytree(cfg.template_dir, tmp_path / "templates")
    settings = core_settings(cfg, store=False)
    function = CustomerFunction(
        replace(
            settings,
            schema_dir=schemas,
            render=replace(settings.render, template_dir=templates),
        )
    )
    shipped = pickle.dumps(function)
    shutil.rmtree(schemas)
    shutil.rmtree(templates)
    copy = pickle.loads(shipped)
    unpacked = copy.unpack_files()
    try:
        unpacked_schemas = unpacked / "schemas"
        assert sorted(
            p.relative_to(unpacked_schemas) for p in unpacked_schemas.rglob("*.json")
        ) == (sorted(p.relative_to(cfg.schema_dir) for p in Path(cfg.schema_dir).rglob("*.json")))
        for name in ("abandoned_cart_1.html.j2", "locale/de/LC_MESSAGES/messages.po"):
            assert (unpacked / "templates" / name).read_bytes() == (
                Path(cfg.template_dir) / name
            ).read_bytes()
    finally:
        shutil.rmtree(unpacked)
