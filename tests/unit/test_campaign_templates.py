"""The templates of the campaigns beyond the abandoned cart (browse_abandonment, welcome,
post_purchase), rendered by the real renderer: exact subjects with and without a first
name, the names, prices and totals as the renderer formats them, the "Hi there,"
fallback, images only where the item has a safe one, escaping in HTML, empty item lists
for the welcome steps, and requests that satisfy conf/schemas/email_request.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from udfs.core.render import Renderer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
REQUEST_SCHEMA = json.loads((ROOT / "conf" / "schemas" / "email_request.json").read_text())
REQUEST_VALIDATOR = jsonschema.Draft202012Validator(
    REQUEST_SCHEMA, format_checker=jsonschema.FormatChecker()
)
BASE_URL = "https://shop.example.com/cart"
ARMED_AT = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
DUE_AT = ARMED_AT + 3_600_000
EMITTED_AT = DUE_AT + 1_234

NEW_TEMPLATES = [
    "browse_abandonment_1",
    "welcome_1",
    "welcome_2",
    "post_purchase_1",
    "post_purchase_2",
]
WELCOME = ("welcome_1", "welcome_2")

SHOE = {
    "product_id": "p1",
    "name": "Red <b>Shoe</b>",
    "price": 59.9,
    "quantity": 2,
    "image_url": "https://cdn.example.com/p1.jpg",
    "category": "shoes",
}
LAMP = {
    "product_id": "p2",
    "name": "Desk Lamp",
    "price": 1234.5,
    "quantity": 1,
    "image_url": None,
    "category": "home",
}
SHOE_IMG = '<img src="https://cdn.example.com/p1.jpg" alt="Red &lt;b&gt;Shoe&lt;/b&gt;" width="64"'


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES, BASE_URL)


def trigger(template: str, **overrides: Any) -> dict[str, Any]:
    """A trigger shaped like the one ``udfs.core.journey`` hands to the renderer."""
    campaign, step = template.rsplit("_", 1)
    welcome = template in WELCOME
    items = [dict(SHOE, quantity=1), dict(LAMP)]
    if template == "post_purchase_1":
        items = [dict(SHOE), dict(LAMP)]  # order lines: 2 x 59.90 + 1 x 1,234.50
    result: dict[str, Any] = {
        "request_id": f"req-{template}",
        "campaign": campaign,
        "step": int(step),
        "template": template,
        "customer_id": "c-42",
        "to": "alice@example.com",
        "first_name": "Alice",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "cart_id": None if welcome else "cart-9",
        "items": [] if welcome else items,
        "cart_value": 0 if welcome else sum(i["price"] * i["quantity"] for i in items),
        "currency": "EUR",
        "armed_at": ARMED_AT,
        "due_at": DUE_AT,
        "reason": "test",
    }
    result.update(overrides)
    return result


def link(template: str, *, cart: bool = True) -> str:
    campaign, step = template.rsplit("_", 1)
    first = "cart_id=cart-9" if cart else "customer_id=c-42"
    return (
        f"{BASE_URL}?{first}&utm_source=inboxflow&utm_medium=email"
        f"&utm_campaign={campaign}&utm_content=step{step}"
    )


def test_every_new_template_is_present_and_compiles(renderer: Renderer) -> None:
    assert renderer.missing_templates(NEW_TEMPLATES) == []


SUBJECTS = [
    ("browse_abandonment_1", "Alice, still thinking about these?", "Still thinking about these?"),
    ("welcome_1", "Welcome, Alice! We're glad you're here", "Welcome! We're glad you're here"),
    (
        "welcome_2",
        "Alice, here's what's new, plus 10% off your first order",
        "Here's what's new, plus 10% off your first order",
    ),
    ("post_purchase_1", "Thank you for your order, Alice!", "Thank you for your order!"),
    ("post_purchase_2", "Alice, you might also like these", "You might also like these"),
]


@pytest.mark.parametrize(("template", "named", "anonymous"), SUBJECTS)
def test_subjects(renderer: Renderer, template: str, named: str, anonymous: str) -> None:
    assert renderer.render(trigger(template), EMITTED_AT)["subject"] == named
    for first_name in (None, "", "   "):
        request = renderer.render(trigger(template, first_name=first_name), EMITTED_AT)
        assert request["subject"] == anonymous


def test_subjects_cover_every_new_template() -> None:
    assert [row[0] for row in SUBJECTS] == NEW_TEMPLATES


@pytest.mark.parametrize("template", NEW_TEMPLATES)
@pytest.mark.parametrize("first_name", ["Alice", None])
def test_requests_satisfy_the_email_request_schema(
    renderer: Renderer, template: str, first_name: str | None
) -> None:
    request = renderer.render(trigger(template, first_name=first_name), EMITTED_AT)

    REQUEST_VALIDATOR.validate(request)
    assert request["metadata"]["template"] == template
    assert request["locale"] == "en-GB"
    assert '<html lang="en-GB">' in request["html"]
    # autoescaped: the apostrophe of "We're" / "Here's" becomes &#39;
    title = request["subject"].replace("'", "&#39;")
    assert f"<title>{title}</title>" in request["html"]


@pytest.mark.parametrize("template", NEW_TEMPLATES)
def test_greeting_and_its_fallback(renderer: Renderer, template: str) -> None:
    named = renderer.render(trigger(template), EMITTED_AT)
    anonymous = renderer.render(trigger(template, first_name=None), EMITTED_AT)

    assert named["text"].startswith("Hi Alice,\n\n")
    assert (
        '<p style="margin:0 0 12px 0;font-size:16px;line-height:24px;">Hi Alice,</p>'
        in (named["html"])
    )
    assert anonymous["text"].startswith("Hi there,\n\n")
    assert ">Hi there,</p>" in anonymous["html"]
    assert "Alice" not in anonymous["text"] + anonymous["html"]


@pytest.mark.parametrize("template", NEW_TEMPLATES)
def test_footer_says_why_and_how_to_unsubscribe(renderer: Renderer, template: str) -> None:
    request = renderer.render(trigger(template), EMITTED_AT)

    for body in (request["text"], request["html"]):
        assert "You're receiving this email because you" in body
        assert "in your account's email preferences." in body


def test_browse_abandonment_lists_viewed_products(renderer: Renderer) -> None:
    request = renderer.render(trigger("browse_abandonment_1"), EMITTED_AT)
    text, html = request["text"], request["html"]

    assert "What you looked at:\n- Red <b>Shoe</b>\n  EUR 59.90\n- Desk Lamp\n  EUR 1,234.50\n" in (
        text
    )
    assert f"Continue shopping:\n{link('browse_abandonment_1')}\n" in text
    assert "Still thinking about these?</h1>" in html
    assert SHOE_IMG in html
    assert html.count("<img ") == 1  # the lamp has no image
    assert "\nRed &lt;b&gt;Shoe&lt;/b&gt;\n</td>" in html
    assert "\nDesk Lamp\n</td>" in html
    assert ">EUR 59.90</td>" in html
    assert ">EUR 1,234.50</td>" in html
    assert f'<a href="{link("browse_abandonment_1").replace("&", "&amp;")}"' in html
    assert ">Continue shopping</a>" in html
    # viewed products, not a cart: no quantities, subtotals or total
    assert "Total" not in text + html
    assert " x " not in text
    assert "<b>" not in html


def test_browse_abandonment_drops_unsafe_images(renderer: Renderer) -> None:
    items = [dict(SHOE, quantity=1, image_url="javascript:alert(1)")]
    request = renderer.render(trigger("browse_abandonment_1", items=items), EMITTED_AT)

    assert "<img " not in request["html"]
    assert "javascript" not in request["html"]


@pytest.mark.parametrize("template", WELCOME)
def test_welcome_steps_render_without_items_or_cart(renderer: Renderer, template: str) -> None:
    request = renderer.render(trigger(template), EMITTED_AT)
    text, html = request["text"], request["html"]

    assert request["metadata"]["items"] == []
    assert request["metadata"]["cart_value"] == 0
    assert link(template, cart=False) in text
    assert "EUR" not in text + html
    assert "<img " not in html
    assert "Total" not in text + html


def test_welcome_1(renderer: Renderer) -> None:
    request = renderer.render(trigger("welcome_1"), EMITTED_AT)

    assert "Welcome, and thanks for signing up! Your account is ready." in request["text"]
    assert f"Start shopping:\n{link('welcome_1', cart=False)}\n" in request["text"]
    assert "Welcome!</h1>" in request["html"]
    assert ">Start shopping</a>" in request["html"]
    assert "because you just created an account with us." in request["text"]


def test_welcome_2(renderer: Renderer) -> None:
    request = renderer.render(trigger("welcome_2"), EMITTED_AT)

    assert "- 10% off your first order: our welcome gift to you." in request["text"]
    assert f"Shop now:\n{link('welcome_2', cart=False)}\n" in request["text"]
    assert "Here's what's new</h1>" in request["html"]
    assert ">10% off your first order</p>" in request["html"]
    assert ">Shop now</a>" in request["html"]
    assert "because you created an account with us a few days ago." in request["text"]


def test_post_purchase_1_lists_order_lines_and_total(renderer: Renderer) -> None:
    request = renderer.render(trigger("post_purchase_1"), EMITTED_AT)
    text, html = request["text"], request["html"]

    assert (
        "Your order (3 items):\n"
        "- Red <b>Shoe</b>\n  2 x EUR 59.90 = EUR 119.80\n"
        "- Desk Lamp\n  1 x EUR 1,234.50 = EUR 1,234.50\n"
        "\nTotal: EUR 1,354.30\n"
    ) in text
    assert "Thank you for your order</h1>" in html
    assert SHOE_IMG in html
    assert html.count("<img ") == 1
    assert (
        '<td align="center" style="padding:12px 8px;border-bottom:1px solid #e4e4e7;">2</td>'
        in (html)
    )
    for price in ("EUR 59.90", "EUR 119.80", "EUR 1,234.50"):
        assert f">{price}</td>" in html
    assert ">Total</td>" in html
    assert ">EUR 1,354.30</td>" in html
    assert "<b>" not in html
    assert "It's a service message about your order" in text


def test_post_purchase_1_counts_a_single_item(renderer: Renderer) -> None:
    request = renderer.render(
        trigger("post_purchase_1", items=[dict(LAMP)], cart_value=1234.5), EMITTED_AT
    )

    assert "Your order (1 item):\n- Desk Lamp\n" in request["text"]
    assert "Total: EUR 1,234.50\n" in request["text"]


def test_post_purchase_2_lists_cross_sell_products(renderer: Renderer) -> None:
    request = renderer.render(trigger("post_purchase_2"), EMITTED_AT)
    text, html = request["text"], request["html"]

    assert "Picked for you:\n- Red <b>Shoe</b>\n  EUR 59.90\n- Desk Lamp\n  EUR 1,234.50\n" in (
        text
    )
    assert f"Shop these picks:\n{link('post_purchase_2')}\n" in text
    assert "You might also like</h1>" in html
    assert SHOE_IMG in html
    assert html.count("<img ") == 1
    assert ">EUR 59.90</td>" in html
    assert ">EUR 1,234.50</td>" in html
    assert ">Shop these picks</a>" in html
    assert "Total" not in text + html
    assert "Don't want recommendations like this?" in text


def test_missing_name_falls_back_to_product_id(renderer: Renderer) -> None:
    items = [dict(LAMP, name=None)]
    for template in ("browse_abandonment_1", "post_purchase_1", "post_purchase_2"):
        request = renderer.render(trigger(template, items=items, cart_value=1234.5), EMITTED_AT)
        assert "\n- p2\n" in request["text"]
        assert "\np2\n</td>" in request["html"]


@pytest.mark.parametrize("template", ["browse_abandonment_1", "post_purchase_2"])
def test_suggestions_leave_out_an_unknown_price(renderer: Renderer, template: str) -> None:
    # A viewed product without a price reaches the trigger with price 0.0: "EUR 0.00"
    # would read as "free", so the suggestion templates print no price for it.
    items = [dict(LAMP, price=0.0), dict(SHOE, quantity=1)]
    request = renderer.render(trigger(template, items=items, cart_value=59.9), EMITTED_AT)

    assert "\n- Desk Lamp\n- Red <b>Shoe</b>\n  EUR 59.90\n" in request["text"]
    assert "0.00" not in request["text"] + request["html"]
    assert "white-space:nowrap;\"></td>" in request["html"]
    assert ">EUR 59.90</td>" in request["html"]
