"""The job's own files travel to a TaskManager as paths relative to the code's tree: the
``flink run`` client deletes its unpacked copy of the ``-pyfs`` archive once a detached job is
submitted, so an absolute client path failed every task opened after that."""

from __future__ import annotations

from pathlib import Path

from job.config import load_config
from udfs import paths
from udfs.operators import CustomerFunction
from udfs.writer_operator import WriterFunction


def test_paths_inside_the_code_tree_travel_relative_to_it():
    cfg = load_config(env={}, overrides={})
    assert paths.portable(cfg.schema_dir) == "conf/schemas"
    assert paths.portable(cfg.template_dir) == "templates"
    assert paths.local("conf/schemas") == paths.ROOT / "conf" / "schemas"
    assert paths.local(paths.portable(cfg.ddl_dir)) == paths.ROOT / "conf" / "clickhouse"


def test_paths_outside_the_code_tree_stay_absolute(tmp_path: Path):
    assert paths.portable(tmp_path / "templates") == str(tmp_path.resolve() / "templates")
    assert paths.local(str(tmp_path)) == tmp_path


def test_the_flink_functions_carry_portable_paths():
    from job.pipeline import journey_settings

    cfg = load_config(env={}, overrides={})
    function = CustomerFunction(journey_settings(cfg), cfg.template_dir, "https://x/cart", 0,
                                cfg.schema_dir, 1000, 1000)
    assert (function.schema_dir, function.template_dir) == ("conf/schemas", "templates")
    writer = WriterFunction("chdb:///tmp/x", cfg.ddl_dir, 10, 10)
    assert writer.ddl_dir == "conf/clickhouse"
