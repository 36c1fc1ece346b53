"""The campaign templates in English and German, rendered by the real renderer (issue 15):
money, numbers and dates formatted by Babel for the locale and the customer's time zone,
pluralized item counts, greetings with and without a first name, the recommendations
block (personal, bestsellers, absent), no image tag for an item without image, the
unsubscribe link in both parts, ``<html lang>``, locale fallbacks, and no English string
left in a German email.

The German catalog (templates/locale/de/LC_MESSAGES/messages.po) is checked against a
fresh extraction from the templates with Babel (templates/babel.cfg): a translatable
string added to a template without a translation fails here, not in a customer's inbox.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from udfs.core.render import Renderer, RenderSettings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
CATALOG = TEMPLATES / "locale" / "de" / "LC_MESSAGES" / "messages.po"
POT = TEMPLATES / "locale" / "messages.pot"
BASE_URL = "https://shop.example.com/cart"
UNSUBSCRIBE = "https://shop.example.com/unsubscribe?c={customer_id}&k={campaign}"
# 2026-12-01T23:30:00Z: still December 1 in New York, already December 2 in Berlin.
ARMED_AT = 1_796_167_800_000
DUE_AT = ARMED_AT + 3_600_000
NBSP = "\xa0"

STEPS = [
    "abandoned_cart_1",
    "abandoned_cart_2",
    "browse_abandonment_1",
    "welcome_1",
    "welcome_2",
    "post_purchase_1",
    "post_purchase_2",
]
CART = ("abandoned_cart_1", "abandoned_cart_2")
COUNTED = (*CART, "post_purchase_1")
WITHOUT_ITEMS = ("welcome_1", "welcome_2")
# The steps that show the recommendations block (post_purchase_2: when it has no
# cross-sell items of its own); transactional steps (welcome_1, post_purchase_1) never.
RECOMMENDING = ("abandoned_cart_2", "browse_abandonment_1", "welcome_2")

HEADPHONES = {
    "product_id": "hp-1",
    "name": "Studio Headphones",
    "price": 111.99,
    "quantity": 1,
    "image_url": "https://cdn.example.com/hp-1.jpg",
    "category": "audio",
}
CABLE = {
    "product_id": "cb-2",
    "name": "Cable",
    "price": 5.5,
    "quantity": 2,
    "image_url": None,
    "category": None,
}
PICK = {
    "product_id": "rc-1",
    "name": "Travel Case",
    "price": 24.0,
    "currency": "EUR",
    "image_url": "https://cdn.example.com/rc-1.jpg",
    "category": "audio",
}
UNPRICED_PICK = {
    "product_id": "rc-2",
    "name": "Mystery Box",
    "price": None,
    "image_url": None,
}

GREETINGS = {
    "en": ("Hi Anna,", "Hi there,"),
    "de": ("Hallo Anna,", "Hallo,"),
}
UNSUBSCRIBE_LABEL = {"en": "Unsubscribe", "de": "Abmelden"}
HEADINGS = {
    "en": ("Picked for you", "Our bestsellers"),
    "de": ("Für dich ausgewählt", "Unsere Bestseller"),
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(
        RenderSettings(
            TEMPLATES,
            BASE_URL,
            unsubscribe_url=UNSUBSCRIBE,
            locales=("en", "de"),
            default_locale="en",
            default_timezone="UTC",
        )
    )


def trigger(template: str, locale: str, **overrides: Any) -> dict[str, Any]:
    """A trigger shaped like the one ``udfs.core.journey`` hands to the renderer: the
    headphones alone (1 item, 111.99), in Berlin for German and New York for English."""
    campaign, step = template.rsplit("_", 1)
    items = [] if template in WITHOUT_ITEMS else [dict(HEADPHONES)]
    result: dict[str, Any] = {
        "request_id": f"req-{template}-{locale}",
        "campaign": campaign,
        "step": int(step),
        "template": template,
        "customer_id": "c-42",
        "to": "anna@example.com",
        "first_name": "Anna",
        "locale": locale,
        "timezone": "Europe/Berlin" if locale.startswith("de") else "America/New_York",
        "cart_id": None if template in WITHOUT_ITEMS else "cart-9",
        "items": items,
        "cart_value": sum(i["price"] * i["quantity"] for i in items),
        "currency": "EUR",
        "armed_at": ARMED_AT,
        "due_at": DUE_AT,
        "reason": "test",
        "recommendations": [dict(PICK), dict(UNPRICED_PICK)],
        "recommendations_source": "personal",
    }
    result.update(overrides)
    return result


def render(renderer: Renderer, template: str, locale: str, **overrides: Any) -> dict[str, Any]:
    """The email request, its HTML with ``&nbsp;`` (how the CSS inliner writes the no-break
    space of German money) as the character itself."""
    request = renderer.render(trigger(template, locale, **overrides), DUE_AT + 1_000)
    return {**request, "html": request["html"].replace("&nbsp;", NBSP)}


def collapse(text: str) -> str:
    """White space runs as one space; a no-break space stays what it is."""
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str, name: str) -> list[dict[str, str | None]]:
    """The attributes of every ``<name>`` element of the document (entities decoded)."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return [attrs for tag, attrs in parser.tags if tag == name]


def visible(html: str) -> str:
    """The document's text without tags, entities decoded, white space collapsed."""
    parser = HTMLParser(convert_charrefs=True)
    chunks: list[str] = []
    parser.handle_data = chunks.append  # type: ignore[method-assign]
    parser.feed(html)
    parser.close()
    return collapse(" ".join(chunks))


def bodies(request: dict[str, Any]) -> tuple[str, str]:
    """(text part, visible text of the HTML part), white space collapsed."""
    return collapse(request["text"]), visible(request["html"])


# -- every step in both languages -----------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", STEPS)
def test_every_step_renders_in_both_languages(
    renderer: Renderer, template: str, locale: str
) -> None:
    request = render(renderer, template, locale)

    assert request["locale"] == locale
    assert request["subject"] and "\n" not in request["subject"]
    assert f'<html lang="{locale}">' in request["html"]
    assert "<title>" in request["html"]
    assert not tags(request["html"], "script")
    assert not tags(request["html"], "link")
    # the text part says everything the HTML says, links spelled out
    text, html = bodies(request)
    for line in request["text"].splitlines():
        if not line.strip() or line.strip().startswith(("http", "--")):
            continue
        # "Total: €1.00", "  2 x €1.00 = €2.00", "- Cable": each piece is in the HTML
        for piece in re.split(r":\s| x | = ", line.strip().removeprefix("- ")):
            if not piece.startswith("http"):
                assert piece.strip().rstrip(":") in html, line
    assert text
    for link in tags(request["html"], "a"):
        assert link["href"] in request["text"]


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", STEPS)
def test_greeting_with_and_without_first_name(
    renderer: Renderer, template: str, locale: str
) -> None:
    named_greeting, anonymous_greeting = GREETINGS[locale]
    named = render(renderer, template, locale)
    anonymous = render(renderer, template, locale, first_name=None)

    assert f"\n\n{named_greeting}\n\n" in named["text"]
    assert f">{named_greeting}</p>" in named["html"]
    assert "Anna" in named["subject"]
    assert f"\n\n{anonymous_greeting}\n\n" in anonymous["text"]
    assert f">{anonymous_greeting}</p>" in anonymous["html"]
    assert "Anna" not in anonymous["subject"] + anonymous["text"] + anonymous["html"]
    assert anonymous["subject"][0].isupper()


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", STEPS)
def test_unsubscribe_link_in_html_and_text(renderer: Renderer, template: str, locale: str) -> None:
    request = render(renderer, template, locale)
    campaign = template.rsplit("_", 1)[0]
    url = f"https://shop.example.com/unsubscribe?c=c-42&k={campaign}"
    label = UNSUBSCRIBE_LABEL[locale]

    assert request["text"].endswith(f"\n{label}: {url}")
    assert any(a["href"] == url for a in tags(request["html"], "a"))
    assert f">{label}</a>" in request["html"]


# -- money, numbers, dates ------------------------------------------------------------------

MONEY = {"en": "€111.99", "de": f"111,99{NBSP}€"}


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", COUNTED)
def test_money_is_formatted_for_the_locale(renderer: Renderer, template: str, locale: str) -> None:
    request = render(renderer, template, locale)
    money = MONEY[locale]
    total = {"en": "Total", "de": "Gesamtsumme"}[locale]

    assert f"  1 x {money} = {money}\n" in request["text"]
    assert f"\n{total}: {money}\n" in request["text"]
    assert request["html"].count(f">{money}</td>") == 3  # unit, line, total
    assert "EUR" not in request["text"] + request["html"]


def test_money_in_another_currency_and_thousands(renderer: Renderer) -> None:
    items = [dict(HEADPHONES, price=1234.5, quantity=2)]
    english = render(renderer, "post_purchase_1", "en", items=items, cart_value=2469.0)
    german = render(renderer, "post_purchase_1", "de", items=items, currency="USD", cart_value=2469)

    assert "  2 x €1,234.50 = €2,469.00\n" in english["text"]
    assert f"  2 x 1.234,50{NBSP}$ = 2.469,00{NBSP}$\n" in german["text"]


def test_an_unknown_currency_still_renders(renderer: Renderer) -> None:
    request = render(renderer, "abandoned_cart_1", "de", currency="XYZ")

    assert f"  1 x 111,99{NBSP}XYZ = 111,99{NBSP}XYZ\n" in request["text"]


DATES = {
    # (template, English in New York, German in Berlin)
    "abandoned_cart_1": (
        "You left these items on December 1, 2026.",
        "Diese Artikel hast du am 2. Dezember 2026 in deinen Warenkorb gelegt.",
    ),
    "abandoned_cart_2": (
        "You left these items on December 1, 2026.",
        "Diese Artikel hast du am 2. Dezember 2026 in deinen Warenkorb gelegt.",
    ),
    "post_purchase_1": (
        "Thank you for your order of December 1, 2026!",
        "Vielen Dank für deine Bestellung vom 2. Dezember 2026!",
    ),
    "post_purchase_2": (
        "We hope you're enjoying your order of December 1, 2026!",
        "Wir hoffen, du hast Freude an deiner Bestellung vom 2. Dezember 2026!",
    ),
    "welcome_2": (
        "You joined us on December 1, 2026,",
        "Seit dem 2. Dezember 2026 bist du dabei",
    ),
}


@pytest.mark.parametrize("template", sorted(DATES))
def test_dates_in_the_locale_and_the_customers_time_zone(renderer: Renderer, template: str) -> None:
    for locale, expected in zip(("en", "de"), DATES[template], strict=True):
        text, html = bodies(render(renderer, template, locale))
        assert expected in text
        assert expected in html


def test_a_date_without_time_zone_uses_the_default(renderer: Renderer) -> None:
    request = render(renderer, "post_purchase_1", "de", timezone=None)  # UTC: still Dec 1

    assert "Vielen Dank für deine Bestellung vom 1. Dezember 2026!" in request["text"]


# -- plurals --------------------------------------------------------------------------------

COUNTS = {
    "abandoned_cart_1": {"en": "Your cart ({} {})", "de": "Dein Warenkorb ({} Artikel)"},
    "abandoned_cart_2": {"en": "Your cart ({} {})", "de": "Dein Warenkorb ({} Artikel)"},
    "post_purchase_1": {"en": "Your order ({} {})", "de": "Deine Bestellung ({} Artikel)"},
}


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", COUNTED)
def test_item_count_is_pluralized(renderer: Renderer, template: str, locale: str) -> None:
    pattern = COUNTS[template][locale]
    one = render(renderer, template, locale)
    three = render(
        renderer,
        template,
        locale,
        items=[dict(HEADPHONES), dict(CABLE)],
        cart_value=111.99 + 2 * 5.5,
    )

    expected_one = pattern.format(1, "item")
    expected_three = pattern.format(3, "items")
    assert f"\n{expected_one}:\n" in one["text"]
    assert f">{expected_one}</p>" in one["html"]
    assert f"\n{expected_three}:\n" in three["text"]
    assert f">{expected_three}</p>" in three["html"]


# -- recommendations ------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", RECOMMENDING)
def test_recommendations_heading_in_both_variants(
    renderer: Renderer, template: str, locale: str
) -> None:
    personal, bestsellers = HEADINGS[locale]
    picked = render(renderer, template, locale)
    fallback = render(renderer, template, locale, recommendations_source="fallback")

    assert f"\n\n{personal}:\n- Travel Case\n" in picked["text"]
    assert f">{personal}</h2>" in picked["html"]
    assert bestsellers not in picked["text"] + picked["html"]
    assert f"\n\n{bestsellers}:\n- Travel Case\n" in fallback["text"]
    assert f">{bestsellers}</h2>" in fallback["html"]
    assert personal not in fallback["text"] + fallback["html"]
    # a price where known, none at all where not; the link spelled out in the text part
    price = {"en": "€24.00", "de": f"24,00{NBSP}€"}[locale]
    assert (
        f"- Travel Case\n  {price}\n  https://shop.example.com/products/rc-1?" in (picked["text"])
    )
    assert "- Mystery Box\n  https://shop.example.com/products/rc-2?" in picked["text"]
    assert f">{price}</td>" in picked["html"]


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", STEPS)
def test_no_recommendations_block_when_there_are_none(
    renderer: Renderer, template: str, locale: str
) -> None:
    request = render(renderer, template, locale, recommendations=[])
    text, html = request["text"], request["html"]

    for heading in HEADINGS[locale]:
        if template != "post_purchase_2":  # its cross-sell items are "Picked for you"
            assert heading not in text + html
    assert "<h2" not in html or template in ("browse_abandonment_1", "post_purchase_2")
    assert "\n\n\n" not in text


@pytest.mark.parametrize("template", ["welcome_1", "post_purchase_1", "abandoned_cart_1"])
def test_steps_without_recommendations_block(renderer: Renderer, template: str) -> None:
    request = render(renderer, template, "en")

    assert "Travel Case" not in request["text"] + request["html"]


def test_post_purchase_2_falls_back_to_recommendations_without_items(
    renderer: Renderer,
) -> None:
    request = render(renderer, "post_purchase_2", "de", items=[], cart_value=0)

    assert "\n\nFür dich ausgewählt:\n- Travel Case\n" in request["text"]
    assert "Weiter einkaufen:\n" in request["text"]
    empty = render(renderer, "post_purchase_2", "de", items=[], cart_value=0, recommendations=[])
    assert "Für dich ausgewählt" not in empty["text"] + empty["html"]
    assert "Weiter einkaufen:\n" in empty["text"]


# -- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("template", [*COUNTED, "browse_abandonment_1", "post_purchase_2"])
def test_no_image_tag_for_an_item_without_image(
    renderer: Renderer, template: str, locale: str
) -> None:
    request = render(
        renderer,
        template,
        locale,
        items=[dict(CABLE), dict(HEADPHONES, image_url="javascript:alert(1)")],
        cart_value=11.0 + 111.99,
        recommendations=[],
    )

    assert tags(request["html"], "img") == []
    assert "javascript" not in request["html"]
    assert "Cable" in visible(request["html"])


@pytest.mark.parametrize("template", STEPS)
def test_every_image_has_alt_width_and_height(renderer: Renderer, template: str) -> None:
    request = render(renderer, template, "de")

    images = tags(request["html"], "img")
    expected = {
        "https://cdn.example.com/rc-1.jpg" if template in RECOMMENDING else None,
        None if template in WITHOUT_ITEMS else "https://cdn.example.com/hp-1.jpg",
    } - {None}
    assert {image["src"] for image in images} == expected
    for image in images:
        assert image["alt"] in ("Studio Headphones", "Travel Case")
        assert (image["width"], image["height"]) == ("64", "64")


# -- locale fallbacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "written"),
    [("de-AT", "de"), ("de_DE.UTF-8", "de"), ("fr-FR", "en"), ("xx", "en"), (None, "en")],
)
def test_locale_fallback(renderer: Renderer, given: str | None, written: str) -> None:
    given_trigger = {**trigger("abandoned_cart_1", "en"), "locale": given}
    request = renderer.render(given_trigger, DUE_AT)

    assert request["locale"] == written
    assert f'<html lang="{written}">' in request["html"]
    assert request["text"].startswith({"en": "You left something", "de": "Du hast etwas"}[written])


# -- no English left in German emails ------------------------------------------------------


def _catalog() -> Any:
    with CATALOG.open("rb") as handle:
        return read_po(handle, locale="de")


_PLACEHOLDER = re.compile(r"%\([a-z_]+\)s")


def _english_fragments() -> set[str]:
    """The English words of every msgid that German translates differently, split at the
    placeholders; short fragments ("Qty") are left out, they could be part of a name."""
    fragments = set()
    for message in _catalog():
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for msgid in ids:
            if msgid in strings:
                continue
            for part in _PLACEHOLDER.split(msgid):
                part = part.strip(" ,.!?:()")
                if len(part) >= 8:
                    fragments.add(part)
    return fragments


@pytest.mark.parametrize("template", STEPS)
def test_german_emails_contain_no_english_strings(renderer: Renderer, template: str) -> None:
    fragments = _english_fragments()
    assert len(fragments) > 50
    for overrides in (
        {},
        {"first_name": None, "recommendations_source": "fallback"},
        {"items": [dict(HEADPHONES), dict(CABLE)], "cart_value": 122.99},
        {"items": [], "cart_value": 0, "recommendations": []},
    ):
        request = render(renderer, template, "de", **overrides)
        output = "\n".join((request["subject"], request["text"], visible(request["html"])))
        left = sorted(fragment for fragment in fragments if fragment in output)
        assert left == [], f"{template} {overrides}: English left: {left}"


# -- the catalog against a fresh extraction -------------------------------------------------


def _extracted() -> dict[str, set[tuple[str, ...]]]:
    """msgid (singular) -> the set of (msgid, plural) forms, from the templates as they
    are now, with the options of templates/babel.cfg."""
    with (TEMPLATES / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found: dict[str, set[tuple[str, ...]]] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(TEMPLATES), method_map, options_map
    ):
        forms = tuple(message) if isinstance(message, (tuple, list)) else (message,)
        found.setdefault(forms[0], set()).add(forms)
    return found


def test_the_extraction_finds_the_strings() -> None:
    extracted = _extracted()

    assert "Hi %(name)s," in extracted
    assert "Unsubscribe" in extracted
    assert ("Your cart (%(count)s item)", "Your cart (%(count)s items)") in extracted[
        "Your cart (%(count)s item)"
    ]
    assert len(extracted) > 60


def test_german_catalog_translates_every_extracted_string() -> None:
    catalog = _catalog()
    problems = []
    for msgid, forms in sorted(_extracted().items()):
        message = catalog.get(msgid)
        if message is None:
            problems.append(f"missing: {msgid!r}")
            continue
        if message.fuzzy:
            problems.append(f"fuzzy: {msgid!r}")
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(strings):
            problems.append(f"untranslated: {msgid!r}")
        for form in forms:
            expected_id = form if len(form) > 1 else form[0]
            if message.id != expected_id:
                problems.append(f"plural forms differ: {msgid!r}")
        wanted = set(_PLACEHOLDER.findall(msgid))
        for string in strings:
            if set(_PLACEHOLDER.findall(string)) != wanted:
                problems.append(f"placeholders differ: {msgid!r} -> {string!r}")
    assert problems == []


def test_german_catalog_has_no_stale_or_fuzzy_entries_and_german_plurals() -> None:
    catalog = _catalog()
    extracted = _extracted()

    assert catalog.plural_forms == "nplurals=2; plural=(n != 1);"
    assert catalog.num_plurals == 2
    for message in catalog:
        if not message.id:
            continue
        msgid = message.id[0] if isinstance(message.id, tuple) else message.id
        assert msgid in extracted, f"stale entry (run pybabel update): {msgid!r}"
        assert not message.fuzzy, msgid
        if isinstance(message.string, tuple):
            assert len(message.string) == 2 and all(message.string), msgid
    assert not catalog.obsolete


def test_messages_pot_matches_the_templates() -> None:
    with POT.open("rb") as handle:
        template = read_po(handle)
    in_pot = {m.id[0] if isinstance(m.id, tuple) else m.id for m in template if m.id}

    assert in_pot == set(_extracted())
