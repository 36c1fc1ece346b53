"""The real topology on Flink's mini-cluster, bounded input, parallelism 1 and 2: the exact
set of email requests, DLQ records and outcomes for a known event set; process mode is
refused."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests import factories as f
from tests.factories import CAMPAIGN, DAY, EMAIL_REQUEST_SCHEMA, HOUR, MINUTE, T0
from tests.integration.conftest import run_bounded
from udfs.core.journey import request_id

SUBJECT_1 = "{}, you left something in your cart"
SUBJECT_2 = "Still thinking it over, {}? Your cart won't wait forever"
XSS = "<script>alert(1)</script> Mug"


def scenario() -> list[str]:
    """One customer per behaviour, events in time order per customer."""
    return [
        # A: abandons two items, one with a hostile name -> steps 1 and 2
        f.raw(f.identify("A", T0, email="ann@example.com", first_name="Ann")),
        f.raw(f.cart_add("A", T0 + MINUTE, "p1", 12.5, 2, "cart-A", name=XSS), iso=True),
        f.raw(f.cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 1, "cart-A", name="Spoon")),
        # B: buys the cart -> nothing
        f.raw(f.identify("B", T0, email="bob@example.com", first_name="Bob")),
        f.raw(f.cart_add("B", T0 + MINUTE, cart_id="cart-B")),
        f.raw(f.purchase("B", T0 + 20 * MINUTE, cart_id="cart-B", order_id="oB")),
        # C: buys a different cart -> this cart's reminders still go out
        f.raw(f.identify("C", T0, email="cy@example.com", first_name="Cy")),
        f.raw(f.cart_add("C", T0 + MINUTE, cart_id="cart-C1")),
        f.raw(f.purchase("C", T0 + 5 * MINUTE, cart_id="cart-C2", order_id="oC")),
        # D: never identified -> both steps skipped for lack of an email address
        f.raw(f.cart_add("D", T0, cart_id="cart-D")),
        # E: unsubscribes -> nothing
        f.raw(f.identify("E", T0, email="eve@example.com", first_name="Eve")),
        f.raw(f.cart_add("E", T0 + MINUTE, cart_id="cart-E")),
        f.raw(f.unsubscribe("E", T0 + 2 * MINUTE)),
        # F: comes back after step 1 was due: step 1 fires first, then the cart re-arms
        f.raw(f.identify("F", T0, email="fay@example.com", first_name="Fay")),
        f.raw(f.cart_add("F", T0, cart_id="cart-F")),
        f.raw(f.cart_add("F", T0 + 2 * HOUR, "p9", cart_id="cart-F")),
        # G: empties the cart -> nothing
        f.raw(f.identify("G", T0, email="gus@example.com", first_name="Gus")),
        f.raw(f.cart_add("G", T0, cart_id="cart-G")),
        f.raw(f.cart_remove("G", T0 + MINUTE)),
        # duplicates of an event id are applied once
        f.raw(
            f.cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 1, "cart-A", name="Spoon", event_id="dup-1")
        ),
        f.raw(
            f.cart_add("A", T0 + 2 * MINUTE, "p2", 5.0, 1, "cart-A", name="Spoon", event_id="dup-1")
        ),
        # malformed input, interleaved with the valid events above
        "not json at all",
        f.teleport("A", "x1"),
        f.negative_price("A", "x2"),
        json.dumps({"event_id": "x3", "event_type": "page_view", "timestamp": T0}),
        "[1, 2, 3]",
    ]


def expected_requests() -> set[tuple]:
    """(request id, to, step, subject, due at) of every reminder: step 1 an hour, step 2 a
    day after the cart's last activity (``armed``)."""
    subject, after = {1: SUBJECT_1, 2: SUBJECT_2}, {1: HOUR, 2: DAY}

    def reminder(cid: str, name: str, cart_id: str, armed: int, step: int) -> tuple:
        rid = request_id(CAMPAIGN, cid, cart_id, armed, step)
        to = f"{name.lower()}@example.com"
        return rid, to, step, subject[step].format(name), armed + after[step]

    a_armed, c_armed, f1, f2 = T0 + 2 * MINUTE, T0 + MINUTE, T0, T0 + 2 * HOUR
    return {
        reminder("A", "Ann", "cart-A", a_armed, 1),
        reminder("A", "Ann", "cart-A", a_armed, 2),
        reminder("C", "Cy", "cart-C1", c_armed, 1),
        reminder("C", "Cy", "cart-C1", c_armed, 2),
        reminder("F", "Fay", "cart-F", f1, 1),
        reminder("F", "Fay", "cart-F", f2, 1),
        reminder("F", "Fay", "cart-F", f2, 2),
    }


EXPECTED_DLQ = {
    (None, "not_json", "$"),
    ("A", "unknown_event_type", "$.event_type"),
    ("A", "schema_violation", "$.properties.price"),
    (None, "missing_customer_id", "$.customer_id"),
    (None, "not_object", "$"),
}


@pytest.fixture(scope="module", params=[1, 2], ids=["parallelism-1", "parallelism-2"])
def outputs(request):
    return run_bounded(scenario(), request.param, overrides=f.cart_only())


def test_process_mode_is_refused_with_the_setting_named():
    """Process mode has no interpreter in the JVM for the batched operator, and PyFlink's
    per-element operator there cannot emit a DLQ record without a customer id (its tuple
    coder has no null): the job refuses to build instead of failing on such a record."""
    from job.config import ConfigError

    with pytest.raises(ConfigError, match=r"^python\.execution-mode: the job runs in thread"):
        run_bounded(scenario(), 1, flink={"python.execution-mode": "process"})


def request_tuples(outputs) -> set[tuple]:
    from udfs.core.instant import iso_ms

    got = set()
    for key, req in outputs["requests"]:
        assert key == req["customer_id"]
        assert req["trigger_event_time"] == iso_ms(req["metadata"]["due_at_ms"])
        got.add(
            (
                req["request_id"],
                req["to"],
                req["step"],
                req["subject"],
                req["metadata"]["due_at_ms"],
            )
        )
    return got


def test_emits_exactly_the_expected_email_requests(outputs):
    assert request_tuples(outputs) == expected_requests()
    assert len(outputs["requests"]) == len(expected_requests())  # no duplicates


def test_every_bad_input_lands_in_the_dlq_with_its_reason(outputs):
    got = {(key, rec["reason"], rec["path"]) for key, rec in outputs["dlq"]}
    assert got == EXPECTED_DLQ
    assert len(outputs["dlq"]) == len(EXPECTED_DLQ)
    payloads = {rec["payload"] for _, rec in outputs["dlq"]}
    assert "not json at all" in payloads and "[1, 2, 3]" in payloads


def test_outcomes_explain_every_journey(outputs):
    got = sorted(
        (o["kind"], key, o.get("reason"), o.get("step"))
        for key, o in outputs["outcomes"]
        if o["kind"] != "late"
    )
    assert got == sorted(
        [
            ("abandoned", "A", None, None),
            ("sent", "A", None, 1),
            ("sent", "A", None, 2),
            ("completed", "A", None, None),
            ("cancelled", "B", "purchased", 1),
            ("abandoned", "C", None, None),
            ("sent", "C", None, 1),
            ("sent", "C", None, 2),
            ("completed", "C", None, None),
            ("abandoned", "D", None, None),
            ("skipped", "D", "no_email", 1),
            ("skipped", "D", "no_email", 2),
            ("completed", "D", None, None),
            ("cancelled", "E", "unsubscribed", 1),
            ("abandoned", "F", None, None),
            ("sent", "F", None, 1),
            ("abandoned", "F", None, None),
            ("sent", "F", None, 1),
            ("sent", "F", None, 2),
            ("completed", "F", None, None),
            ("cancelled", "G", "cart_emptied", 1),
            ("duplicate", "A", "event id already processed", None),
        ]
    )


def test_requests_match_their_schema_and_escape_product_names(outputs):
    schema = json.loads(EMAIL_REQUEST_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for _, req in outputs["requests"]:
        validator.validate(req)
    (a1,) = [r for _, r in outputs["requests"] if r["customer_id"] == "A" and r["step"] == 1]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Mug" in a1["html"]
    assert "<script>" not in a1["html"]
    assert XSS in a1["text"]
    assert [(i["product_id"], i["quantity"], i["price"]) for i in a1["metadata"]["items"]] == [
        ("p1", 2, 12.5),
        ("p2", 2, 5.0),
    ]  # p2 added twice (two event ids)
    assert a1["metadata"]["cart_value"] == 35.0
    assert "€35.00" in a1["html"] and "€35.00" in a1["text"]
    assert "cart_id=cart-A" in a1["metadata"]["cart_url"]
