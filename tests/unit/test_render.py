"""Unit tests for udfs.core.render: templates, fallbacks, escaping, sandbox, schema."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from jinja2.sandbox import SecurityError

from tests.factories import EMAIL_REQUEST_SCHEMA, ROOT
from udfs.core.l10n import format_money
from udfs.core.render import Renderer, RenderSettings, TemplateError, _to_cents, cart_url

TEMPLATES = ROOT / "templates"
SCHEMA = json.loads(EMAIL_REQUEST_SCHEMA.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

BASE_URL = "https://shop.example.com/cart"
ARMED_AT = 1767225600000  # 2026-01-01T00:00:00.000Z
DUE_AT = ARMED_AT + 3_600_000  # one hour later
EMITTED_AT = DUE_AT + 1_234
SCRIPT_NAME = "<script>alert(1)</script>"
SHOE_NAME = "Red <b>Shoe</b>"
CART_URL_STEP1 = (
    "https://shop.example.com/cart?cart_id=cart-9&utm_source=inboxflow&utm_medium=email"
    "&utm_campaign=abandoned_cart&utm_content=step1"
)


def make_trigger(step: int = 1, **overrides: object) -> dict:
    trigger = {
        "request_id": "3f2a9c",
        "campaign": "abandoned_cart",
        "step": step,
        "template": f"abandoned_cart_{step}",
        "customer_id": "c-42",
        "to": "alice@example.com",
        "first_name": "Alice",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "cart_id": "cart-9",
        "items": [
            {
                "product_id": "p1",
                "name": SHOE_NAME,
                "price": 59.9,
                "quantity": 2,
                "image_url": "https://cdn.example.com/p1.jpg",
                "category": "shoes",
            }
        ],
        "cart_value": 119.8,
        "currency": "EUR",
        "armed_at": ARMED_AT,
        "due_at": DUE_AT,
        "reason": "cart_abandoned",
    }
    trigger.update(overrides)
    return trigger


def item(
    product_id: str,
    name: str | None,
    price: float,
    quantity: int = 1,
    image_url: str | None = None,
) -> dict:
    return {
        "product_id": product_id,
        "name": name,
        "price": price,
        "quantity": quantity,
        "image_url": image_url,
        "category": None,
    }


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(RenderSettings(TEMPLATES, BASE_URL))


def template_copy(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(TEMPLATES, target)
    return target


# -- subjects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "first_name", "expected"),
    [
        (1, "Alice", "Alice, you left something in your cart"),
        (1, None, "You left something in your cart"),
        (2, "Alice", "Still thinking it over, Alice? Your cart won't wait forever"),
        (2, None, "Still thinking it over? Your cart won't wait forever"),
    ],
)
def test_subject_per_step_with_and_without_first_name(renderer, step, first_name, expected):
    assert (
        renderer.render(make_trigger(step, first_name=first_name), EMITTED_AT)["subject"]
        == expected
    )


def test_subject_collapses_line_breaks_against_header_injection(renderer):
    request = renderer.render(
        make_trigger(first_name="Al\r\nBcc: evil@example.com\u2028\x00"), EMITTED_AT
    )
    assert request["subject"] == "Al Bcc: evil@example.com, you left something in your cart"


def test_subject_is_plain_text_not_html_escaped(renderer):
    request = renderer.render(make_trigger(first_name="Zoë & <Co>"), EMITTED_AT)
    assert request["subject"] == "Zoë & <Co>, you left something in your cart"


# -- bodies: escaping, fallbacks, prices, links -------------------------------------------


def test_html_escapes_untrusted_product_name(renderer):
    request = renderer.render(
        make_trigger(items=[item("p9", SCRIPT_NAME, 5.0)], cart_value=5.0), EMITTED_AT
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in request["html"]
    assert "<script" not in request["html"]
    assert f"- {SCRIPT_NAME}\n" in request["text"]


def test_text_body_keeps_raw_product_name(renderer):
    request = renderer.render(make_trigger(), EMITTED_AT)
    assert f"- {SHOE_NAME}\n  2 x €59.90 = €119.80\n" in request["text"]
    assert "&lt;" not in request["text"]
    assert ">Red &lt;b&gt;Shoe&lt;/b&gt;</a>" in request["html"]
    assert SHOE_NAME not in request["html"]
    assert 'alt="Red &lt;b&gt;Shoe&lt;/b&gt;"' in request["html"]


def test_greeting_and_prices_exact(renderer):
    request = renderer.render(make_trigger(), EMITTED_AT)
    html, text = request["html"], request["text"]
    assert ">Hi Alice,</p>" in html
    assert text.startswith("You left something in your cart\n\nHi Alice,\n")
    assert "white-space: nowrap;\">€59.90</td>" in html
    assert "white-space: nowrap;\">€119.80</td>" in html
    assert (
        '<td colspan="3" align="right" class="sum" style="padding: 12px 8px;font-weight: bold;">'
        "Total</td>" in html
    )
    assert (
        '<td align="right" class="sum sum-last num" style="white-space: nowrap;padding: 12px 0;'
        'font-weight: bold;">€119.80</td>' in html
    )
    assert "\nTotal: €119.80\n" in text
    assert "Your cart (2 items):\n" in text


def test_line_prices_and_total_for_several_items(renderer):
    items = [item("p1", "Socks", 4.5, 3), item("p2", "Hat", 1234.5, 1)]
    request = renderer.render(
        make_trigger(items=items, cart_value=1248.0, currency="usd"), EMITTED_AT
    )
    text = request["text"]
    assert "- Socks\n  3 x $4.50 = $13.50\n" in text
    assert "- Hat\n  1 x $1,234.50 = $1,234.50\n" in text
    assert "\nTotal: $1,248.00\n" in text
    assert request["metadata"]["currency"] == "USD"


def test_format_money_rounds_half_up_on_decimal_value():
    assert format_money(0.125, "EUR", "en") == "€0.13"
    # float 2.675 is 2.67499...; the shown value wins
    assert format_money(2.675, "EUR", "de") == "2,68\xa0€"
    assert format_money(0, "EUR", "en") == "€0.00"
    assert format_money(1_000_000, "JPY", "en") == "¥1,000,000"  # no decimals for yen
    assert format_money(1_000_000.5, "JPY", "de") == "1.000.001\xa0¥"
    with pytest.raises(ValueError, match="finite"):
        _to_cents(float("nan"))


def test_fallbacks_for_missing_name_currency_locale_first_name(renderer):
    trigger = make_trigger(
        first_name=None,
        locale=None,
        currency=None,
        items=[item("sku-77", None, 10.0, 1)],
        cart_value=10.0,
    )
    request = renderer.render(trigger, EMITTED_AT)
    assert "\n\nHi there,\n" in request["text"]
    assert ">Hi there,</p>" in request["html"]
    assert "- sku-77\n  1 x $10.00 = $10.00\n" in request["text"]
    assert request["locale"] == "en"
    assert '<html lang="en">' in request["html"]
    assert request["metadata"]["currency"] == "USD"
    assert request["metadata"]["items"] == [item("sku-77", None, 10.0, 1)]


def test_a_locale_not_supported_by_the_renderer_falls_back_to_english(renderer):
    """This renderer supports English only (RenderSettings' default): de-DE falls back."""
    request = renderer.render(make_trigger(), EMITTED_AT)
    assert request["locale"] == "en"
    assert '<html lang="en">' in request["html"]


def test_cart_url_exact_in_metadata_html_and_text(renderer):
    request = renderer.render(make_trigger(), EMITTED_AT)
    assert request["metadata"]["cart_url"] == CART_URL_STEP1
    assert f'href="{CART_URL_STEP1.replace("&", "&amp;")}"' in request["html"]
    assert ">Return to your cart</a>" in request["html"]
    assert f"Return to your cart:\n{CART_URL_STEP1}\n" in request["text"]


def test_cart_url_encodes_values_and_keeps_existing_query():
    assert cart_url(
        "https://shop.example.com/c?lang=de#top",
        "a b&c=d/é",
        "c-1",
        "abandoned_cart",
        2,
    ) == (
        "https://shop.example.com/c?lang=de&cart_id=a%20b%26c%3Dd%2F%C3%A9&utm_source=inboxflow"
        "&utm_medium=email&utm_campaign=abandoned_cart&utm_content=step2#top"
    )


def test_cart_url_without_cart_id_uses_customer_id():
    assert cart_url(BASE_URL, None, "c+42", "abandoned_cart", 1) == (
        "https://shop.example.com/cart?customer_id=c%2B42&utm_source=inboxflow&utm_medium=email"
        "&utm_campaign=abandoned_cart&utm_content=step1"
    )


def test_cart_url_rejects_non_http_base():
    with pytest.raises(ValueError, match="javascript:alert"):
        cart_url("javascript:alert(1)", "cart-9", "c-42", "abandoned_cart", 1)


def test_image_only_for_http_urls(renderer):
    items = [
        item("p1", "Shown", 1.0, 1, "https://cdn.example.com/a.jpg?x=1&y=2"),
        item("p2", "Script", 1.0, 1, "javascript:alert(1)"),
        item("p3", "Data", 1.0, 1, "data:image/png;base64,AAAA"),
        item("p4", "None", 1.0, 1, None),
    ]
    html = renderer.render(make_trigger(items=items, cart_value=4.0), EMITTED_AT)["html"]
    assert html.count("<img ") == 1
    assert 'src="https://cdn.example.com/a.jpg?x=1&amp;y=2" alt="Shown"' in html
    assert "javascript:" not in html
    assert "data:image" not in html


# -- the request ---------------------------------------------------------------------------


def test_request_fields_and_metadata_exact(renderer):
    trigger = make_trigger()
    request = renderer.render(trigger, EMITTED_AT)
    body = {k: request[k] for k in request if k not in ("subject", "html", "text")}
    assert body == {
        "request_id": "3f2a9c",
        "campaign": "abandoned_cart",
        "step": 1,
        "customer_id": "c-42",
        "to": "alice@example.com",
        "locale": "en",
        "trigger_event_time": "2026-01-01T01:00:00.000Z",
        "emitted_at": "2026-01-01T01:00:01.234Z",
        "metadata": {
            "cart_id": "cart-9",
            "items": trigger["items"],
            "cart_value": 119.8,
            "currency": "EUR",
            "reason": "cart_abandoned",
            "template": "abandoned_cart_1",
            "cart_url": CART_URL_STEP1,
            "armed_at_ms": ARMED_AT,
            "due_at_ms": DUE_AT,
            "list_unsubscribe": (
                "https://shop.example.com/email/unsubscribe?customer=c-42&campaign=abandoned_cart"
            ),
            "list_unsubscribe_post": "List-Unsubscribe=One-Click",
            "recommended": [],
            "recommendations_source": "none",
        },
    }
    assert request["metadata"]["items"][0] is not trigger["items"][0]


@pytest.mark.parametrize(
    "trigger",
    [
        make_trigger(1),
        make_trigger(2),
        make_trigger(1, first_name=None, locale=None, currency=None, cart_id=None),
        make_trigger(2, items=[item("p9", SCRIPT_NAME, 5.0, 1, "javascript:x")], cart_value=5.0),
    ],
    ids=["step1", "step2", "fallbacks", "hostile"],
)
def test_rendered_requests_validate_against_schema(renderer, trigger):
    request = renderer.render(trigger, EMITTED_AT)
    assert list(VALIDATOR.iter_errors(request)) == []
    json.dumps(request)  # serializable as-is for the Kafka sink


@pytest.mark.parametrize(
    ("mutate", "failing_path"),
    [
        (lambda r: r.pop("subject"), "required"),
        (lambda r: r.update(subject="Hi\nBcc: x@example.com"), "subject"),
        (lambda r: r.update(subject=""), "subject"),
        (lambda r: r.update(extra=1), "additionalProperties"),
        (lambda r: r.update(step=0), "step"),
        (lambda r: r.update(to="a@b.c\nBcc: x@y.z"), "to"),
        (lambda r: r.update(emitted_at="2026-01-01T00:00:00Z"), "emitted_at"),
        (lambda r: r["metadata"].pop("cart_url"), "metadata"),
    ],
    ids=[
        "missing-subject",
        "subject-newline",
        "empty-subject",
        "extra-key",
        "step-0",
        "to-newline",
        "emitted-no-ms",
        "metadata-missing-key",
    ],
)
def test_broken_requests_fail_schema(renderer, mutate, failing_path):
    request = renderer.render(make_trigger(), EMITTED_AT)
    mutate(request)
    errors = list(VALIDATOR.iter_errors(request))
    assert errors
    assert any(failing_path in (e.validator, *map(str, e.absolute_path)) for e in errors)


def test_render_is_deterministic_and_does_not_mutate_trigger(renderer):
    trigger = make_trigger(2)
    before = copy.deepcopy(trigger)
    first = renderer.render(trigger, EMITTED_AT)
    assert renderer.render(trigger, EMITTED_AT) == first
    assert (
        Renderer(RenderSettings(TEMPLATES, BASE_URL)).render(copy.deepcopy(trigger), EMITTED_AT)
        == first
    )
    assert trigger == before


def test_invalid_trigger_names_customer_and_request(renderer):
    with pytest.raises(
        TemplateError,
        match=r"customer_id='c-42' request_id='3f2a9c': invalid trigger: to must be",
    ):
        renderer.render(make_trigger(to=None), EMITTED_AT)
    with pytest.raises(TemplateError, match="to is not a plain email address"):
        renderer.render(make_trigger(to="a@b.c\r\nBcc: x@y.z"), EMITTED_AT)


# -- templates on disk -------------------------------------------------------------------------


def test_shipped_templates_are_complete(renderer):
    assert renderer.missing_templates(["abandoned_cart_1", "abandoned_cart_2"]) == []


def test_missing_templates_reports_missing_file(tmp_path, caplog):
    directory = template_copy(tmp_path)
    (directory / "abandoned_cart_2.txt.j2").unlink()
    (directory / "abandoned_cart_1.html.j2").write_text("{% if %}")
    renderer = Renderer(RenderSettings(directory, BASE_URL))
    assert renderer.missing_templates(
        ["abandoned_cart_1", "abandoned_cart_2", "winback_1", "../etc"]
    ) == [
        "../etc",
        "abandoned_cart_1",
        "abandoned_cart_2",
        "winback_1",
    ]
    assert "missing template file abandoned_cart_2.txt.j2" in caplog.text
    assert "syntax error in abandoned_cart_1.html.j2 line 1" in caplog.text
    assert "missing template file winback_1.subject.j2" in caplog.text
    with pytest.raises(TemplateError, match="missing template file abandoned_cart_2.txt.j2"):
        renderer.render(make_trigger(2), EMITTED_AT)


def write_templates(
    directory: Path, name: str, subject: str, html: str = "<p>hi</p>", text: str = "hi"
) -> None:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.subject.j2").write_text(subject)
    (directory / f"{name}.html.j2").write_text(html)
    (directory / f"{name}.txt.j2").write_text(text)


@pytest.mark.parametrize(
    ("subject", "html"),
    [
        ("{{ ''.__class__.__mro__ }}", "<p>hi</p>"),
        ("ok", "{{ cart_url.__class__.__subclasses__() }}"),
        (
            "ok",
            "{{ items.append(1) }}",
        ),  # the immutable sandbox: no mutating the context
    ],
    ids=["mro", "subclasses", "mutation"],
)
def test_sandbox_blocks_escape(tmp_path, subject, html):
    write_templates(tmp_path / "t", "evil_1", subject, html)
    renderer = Renderer(RenderSettings(tmp_path / "t", BASE_URL))
    with pytest.raises(TemplateError, match="sandbox violation") as info:
        renderer.render(make_trigger(template="evil_1"), EMITTED_AT)
    assert isinstance(info.value.__cause__, SecurityError)


def test_undefined_variable_and_none_fail_loudly(tmp_path):
    write_templates(tmp_path / "t", "typo_1", "Hi {{ frist_name }}")
    write_templates(tmp_path / "t", "none_1", "ok", text="{{ items[0].category }}")
    renderer = Renderer(RenderSettings(tmp_path / "t", BASE_URL))
    with pytest.raises(TemplateError, match="'frist_name' is undefined"):
        renderer.render(make_trigger(template="typo_1"), EMITTED_AT)
    with pytest.raises(TemplateError, match="template printed a None value"):
        renderer.render(
            make_trigger(template="none_1", items=[item("p1", "x", 1.0)], cart_value=1.0),
            EMITTED_AT,
        )


def test_empty_subject_is_an_error(tmp_path):
    write_templates(tmp_path / "t", "blank_1", "  \n ")
    with pytest.raises(TemplateError, match="subject rendered empty"):
        Renderer(RenderSettings(tmp_path / "t", BASE_URL)).render(
            make_trigger(template="blank_1"), EMITTED_AT
        )
