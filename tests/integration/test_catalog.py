"""The product catalog (io.inboxflow.flink.CatalogJoin, docs/DESIGN.md#catalog).

Its rules through PyFlink's gateway (``io.inboxflow.flink.Catalog``, the catalog of one
subtask: records applied and events enriched in the order a test chooses, so updates and
tombstones between two events are exact), and the operator in the real topology on the
mini-cluster: a catalog file and a bounded catalog stream read before the events, what the
customer function then receives (the cart lines of the reminders), refused catalog records
in the DLQ; and a catalog stream that stays open while the events end, which must not hold
back the watermark (the reminders' timers fire before the catalog closes)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from job.catalog import problems
from job.config import load_config
from job.main import create_env, flink_settings
from tests import factories as f
from tests.factories import DAY, HOUR, MINUTE, T0
from tests.integration.conftest import bounded_settings
from udfs.clock import wall_ms
from udfs.core.validation import Invalid, dlq_record

SEEN_AT = 1_767_603_600_123  # 2026-01-05T09:00:00.123Z
MAX_EVENT_BYTES = 65_536


@pytest.fixture(scope="module")
def jvm():
    from pyflink.java_gateway import get_gateway

    create_env(flink_settings())  # the gateway with the project's jars
    return get_gateway().jvm


def record(product_id: str, **fields) -> str:
    return json.dumps({"product_id": product_id, **fields})


MUG = record(
    "p-mug",
    name="Stoneware Mug",
    category="Kitchen",
    price=12.5,
    currency="EUR",
    image_url="https://cdn.example.com/mug.jpg",
    url="https://shop.example.com/p/mug",
)


def catalog(jvm, *records: tuple[str | None, str | None]):
    c = jvm.io.inboxflow.flink.Catalog(MAX_EVENT_BYTES)
    for key, value in records:
        assert c.problem(key, value) is None
    return c


def event(event_type: str, properties: dict) -> str:
    return json.dumps(
        {
            "event_id": "e1",
            "event_type": event_type,
            "customer_id": "c1",
            "timestamp": T0,
            "properties": properties,
        }
    )


def props(text: str) -> dict:
    return json.loads(text)["properties"]


# --------------------------------------------------------------------------- the rules


def test_an_event_with_only_a_product_id_gets_the_catalogs_fields(jvm):
    c = catalog(jvm, ("p-mug", MUG))
    raw = event("product_view", {"product_id": "p-mug"})
    out = c.enrich(raw)
    assert props(out) == {
        "product_id": "p-mug",
        "name": "Stoneware Mug",
        "category": "Kitchen",
        "image_url": "https://cdn.example.com/mug.jpg",
        "url": "https://shop.example.com/p/mug",
        "price": 12.5,
        "currency": "EUR",
    }
    # the rest of the event is untouched
    assert {k: v for k, v in json.loads(out).items() if k != "properties"} == {
        k: v for k, v in json.loads(raw).items() if k != "properties"
    }


def test_the_price_needs_the_same_currency_and_what_the_catalog_lacks_stays(jvm):
    c = catalog(jvm, (None, record("p-1", name="Catalog name", price=20, currency="eur")))
    usd = event(
        "cart_add",
        {"product_id": "p-1", "price": 9.0, "currency": "USD", "image_url": "https://e/1.jpg"},
    )
    assert props(c.enrich(usd)) == {
        "product_id": "p-1",
        "price": 9.0,
        "currency": "USD",
        "image_url": "https://e/1.jpg",
        "name": "Catalog name",
    }
    eur = event("cart_add", {"product_id": " p-1 ", "price": 9.0, "currency": "Eur"})
    assert props(c.enrich(eur)) == {
        "product_id": " p-1 ",
        "price": 20,
        "currency": "Eur",
        "name": "Catalog name",
    }


def test_lines_of_purchases_and_checkouts_are_enriched_one_by_one(jvm):
    c = catalog(jvm, (None, MUG), (None, record("p-cheap", price=1.25)))
    raw = event(
        "purchase",
        {
            "order_id": "o1",
            "revenue": 10,
            "currency": "EUR",
            "items": [
                {"product_id": "p-mug", "quantity": 2},
                {"product_id": "p-unknown", "name": "Kept", "price": 3},
                {"product_id": "p-mug", "price": 1, "currency": "GBP"},
                {"product_id": "p-cheap", "price": 2},
                "not a line",
            ],
        },
    )
    items = props(c.enrich(raw))["items"]
    mug = {k: v for k, v in json.loads(MUG).items() if k not in ("product_id", "currency")}
    assert items == [
        {"product_id": "p-mug", "quantity": 2, **mug},
        {"product_id": "p-unknown", "name": "Kept", "price": 3},
        {"product_id": "p-mug", **mug, "price": 1, "currency": "GBP"},
        # a catalog price without a currency applies to no priced event
        {"product_id": "p-cheap", "price": 2},
        "not a line",
    ]
    assert props(c.enrich(raw.replace("purchase", "checkout_start")))["items"] == items


def test_a_product_not_in_the_catalog_leaves_the_event_as_it_was_sent(jvm):
    c = catalog(jvm, (None, MUG))
    for raw in (
        event("product_view", {"product_id": "p-other"}),
        event("page_view", {"product_id": "p-mug"}),  # not a product event
        event("cart_add", {"product_id": "p-mug", **{k: v for k, v in json.loads(MUG).items()}}),
    ):
        assert c.enrich(raw) == raw


def test_updates_replace_and_tombstones_remove_for_later_events(jvm):
    c = catalog(jvm, (None, record("p-1", name="First")))
    raw = event("product_view", {"product_id": "p-1", "name": "From the event"})
    assert props(c.enrich(raw))["name"] == "First"
    assert c.problem("p-1", record("p-1", name="Second")) is None
    assert props(c.enrich(raw))["name"] == "Second"
    assert c.problem("p-1", None) is None  # a tombstone
    assert c.enrich(raw) == raw
    assert c.problem("p-1", "  ") is None  # an empty value is one too; nothing to remove
    assert c.problem("p-1", record("p-1", name="Third")) is None
    assert props(c.enrich(raw))["name"] == "Third"
    # a refused record changes nothing
    assert c.problem("p-1", record("p-1", name="Fourth", price=-1)) is not None
    assert props(c.enrich(raw))["name"] == "Third"
    assert c.size() == 1


@pytest.mark.parametrize(
    "raw",
    [
        event("cart_add", {"product_id": "p-mug", "price": -3}),
        event("cart_add", {"product_id": "p-mug", "price": "9"}),
        event("cart_add", {"product_id": "p-mug", "price": 9, "name": 7}),
        event("cart_add", {"product_id": "p-mug", "price": 9, "currency": "EURO"}),
        event("purchase", {"currency": 1, "items": [{"product_id": "p-mug"}]}),
        event("purchase", {"items": [{"product_id": "p-mug"}, {"product_id": "x", "price": -1}]}),
        event("product_view", {"product_id": "p-mug", "cart_id": "\ud800"}),
        '{"event_type": "product_view", "properties": {"product_id": "p-mug"',
        '[{"product_id": "p-mug"}]',
        "not json",
        "",
    ],
    ids=[
        "negative-price",
        "price-text",
        "name-number",
        "bad-currency",
        "bad-event-currency",
        "another-line-bad",
        "lone-surrogate-escape",
        "cut-short",
        "not-an-object",
        "not-json",
        "empty",
    ],
)
def test_the_catalog_never_repairs_bad_input(jvm, raw):
    """What the validator rejects reaches it as it was sent: the DLQ shows the sender's text."""
    c = catalog(jvm, (None, MUG))
    assert c.enrich(raw) == raw


def test_an_event_the_catalog_would_make_too_large_stays_as_it_was(jvm):
    raw = event("product_view", {"product_id": "p-mug"})
    enriched = catalog(jvm, (None, MUG)).enrich(raw)
    assert len(raw) < 200 < len(enriched.encode())
    small = jvm.io.inboxflow.flink.Catalog(200)
    assert small.problem(None, MUG) is None
    assert small.enrich(raw) == raw
    exact = jvm.io.inboxflow.flink.Catalog(len(enriched.encode()))
    assert exact.problem(None, MUG) is None
    assert exact.enrich(raw) == enriched


CATALOG_RECORDS = [
    (None, MUG, None),
    ("p-mug", MUG, None),
    (None, record("p-2", price=0, name=None, currency=None), None),
    (None, record("p-3", stock=4, tags=["x"]), None),  # other members are ignored
    ("p-other", MUG, "$.product_id"),
    (None, "not json", "$"),
    (None, "[1]", "$"),
    (None, json.dumps({"name": "no id"}), "$.product_id"),
    (None, record(" "), "$.product_id"),
    (None, json.dumps({"product_id": 7}), "$.product_id"),
    (None, record("p", price=-0.01), "$.price"),
    (None, record("p", price="1"), "$.price"),
    (None, record("p", price=True), "$.price"),
    (None, record("p", currency="EURO"), "$.currency"),
    (None, record("p", currency=978), "$.currency"),
    (None, record("p", name=["x"]), "$.name"),
    (None, record("p", category=1), "$.category"),
    (None, record("p", image_url="ftp://x"), "$.image_url"),
    (None, record("p", url="javascript:alert(1)"), "$.url"),
    (None, None, "$"),  # a tombstone needs a key
]


@pytest.mark.parametrize(("key", "value", "path"), CATALOG_RECORDS)
def test_catalog_records_are_judged_as_the_schema_says(jvm, key, value, path):
    """The JVM's rules for stream records and conf/schemas/catalog/product.json (the file's
    check, job.catalog) agree; a refused record names the path of its problem."""
    got = jvm.io.inboxflow.flink.Catalog(MAX_EVENT_BYTES).problem(key, value)
    assert (got.split(":")[0] if got else None) == path
    if value is not None and path != "$" and path is not None and key is None:
        assert problems(json.loads(value))
    if path is None:
        assert problems(json.loads(value)) == []


def test_a_refused_record_becomes_a_dlq_record_of_the_common_shape(jvm):
    value = record("p-ü", price=-1)
    text = jvm.io.inboxflow.flink.CatalogJoin.deadLetter(
        "p-ü", "$.price", "must be at least 0", value, SEEN_AT
    )
    assert text.isascii()
    got = json.loads(text)
    expected = dlq_record(
        value, Invalid("catalog_invalid", "$.price", "must be at least 0", None, None), SEEN_AT, 0
    )
    assert got == {**expected, "product_id": "p-ü"}
    assert list(got) == [*expected, "product_id"]


# --------------------------------------------------------------------------- in the job


def run_job(
    raw_events: list[str],
    parallelism: int,
    overrides: dict,
    catalog: list[tuple[str | None, str | None]],
    catalog_first: bool,
    hold_catalog_s: float = 0,
    closed_file: Path | None = None,
) -> dict[str, list]:
    """The topology on ``raw_events`` with a catalog stream of ``catalog`` records;
    ``hold_catalog_s``: the catalog stream stays open that long after its last record, and
    the wall-clock time it closed is written to ``closed_file``. Returns {"requests" |
    "dlq" | "outcomes": [(key, parsed JSON, wall ms when it left the job)]}."""
    from pyflink.common import Row, Types

    from job.pipeline import build
    from udfs.flink.customer_function import KEYED_JSON

    cfg = load_config(overrides={"clickhouse": {"enabled": False}, **overrides})
    env = create_env(bounded_settings(parallelism))
    src = env.from_collection(raw_events, type_info=Types.STRING())
    end = "__end__"
    rows = [Row(k, v) for k, v in catalog] + ([Row(end, None)] if hold_catalog_s else [])
    stream = env.from_collection(rows, type_info=KEYED_JSON).set_parallelism(1)
    if hold_catalog_s:
        closed = str(closed_file)

        def hold(row):
            if row[0] == end:
                time.sleep(hold_catalog_s)
                Path(closed).write_text(str(wall_ms()))
                return
            yield row

        stream = stream.flat_map(hold, output_type=KEYED_JSON).disable_chaining()
    out = build(cfg, src, store=False, catalog=stream, catalog_first=catalog_first)
    tagged = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()])

    def tag(kind: str):
        return lambda r: Row(kind, r[0], r[1], wall_ms())

    merged = out.requests.map(tag("requests"), output_type=tagged).union(
        out.dlq.map(tag("dlq"), output_type=tagged),
        out.outcomes.map(tag("outcomes"), output_type=tagged),
    )
    results: dict[str, list] = defaultdict(list)
    with merged.execute_and_collect("inboxflow-catalog-test") as collected:
        for kind, key, value, at in collected:
            results[kind].append((key, json.loads(value), at))
    return results


def lines(outputs, customer: str, step: int) -> list[tuple]:
    (request,) = [
        r for _, r, _ in outputs["requests"] if r["customer_id"] == customer and r["step"] == step
    ]
    return [
        (i["product_id"], i["name"], i["price"], i["quantity"], i["image_url"], i["category"])
        for i in request["metadata"]["items"]
    ]


def test_the_job_shows_the_catalog_of_the_file_and_the_stream_and_refuses_bad_records(tmp_path):
    """Parallelism 2 (the stream is broadcast to both subtasks); the file and a bounded
    stream read before the events. A: a cart of products named only by id, one updated by
    the stream, one removed by it, one not in the catalog; B: a cart in another currency."""
    file = tmp_path / "catalog.jsonl"
    file.write_text(
        "\n".join(
            [
                record(
                    "p-a",
                    name="Alpha",
                    price=10,
                    currency="EUR",
                    category="Toys",
                    image_url="https://cdn.example.com/a.jpg",
                ),
                "",
                record("p-d", name="Delta v1", price=4, currency="EUR"),
                record("p-e", name="Echo", price=5, currency="EUR"),
            ]
        )
    )
    stream = [
        ("p-d", record("p-d", name="Delta v2", price=4.5, currency="EUR")),
        ("p-e", None),  # removed: events keep what they carried
        ("p-bad", record("p-bad", price=-1)),
        ("p-b", record("p-b", name="Bravo", price=20, currency="EUR")),
        (None, "{not json"),
    ]

    def add(cid: str, ts: int, pid: str, **props) -> str:
        return json.dumps(
            {
                "event_id": f"{cid}-{pid}",
                "event_type": "cart_add",
                "customer_id": cid,
                "timestamp": ts,
                "properties": {"product_id": pid, "cart_id": f"cart-{cid}", **props},
            }
        )

    events = [
        f.raw(f.identify("A", T0, email="ann@example.com", first_name="Ann")),
        add("A", T0 + MINUTE, "p-a"),
        add("A", T0 + 2 * MINUTE, "p-d", price=1.0, name="Event D"),
        add("A", T0 + 3 * MINUTE, "p-e", price=2.0, name="Event E", quantity=2),
        add("A", T0 + 4 * MINUTE, "p-z", price=3.0, name="Zulu", currency="EUR"),
        f.raw(f.identify("B", T0, email="bob@example.com", first_name="Bob")),
        add(
            "B",
            T0 + MINUTE,
            "p-b",
            price=9.0,
            currency="USD",
            image_url="https://cdn.example.com/b.jpg",
        ),
    ]
    out = run_job(
        events,
        2,
        {**f.cart_only(), "catalog": {"file": str(file)}},
        stream,
        catalog_first=True,
    )
    a_lines = [
        ("p-a", "Alpha", 10.0, 1, "https://cdn.example.com/a.jpg", "Toys"),
        ("p-d", "Delta v2", 4.5, 1, None, None),
        ("p-e", "Event E", 2.0, 2, None, None),
        ("p-z", "Zulu", 3.0, 1, None, None),
    ]
    assert lines(out, "A", 1) == lines(out, "A", 2) == a_lines
    b_lines = [("p-b", "Bravo", 9.0, 1, "https://cdn.example.com/b.jpg", None)]
    assert lines(out, "B", 1) == lines(out, "B", 2) == b_lines
    (a1,) = [r for _, r, _ in out["requests"] if r["customer_id"] == "A" and r["step"] == 1]
    assert a1["metadata"]["currency"] == "EUR" and a1["metadata"]["cart_value"] == 21.5
    assert sorted(
        (key, d["reason"], d["path"], d["product_id"], d["payload"]) for key, d, _ in out["dlq"]
    ) == [
        (None, "catalog_invalid", "$", None, ""),
        (None, "catalog_invalid", "$.price", "p-bad", ""),
    ]
    assert len(out["requests"]) == 4


def test_a_catalog_that_stays_open_does_not_hold_back_the_watermark(tmp_path):
    """The events end (their final watermark fires every pending reminder) while the catalog
    stream is still open and silent: the reminders leave before it closes. The shipped
    conf/catalog.jsonl names the product of a cart_add that carries only its id and price."""
    closed = tmp_path / "closed"
    cart_add = json.dumps(
        {
            "event_id": "e-c",
            "event_type": "cart_add",
            "customer_id": "C",
            "timestamp": T0 + MINUTE,
            "properties": {"product_id": "p-0003", "price": 75.99, "cart_id": "cart-C"},
        }
    )
    events = [f.raw(f.identify("C", T0, email="cy@example.com", first_name="Cy")), cart_add]
    started = wall_ms()
    out = run_job(
        events,
        1,
        f.cart_only(),
        [("p-x", record("p-x", name="Unused"))],
        catalog_first=False,
        hold_catalog_s=10,
        closed_file=closed,
    )
    closed_at = int(closed.read_text())
    assert closed_at - started >= 10_000
    due = sorted(r["metadata"]["due_at_ms"] for _, r, _ in out["requests"])
    assert due == [T0 + MINUTE + HOUR, T0 + MINUTE + DAY]
    assert all(at < closed_at for _, _, at in out["requests"])
    assert lines(out, "C", 1) == [
        (
            "p-0003",
            "Salt & Pepper Mill Set",
            75.99,
            1,
            "https://cdn.example.com/img/p-0003.jpg",
            "Kitchen",
        )
    ]
