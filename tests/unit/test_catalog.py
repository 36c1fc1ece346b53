"""The catalog file (job/catalog.py, docs/DESIGN.md#catalog): the shipped conf/catalog.jsonl is
what the event generator's catalog produces, every line passes
conf/schemas/catalog/product.json, a bad line stops the job before it starts with the line
named, and the catalog schema is no event type."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from job.catalog import SCHEMA, file_path, file_records, problems, read_file
from job.config import ConfigError, load_config
from job.dev import gen
from tests.factories import EVENT_TYPES, ROOT, SCHEMA_DIR
from udfs.core.validation import event_types

SHIPPED = ROOT / "conf" / "catalog.jsonl"


def test_the_shipped_catalog_is_the_generators_catalog():
    """Regenerate with `inboxflow gen --catalog --out conf/catalog.jsonl` (README)."""
    assert SHIPPED.read_text(encoding="utf-8") == gen.catalog_jsonl()
    records = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    assert len(records) == gen.CATALOG_SIZE
    p = gen.CATALOG[2]
    assert records[2] == {
        "product_id": p.product_id,
        "name": p.name,
        "category": p.category,
        "price": p.price,
        "currency": gen.CURRENCY,
        "image_url": p.image_url,
        "url": p.url,
    }


def test_the_gen_command_writes_the_catalog(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    gen.register(parser.add_subparsers())
    out = tmp_path / "catalog.jsonl"
    args = parser.parse_args(["gen", "--catalog", "--out", str(out)])
    assert args.func(args) == 0
    assert out.read_text(encoding="utf-8") == gen.catalog_jsonl()
    args = parser.parse_args(["gen", "--catalog"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == gen.catalog_jsonl()


def test_the_generated_events_carry_what_the_catalog_says():
    """So the shipped catalog changes no generated event's name, image, category or price."""
    by_id = {p.product_id: gen.catalog_record(p) for p in gen.CATALOG}
    seen = 0
    for r in gen.generate(seed=3, customers=40, events=3000, start_ms=gen.DEFAULT_START_MS):
        try:
            event = json.loads(r.value)
        except ValueError:
            continue
        props = event.get("properties") if isinstance(event, dict) else None
        if not isinstance(props, dict) or event["event_type"] == "cart_remove":
            continue
        for line in [props, *(props.get("items") or [])]:
            product = by_id.get(line.get("product_id"))
            if product is None or line.get("currency") == "EURO" or line.get("price", 0) < 0:
                continue  # not a product line, or a malformed record (bad_currency, negative_price)
            for field in ("name", "category", "image_url", "currency", "price"):
                assert line.get(field) == product[field], (event, field)
            seen += 1
    assert seen > 500


def test_the_shipped_config_reads_the_shipped_file():
    cfg = load_config()
    assert file_path(cfg) == SHIPPED
    assert file_records(cfg) == SHIPPED.read_text(encoding="utf-8").splitlines()
    assert (
        file_records(dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, file="")))
        == []
    )


def test_blank_lines_are_skipped_and_records_kept_as_written(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('\n  {"product_id": "a"}  \n\n{"product_id": "b", "price": 0}\n')
    assert read_file(path) == ['{"product_id": "a"}', '{"product_id": "b", "price": 0}']


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"product_id": "a"}\n{"product_id": ', r"line 2: not JSON"),
        ('{"product_id": "a", "price": -1}', r"line 1: \$\.price: -1 is less than the minimum"),
        ('{"name": "no id"}', r"line 1: \$: 'product_id' is a required property"),
        ('{"product_id": "a", "image_url": "ftp://x"}', r"line 1: \$\.image_url: "),
        ('{"product_id": "a", "currency": "EURO"}', r"line 1: \$\.currency: "),
        ("[1]", r"line 1: \$: \[1\] is not of type 'object'"),
    ],
)
def test_a_bad_line_stops_the_job_with_the_line_named(tmp_path, text, message):
    path = tmp_path / "c.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^catalog\.file: {path}: {message}"):
        read_file(path)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^catalog\.file: .*missing\.jsonl"):
        read_file(tmp_path / "missing.jsonl")


def test_problems_names_each_path():
    assert problems({"product_id": "a", "name": None, "price": 1.5, "currency": "eur"}) == []
    assert problems({"product_id": " ", "price": True}) == [
        "$.price: True is not of type 'number', 'null'",
        "$.product_id: ' ' does not match '\\\\S'",
    ]


def test_the_catalog_schema_is_no_event_type():
    assert SCHEMA.parent == SCHEMA_DIR / "catalog"
    assert event_types(SCHEMA_DIR) == EVENT_TYPES
    assert Path(SCHEMA).is_file()
