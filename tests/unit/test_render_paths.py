"""The renderer's shortcuts against what they replace (issue 13).

``Renderer`` renders the way Jinja2 documents it, with three shortcuts: an item field is
read without the sandbox's safety checks (which it passes), the template variables are
merged into the globals once per email and the context is built on that dict, and the
templates' globals are a plain dict instead of a ChainMap of the environment's. Around
the templates: regex searches instead of per-character loops, the cart url's frame split
once per base url, a unit price formatted without rounding it again. These tests hold
each to what it replaces: the same request, or the same error, for every input.
"""

from __future__ import annotations

import copy
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests import fuzzing as fz
from tests.factories import ROOT
from tests.unit.test_render import make_trigger
from udfs.core import render as r
from udfs.core.l10n import format_money
from udfs.core.render import ItemView, Renderer, RenderSettings

TEMPLATES = ROOT / "templates"
PRODUCT_URL = "https://shop.example.com/products/{product_id}"
BASE_URL = "https://shop.example.com/cart"
EMITTED_AT = 1767229200000

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALL_CHARACTERS = "".join(map(chr, range(sys.maxunicode + 1)))


# --- character classes ------------------------------------------------------------------


def test_whitespace_regex_is_str_isspace_for_every_code_point() -> None:
    found = r._WHITESPACE.findall(ALL_CHARACTERS)
    assert found == [ch for ch in ALL_CHARACTERS if ch.isspace()]


def test_address_regex_is_the_former_character_test_for_every_code_point() -> None:
    found = r._NOT_IN_ADDRESS.findall(ALL_CHARACTERS)
    assert found == [ch for ch in ALL_CHARACTERS if ch.isspace() or ch == "\ufeff" or ord(ch) < 32]


# --- cart url -----------------------------------------------------------------------------


def reference_cart_url(
    base_url: str, cart_id: str | None, customer_id: str, campaign: str, step: int
) -> str:
    """``cart_url`` before issue 13."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"link base must be an absolute http(s) url, got {base_url!r}")
    params: list[tuple[str, str]] = []
    if cart_id:
        params.append(("cart_id", cart_id))
    else:
        params.append(("customer_id", customer_id))
    params += [
        ("utm_source", r.UTM_SOURCE),
        ("utm_medium", "email"),
        ("utm_campaign", campaign),
        ("utm_content", f"step{step}"),
    ]
    query = urlencode(params, quote_via=quote, safe="")
    if parts.query:
        query = f"{parts.query}&{query}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except Exception as exc:  # noqa: BLE001 - the error is part of the result compared
        cause = exc.__cause__
        return ("error", type(exc).__name__, str(exc), type(cause).__name__, str(cause))


BASE_URLS = (
    BASE_URL,
    "https://shop.example.com",
    "http://shop.example.com/",
    "https://shop.example.com/cart?ref=mail",
    "https://shop.example.com/cart?ref=mail#top",
    "https://shop.example.com/cart#top",
    "https://shop.example.com/c%20art/?a=1&b=2",
    "https://user:pw@shop.example.com:8443/cart;params?x=%2F",
    "https://shop.example.com?",
    "https://shop.example.com/cart?#",
    "HTTPS://Shop.Example.com/Cart",
    " https://shop.example.com/cart\t",
    "javascript:alert(1)",
    "/cart",
    "ftp://shop.example.com/cart",
    "https:///cart",
)


@st.composite
def st_text(draw: Any) -> str:
    return fz.hostile_text(fz.HypothesisDraw(draw), 64)


@SETTINGS
@given(
    base_url=st.sampled_from(BASE_URLS) | st.text(max_size=40).map(lambda s: BASE_URL + s),
    cart_id=st.none() | st_text(),
    customer_id=st_text(),
    campaign=st_text(),
    step=st.integers(-3, 10**20),
)
def test_cart_url_equals_the_urlencode_version(
    base_url: str, cart_id: str | None, customer_id: str, campaign: str, step: int
) -> None:
    args = (base_url, cart_id, customer_id, campaign, step)
    assert outcome(r.cart_url, *args) == outcome(reference_cart_url, *args)


# --- unit price -----------------------------------------------------------------------------


@SETTINGS
@given(
    price=st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**30), 10**30)
    | st.decimals(allow_nan=False, allow_infinity=False),
    currency=st.sampled_from(("EUR", "USD", "JPY", "XYZ", "jpy")),
    locale=st.sampled_from(("en", "de")),
)
def test_a_rounded_unit_price_formats_as_babel_formats_the_rounded_price(
    price: float | int | Decimal, currency: str, locale: str
) -> None:
    item = {"product_id": "p", "quantity": 1, "price": price}
    expected = outcome(lambda p, c: format_money(r._to_cents(p), c, locale), price, currency)
    got = outcome(r._item_view, item, currency, locale, PRODUCT_URL, "c", 1)
    if got[0] == "ok":
        assert ("ok", got[1].unit_price) == expected
    else:
        assert got == expected


# --- the renderer against Jinja2's documented path ----------------------------------------


class StockRenderer(Renderer):
    """The renderer with Jinja2 as documented: the immutable sandbox as it ships, each
    template rendered with ``Template.render`` (which merges the globals into a new dict
    and builds its own context), the templates' globals the ChainMap Jinja2 made."""

    def _environment(self, locale: str) -> Any:
        ours = super()._environment(locale)
        env = ImmutableSandboxedEnvironment(
            loader=ours.loader,
            autoescape=ours.autoescape,
            undefined=ours.undefined,
            finalize=ours.finalize,
            trim_blocks=ours.trim_blocks,
            lstrip_blocks=ours.lstrip_blocks,
            auto_reload=False,
            extensions=["jinja2.ext.i18n"],
        )
        env.install_gettext_translations(  # type: ignore[attr-defined]
            r.load_translations(self.template_dir, locale), newstyle=True
        )
        return env

    def _templates(self, name: str, locale: str) -> Any:
        templates = super()._templates(name, locale)
        for template in (templates.subject, templates.html, templates.text):
            template.globals = self._envs[locale].make_globals(None)
        return templates

    def _render(self, locale: str, template: jinja2.Template, variables: dict[str, Any]) -> str:
        return template.render(variables)


@pytest.fixture(scope="module")
def renderers() -> tuple[Renderer, Renderer]:
    # both languages: the German renders go through the translations (and our gettext)
    settings = RenderSettings(TEMPLATES, BASE_URL, locales=("en", "de"))
    return Renderer(settings), StockRenderer(settings)


def test_the_stock_renderer_really_is_stock() -> None:
    stock = StockRenderer(RenderSettings(TEMPLATES, BASE_URL))
    assert type(stock._envs["en"]) is ImmutableSandboxedEnvironment
    templates = stock._templates("abandoned_cart_1", "en")
    assert type(templates.html.globals) is not dict
    ours = Renderer(RenderSettings(TEMPLATES, BASE_URL))._templates("abandoned_cart_1", "en")
    assert type(ours.html.globals) is dict
    # the same names; the gettext functions are built per environment
    assert dict(ours.html.globals).keys() == dict(templates.html.globals).keys()


def assert_same(renderers: tuple[Renderer, Renderer], trigger: dict[str, Any]) -> Any:
    ours, stock = renderers
    got = outcome(ours.render, copy.deepcopy(trigger), EMITTED_AT)
    assert got == outcome(stock.render, copy.deepcopy(trigger), EMITTED_AT)
    return got


def base_trigger(step: int = 1) -> dict[str, Any]:
    """tests/unit/test_render.py's trigger without a time zone."""
    trigger = make_trigger(step)
    del trigger["timezone"]
    return trigger


ODD_VALUES: tuple[Any, ...] = (None, "", " ", 0, -1, 2.5, True, [], {}, "x" * 300, 10**30)


@st.composite
def st_trigger(draw: Any) -> dict[str, Any]:
    """A trigger with hostile text, odd values and image urls in its fields and items."""
    d = fz.HypothesisDraw(draw)
    trigger = base_trigger(draw(st.sampled_from((1, 2))))

    def text() -> Any:
        # mostly text that renders, hostile as it may be; now and then an odd value
        return draw(st.sampled_from(ODD_VALUES)) if d.chance(10) else draw(st_text())

    for key in ("first_name", "locale", "currency", "cart_id", "customer_id", "campaign"):
        if d.chance(40):
            trigger[key] = text()
    if d.chance(10):
        trigger["to"] = draw(st.sampled_from(fz.BAD_EMAILS) | st_text())
    items = []
    for _ in range(draw(st.integers(0, 4))):
        item: dict[str, Any] = {
            "product_id": draw(st.sampled_from(fz.PRODUCTS) | st_text()),
            "quantity": draw(st.integers(1, 10**6))
            if d.chance(90)
            else draw(st.integers(-1, 0) | st.sampled_from(ODD_VALUES)),
            "price": draw(st.floats(-1e12, 1e12) | st.integers(0, 10**12))
            if d.chance(90)
            else draw(st.sampled_from((0.125, -0.0, 2.675, 10**25, float("nan"), "1.5", None))),
        }
        for key in ("name", "category"):
            if d.chance(70):
                item[key] = text()
        if d.chance(70):
            item["image_url"] = draw(
                st.sampled_from(
                    (
                        "https://cdn.example.com/a.jpg",
                        "HTTP://cdn.example.com/a b.jpg",
                        " https://cdn.example.com/x\u2028y ",
                        "https://",
                        "javascript:alert(1)",
                        'https://cdn.example.com/"><script>',
                    )
                )
                | st_text().map(lambda s: "https://" + s)
            )
        items.append(item)
    trigger["items"] = items
    if d.chance(50):  # recommendations of any shape: a bad one is left out, never fatal
        trigger["recommendations"] = [
            {
                "product_id": draw(st.sampled_from(fz.PRODUCTS) | st_text()),
                "name": text(),
                "price": draw(st.none() | st.floats(0, 1e6) | st.sampled_from(ODD_VALUES)),
                "currency": draw(st.sampled_from(("EUR", "usd", "XYZ", None)) | st_text()),
                "image_url": text(),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
        trigger["recommendations_source"] = draw(st.sampled_from(("personal", "fallback", None)))
    trigger["cart_value"] = (
        draw(st.floats(0, 1e9)) if d.chance(95) else draw(st.sampled_from(ODD_VALUES))
    )
    return trigger


@SETTINGS
@given(trigger=st_trigger())
def test_renderer_equals_the_stock_renderer_on_fuzzed_triggers(
    renderers: tuple[Renderer, Renderer], trigger: dict[str, Any]
) -> None:
    assert_same(renderers, trigger)


def test_renderer_equals_the_stock_renderer_on_the_shipped_templates(
    renderers: tuple[Renderer, Renderer],
) -> None:
    for step in (1, 2):
        for first_name in ("Alice", None, "  ", "<i>Ann</i>\r\nBcc: x"):
            trigger = base_trigger(step)
            trigger["first_name"] = first_name
            trigger["items"] = trigger["items"] * 3 + [
                {"product_id": "p2", "quantity": 1, "price": 0.125, "image_url": "data:x"}
            ]
            assert assert_same(renderers, trigger)[0] == "ok"


# Templates that touch what the shortcuts touch: item fields and other attributes of an
# item, the globals, the variables of the context.
HOSTILE_TEMPLATES = (
    "{% for item in items %}{{ item.name }}|{{ item.image_url }}|{{ item.category }}"
    "|{{ item.quantity }}|{{ item.product_id }}|{{ item.unit_price }}{% endfor %}",
    "{{ items[0].__class__ }}",
    "{{ items[0].__slots__ }}",
    "{{ items[0]._secret }}",
    "{{ items[0].missing }}",
    "{{ items[0]['name'] }}",
    "{{ items[0]['__class__'] }}",
    "{{ items[0].name.__class__.__mro__ }}",
    "{{ items[0].name.format(1) }}",
    "{{ items[0].name.upper() }}",
    "{{ items[0].__repr__() }}",
    "{{ items[0] }}",
    "{{ items[0].category }}",
    "{{ items[0].quantity + items[0].quantity }}",
    "{{ range(3) | list }}|{{ dict(a=1) }}|{{ namespace(a=1).a }}",
    "{{ lipsum(n=1, html=False) | length > 0 }}",
    "{% set subject = 'mine' %}{{ subject }}",
    "{% set first_name = 'x' %}{{ first_name }}",
    "{{ items.append(1) }}",
    "{{ cycler('a', 'b').next() }}{{ joiner()() }}",
    "{{ self }}",
    "{{ undefined_name }}",
    "{{ None }}",
)


@pytest.mark.parametrize("body", HOSTILE_TEMPLATES)
@pytest.mark.parametrize("where", ["subject", "html", "text"])
def test_renderer_equals_the_stock_renderer_on_hostile_templates(
    tmp_path: Path, body: str, where: str
) -> None:
    parts = {"subject": "Hi {{ first_name }}", "html": "<p>{{ subject }}</p>", "text": "t"}
    parts[where] = body + ("" if where == "subject" else " {{ subject }}")
    directory = tmp_path / "t"
    directory.mkdir()
    (directory / "x_1.subject.j2").write_text(parts["subject"])
    (directory / "x_1.html.j2").write_text(parts["html"])
    (directory / "x_1.txt.j2").write_text(parts["text"])
    trigger = base_trigger()
    trigger["template"] = "x_1"
    trigger["items"].append({"product_id": "p2", "quantity": 1, "price": 1.0})
    assert_same(
        (
            Renderer(RenderSettings(directory, BASE_URL)),
            StockRenderer(RenderSettings(directory, BASE_URL)),
        ),
        trigger,
    )


def test_item_fields_are_what_the_shortcut_covers() -> None:
    assert r._ITEM_FIELDS == frozenset(ItemView.__slots__)
    assert not any(name.startswith("_") for name in r._ITEM_FIELDS)


def test_variables_are_not_changed_by_rendering(renderers: tuple[Renderer, Renderer]) -> None:
    ours, _ = renderers
    context, _ = ours._context(base_trigger())
    locale = context["locale"]
    variables = {**ours._globals[locale], **context, "subject": "Hi"}
    before = dict(variables)
    templates = ours._templates("abandoned_cart_1", locale)
    for template in (templates.subject, templates.html, templates.text):
        ours._render(locale, template, variables)
    assert variables == before
