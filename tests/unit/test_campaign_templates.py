"""The templates of the campaigns beyond the abandoned cart (browse_abandonment, welcome,
post_purchase), rendered by the real renderer in English: exact subjects with and without
a first name, the names, prices and totals as the renderer formats them, the "Hi there,"
fallback, images only where the item has a safe one, escaping in HTML, empty item lists
for the welcome steps, and requests that satisfy conf/schemas/email_request.json.
Both languages, dates, plurals and recommendations: tests/unit/test_templates_i18n.py."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from udfs.core.render import Renderer, RenderSettings

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
SHOE_IMG = {
    "src": "https://cdn.example.com/p1.jpg",
    "alt": "Red <b>Shoe</b>",
    "width": "64",
    "height": "64",
    "class": "thumb",
}
SHOE_TEXT = ">Red &lt;b&gt;Shoe&lt;/b&gt;</a>"  # escaped, in its product link


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(RenderSettings(TEMPLATES, BASE_URL))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {key: value for key, value in attrs if key != "style"}))


def tags(html: str, name: str) -> list[dict[str, str | None]]:
    """The attributes (style left out: the CSS inliner writes it) of every ``<name>``."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return [attrs for tag, attrs in parser.tags if tag == name]


def product(template: str, product_id: str) -> str:
    campaign, step = template.rsplit("_", 1)
    return (
        f"https://shop.example.com/products/{product_id}?utm_source=inboxflow&utm_medium=email"
        f"&utm_campaign={campaign}&utm_content=step{step}"
    )


def unsubscribe(template: str) -> str:
    campaign = template.rsplit("_", 1)[0]
    return f"https://shop.example.com/email/unsubscribe?customer=c-42&campaign={campaign}"


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
    ("welcome_2", "Alice, here's what's new in our shop", "Here's what's new in our shop"),
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
    assert request["locale"] == "en"  # en-GB: written in English
    assert '<html lang="en">' in request["html"]
    # autoescaped: the apostrophe of "We're" / "Here's" becomes &#39; (or stays, as the
    # CSS inliner writes it: both mean the same)
    title = request["subject"].replace("'", "&#39;")
    assert f"<title>{title}</title>" in request["html"] or (
        f"<title>{request['subject']}</title>" in request["html"]
    )


@pytest.mark.parametrize("template", NEW_TEMPLATES)
def test_greeting_and_its_fallback(renderer: Renderer, template: str) -> None:
    named = renderer.render(trigger(template), EMITTED_AT)
    anonymous = renderer.render(trigger(template, first_name=None), EMITTED_AT)

    # the text part starts with the heading of the HTML part, then the greeting
    heading = named["text"].split("\n", 1)[0]
    assert f">{heading}</h1>" in named["html"].replace("&#39;", "'")
    assert named["text"].startswith(f"{heading}\n\nHi Alice,\n\n")
    assert ">Hi Alice,</p>" in named["html"]
    assert anonymous["text"].startswith(f"{heading}\n\nHi there,\n\n")
    assert ">Hi there,</p>" in anonymous["html"]
    assert "Alice" not in anonymous["text"] + anonymous["html"]


@pytest.mark.parametrize("template", NEW_TEMPLATES)
def test_footer_says_why_and_how_to_unsubscribe(renderer: Renderer, template: str) -> None:
    request = renderer.render(trigger(template), EMITTED_AT)
    html = request["html"].replace("&#39;", "'")

    for body in (request["text"], html):
        assert "You're receiving this email because you" in body
        assert "unsubscribe" in body
        assert "at any time with the link below." in body
    assert request["text"].endswith(f"\n\nUnsubscribe: {unsubscribe(template)}")
    assert {"href": unsubscribe(template), "class": "footer-link"} in tags(html, "a")
    assert ">Unsubscribe</a>" in html


def test_browse_abandonment_lists_viewed_products(renderer: Renderer) -> None:
    request = renderer.render(trigger("browse_abandonment_1"), EMITTED_AT)
    text, html = request["text"], request["html"]
    template = "browse_abandonment_1"

    assert (
        "What you looked at:\n"
        f"- Red <b>Shoe</b>\n  €59.90\n  {product(template, 'p1')}\n"
        f"- Desk Lamp\n  €1,234.50\n  {product(template, 'p2')}\n"
    ) in text
    assert f"Continue shopping:\n{link(template)}\n" in text
    assert "Still thinking about these?</h1>" in html
    assert tags(html, "img") == [SHOE_IMG]  # the lamp has no image
    assert SHOE_TEXT in html
    assert ">Desk Lamp</a>" in html
    assert ">€59.90</td>" in html
    assert ">€1,234.50</td>" in html
    assert {"href": link(template), "class": "button"} in tags(html, "a")
    assert {"href": product(template, "p1"), "class": "product-link"} in tags(html, "a")
    assert ">Continue shopping</a>" in html
    # viewed products, not a cart: no quantities, subtotals or total
    assert "Total" not in text + html
    assert " x " not in text
    assert tags(html, "b") == []


def test_browse_abandonment_drops_unsafe_images(renderer: Renderer) -> None:
    items = [dict(SHOE, quantity=1, image_url="javascript:alert(1)")]
    request = renderer.render(trigger("browse_abandonment_1", items=items), EMITTED_AT)

    assert tags(request["html"], "img") == []
    assert "javascript" not in request["html"]


@pytest.mark.parametrize("template", WELCOME)
def test_welcome_steps_render_without_items_or_cart(renderer: Renderer, template: str) -> None:
    request = renderer.render(trigger(template), EMITTED_AT)
    text, html = request["text"], request["html"]

    assert request["metadata"]["items"] == []
    assert request["metadata"]["cart_value"] == 0
    assert link(template, cart=False) in text
    assert "€" not in text + html
    assert tags(html, "img") == []
    assert "Total" not in text + html


def test_welcome_1(renderer: Renderer) -> None:
    request = renderer.render(trigger("welcome_1"), EMITTED_AT)
    html = request["html"].replace("&#39;", "'")

    assert "Welcome, and thanks for signing up! Your account is ready." in request["text"]
    assert (
        "Here's what you can look forward to:\n- Your cart, everywhere. Your cart is saved"
    ) in request["text"]
    assert f"Start shopping:\n{link('welcome_1', cart=False)}\n" in request["text"]
    assert "Welcome!</h1>" in html
    assert "<strong>First to know.</strong>" in html
    assert ">Start shopping</a>" in html
    assert "because you just created an account with us." in request["text"]


def test_welcome_2_is_honest(renderer: Renderer) -> None:
    # It promised "10% off your first order" without any code or mechanism behind it: it
    # now shows what is new, what the account does, and recommendations when there are any.
    request = renderer.render(trigger("welcome_2"), EMITTED_AT)
    text, html = request["text"], request["html"].replace("&#39;", "'")

    for body in (request["subject"], text, html):
        assert "10%" not in body
        assert "% off" not in body
        assert "discount" not in body.lower()
        assert "welcome gift" not in body.lower()
    assert "\n- New arrivals. Fresh products land every week" in text
    assert "\n- Customer favourites. See what other shoppers love most right now.\n" in text
    assert f"Shop now:\n{link('welcome_2', cart=False)}\n" in text
    assert "Here's what's new</h1>" in html
    assert ">Shop now</a>" in html
    assert "because you created an account with us a few days ago." in text


def test_post_purchase_1_lists_order_lines_and_total(renderer: Renderer) -> None:
    request = renderer.render(trigger("post_purchase_1"), EMITTED_AT)
    text, html = request["text"], request["html"]
    template = "post_purchase_1"

    assert (
        "Your order (3 items):\n"
        f"- Red <b>Shoe</b>\n  2 x €59.90 = €119.80\n  {product(template, 'p1')}\n"
        f"- Desk Lamp\n  1 x €1,234.50 = €1,234.50\n  {product(template, 'p2')}\n"
        "\nTotal: €1,354.30\n"
    ) in text
    assert "Thank you for your order</h1>" in html
    assert ">Your order (3 items)</p>" in html
    assert tags(html, "img") == [SHOE_IMG]
    assert SHOE_TEXT in html
    assert {"align": "center", "class": "cell"} in tags(html, "td")
    assert ">2</td>" in html
    for price in ("€59.90", "€119.80", "€1,234.50"):
        assert f">{price}</td>" in html
    assert ">Total</td>" in html
    assert ">€1,354.30</td>" in html
    assert tags(html, "b") == []
    assert "It's a service message about your order" in text


def test_post_purchase_1_counts_a_single_item(renderer: Renderer) -> None:
    request = renderer.render(
        trigger("post_purchase_1", items=[dict(LAMP)], cart_value=1234.5), EMITTED_AT
    )

    assert "Your order (1 item):\n- Desk Lamp\n" in request["text"]
    assert "Total: €1,234.50\n" in request["text"]


def test_post_purchase_2_lists_cross_sell_products(renderer: Renderer) -> None:
    request = renderer.render(trigger("post_purchase_2"), EMITTED_AT)
    text, html = request["text"], request["html"]
    template = "post_purchase_2"

    assert (
        "Picked for you:\n"
        f"- Red <b>Shoe</b>\n  €59.90\n  {product(template, 'p1')}\n"
        f"- Desk Lamp\n  €1,234.50\n  {product(template, 'p2')}\n"
    ) in text
    assert f"Shop these picks:\n{link(template)}\n" in text
    assert "You might also like</h1>" in html
    assert tags(html, "img") == [SHOE_IMG]
    assert ">€59.90</td>" in html
    assert ">€1,234.50</td>" in html
    assert ">Shop these picks</a>" in html
    assert "Total" not in text + html
    assert "Don't want recommendations like this?" in text


def test_missing_name_falls_back_to_product_id(renderer: Renderer) -> None:
    items = [dict(LAMP, name=None)]
    for template in ("browse_abandonment_1", "post_purchase_1", "post_purchase_2"):
        request = renderer.render(trigger(template, items=items, cart_value=1234.5), EMITTED_AT)
        assert "\n- p2\n" in request["text"]
        assert ">p2</a>" in request["html"]


@pytest.mark.parametrize("template", ["browse_abandonment_1", "post_purchase_2"])
def test_suggestions_leave_out_an_unknown_price(renderer: Renderer, template: str) -> None:
    # A viewed product whose price was never known reaches the trigger with price None:
    # "€0.00" would read as "free", so the email prints no price for it.
    items = [dict(LAMP, price=None), dict(SHOE, quantity=1)]
    request = renderer.render(trigger(template, items=items, cart_value=59.9), EMITTED_AT)

    assert (
        f"\n- Desk Lamp\n  {product(template, 'p2')}\n- Red <b>Shoe</b>\n  €59.90\n"
        in (request["text"])
    )
    assert "0.00" not in request["text"] + request["html"]
    assert ">€59.90</td>" in request["html"]
