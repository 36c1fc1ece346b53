"""The renderer's locale machinery on small template directories of the test's own:
locale choice and fallback, per-locale files, translations from .po catalogs, the start-up
check (broken, undefined, untranslated), List-Unsubscribe, recommendations, and the
degradation cases (the shipped templates' texts: tests/unit/test_templates_i18n.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from udfs.core.render import (
    ONE_CLICK,
    Renderer,
    RenderSettings,
    TemplateError,
    sample_triggers,
    unsubscribe_url,
)

BASE_URL = "https://shop.example.com/cart"
T_ARMED = 1_796_083_200_000  # 2026-12-01T00:00:00Z
T_DUE = T_ARMED + 23 * 3_600_000  # 2026-12-01T23:00:00Z: 2 December in Berlin

PO_HEADER = """\
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\\n"

"""
DE_PO = (
    PO_HEADER
    + """\
msgid "Hi %(name)s,"
msgstr "Hallo %(name)s,"

msgid "Hi there,"
msgstr "Hallo,"

msgid "%(num)s item"
msgid_plural "%(num)s items"
msgstr[0] "%(num)s Artikel"
msgstr[1] "%(num)s Artikel"

msgid "Your cart"
msgstr "Dein Warenkorb"

msgid "Total"
msgstr "Summe"
"""
)
SUBJECT = "{% trans %}Your cart{% endtrans %}: {{ total }}"
HTML = """\
<!DOCTYPE html>
<html lang="{{ locale }}"><head><style>p { color: #123456; }</style></head><body>
<p>{% if has_first_name %}{% trans name=first_name %}Hi {{ name }},{% endtrans %}\
{% else %}{% trans %}Hi there,{% endtrans %}{% endif %}</p>
<p>{% trans num=item_count %}{{ num }} item{% pluralize %}{{ num }} items{% endtrans %}</p>
{% for item in items %}<p>{{ item.name }} {{ item.unit_price }}\
{% if item.image_url %}<img src="{{ item.image_url }}" alt="{{ item.image_alt }}">{% endif %}\
</p>{% endfor %}
{% for product in recommendations %}<p class="rec">{{ product.name }} {{ product.price }} \
{{ product.url }}</p>{% endfor %}
<p>{{ _("Total") }} {{ total }} {{ started_on }} {{ sent_on }}</p>
<a href="{{ unsubscribe_url }}">x</a>
</body></html>
"""
TEXT = """\
{% if has_first_name %}{% trans name=first_name %}Hi {{ name }},{% endtrans %}\
{% else %}{% trans %}Hi there,{% endtrans %}{% endif +%}
{{ _("Total") }}: {{ total }}
"""


def write_templates(
    root: Path, po: str | None = DE_PO, files: dict[str, str] | None = None
) -> Path:
    """A template directory with one campaign template ``cart_1`` (``files`` add or replace
    files by relative path) and the German catalog ``po``."""
    contents = {"cart_1.subject.j2": SUBJECT, "cart_1.html.j2": HTML, "cart_1.txt.j2": TEXT}
    contents.update(files or {})
    for name, text in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if po is not None:
        catalog = root / "locale" / "de" / "LC_MESSAGES" / "messages.po"
        catalog.parent.mkdir(parents=True, exist_ok=True)
        catalog.write_text(po)
    return root


def renderer(root: Path, default: str = "en") -> Renderer:
    return Renderer(
        RenderSettings(
            root,
            BASE_URL,
            locales=("en", "de"),
            default_locale=default,
            default_timezone="Europe/Berlin",
        )
    )


def trigger(**overrides: object) -> dict:
    base = {
        "request_id": "r-1",
        "campaign": "cart",
        "step": 1,
        "template": "cart_1",
        "customer_id": "c/1 &x",
        "to": "anna@example.com",
        "first_name": "Anna",
        "locale": "de-AT",
        "timezone": "Europe/Vienna",
        "cart_id": "k-1",
        "items": [
            {
                "product_id": "p-1",
                "name": "Schuh",
                "price": 111.99,
                "quantity": 3,
                "image_url": "https://cdn.example.com/p-1.jpg",
                "category": "shoes",
            }
        ],
        "cart_value": 335.97,
        "currency": "EUR",
        "armed_at": T_ARMED,
        "due_at": T_DUE,
        "reason": "cart_abandoned",
        "recommendations": [],
        "recommendations_source": "none",
    }
    base.update(overrides)
    return base


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return write_templates(tmp_path / "t")


def test_a_german_customer_gets_german_text_money_dates_and_plurals(templates: Path) -> None:
    request = renderer(templates).render(trigger(), T_DUE)
    assert request["locale"] == "de"
    # a subject is one line of plain spaces (Babel's no-break space included)
    assert request["subject"] == "Dein Warenkorb: 335,97 €"
    html = request["html"]
    assert '<html lang="de">' in html
    assert "Hallo Anna," in html and "3 Artikel" in html
    assert "Schuh 111,99\xa0€" in html
    # dates in the customer's zone: 23:00 UTC on 1 December is 2 December in Vienna
    assert "Summe 335,97\xa0€ 1. Dezember 2026 2. Dezember 2026" in html
    assert request["text"] == "Hallo Anna,\nSumme: 335,97\xa0€"


def test_an_english_customer_gets_the_source_text(templates: Path) -> None:
    request = renderer(templates).render(
        trigger(locale="en-GB", timezone="UTC", first_name=None, items=[], cart_value=0),
        T_DUE,
    )
    assert request["locale"] == "en"
    assert request["subject"] == "Your cart: €0.00"
    assert "Hi there," in request["html"] and "0 items" in request["html"]
    assert "Total €0.00 December 1, 2026 December 1, 2026" in request["html"]


@pytest.mark.parametrize(
    ("locale", "default", "expected"),
    [
        ("de_DE.UTF-8", "en", "de"),
        ("DE", "en", "de"),
        ("fr-FR", "en", "en"),  # not supported: the default
        ("fr-FR", "de", "de"),
        ("xx-unknown", "de", "de"),
        (None, "de", "de"),
        (42, "en", "en"),
    ],
)
def test_an_unknown_or_unsupported_locale_falls_back_to_the_default(
    templates: Path, locale: object, default: str, expected: str
) -> None:
    request = renderer(templates, default).render(trigger(locale=locale), T_DUE)
    assert request["locale"] == expected
    assert f'<html lang="{expected}">' in request["html"]


def test_a_file_of_the_locale_replaces_the_shared_one_for_that_locale_only(
    tmp_path: Path,
) -> None:
    root = write_templates(
        tmp_path / "t", files={"de/cart_1.subject.j2": "Nur auf Deutsch {{ total }}"}
    )
    r = renderer(root)
    assert r.render(trigger(), T_DUE)["subject"] == "Nur auf Deutsch 335,97 €"
    assert r.render(trigger(locale="en"), T_DUE)["subject"] == "Your cart: €335.97"


def test_unknown_currency_and_missing_image_and_name_degrade_explicitly(templates: Path) -> None:
    request = renderer(templates).render(
        trigger(
            currency="XYZ",
            items=[{"product_id": "p-9", "name": " ", "price": 5, "quantity": 1}],
            cart_value=5,
            locale="en",
        ),
        T_DUE,
    )
    assert (
        '<p style="color: #123456;">p-9 5.00\xa0XYZ</p>' in request["html"]
    )  # name -> id, no <img>
    assert "<img" not in request["html"]


def test_recommendations_carry_name_price_image_and_a_tracked_link(templates: Path) -> None:
    products = [
        {"product_id": "p 2", "name": "Tasche", "price": 89, "currency": "EUR"},
        {"product_id": "p-3", "name": None, "price": None, "currency": None},
        {"product_id": "", "name": "no id: left out"},
        "not a product",
    ]
    request = renderer(templates).render(
        trigger(recommendations=products, recommendations_source="fallback"), T_DUE
    )
    assert request["metadata"]["recommended"] == ["p 2", "p-3"]
    assert request["metadata"]["recommendations_source"] == "fallback"
    assert (
        '<p class="rec" style="color: #123456;">Tasche 89,00\xa0€ '
        "https://shop.example.com/products/p%202?utm_source=inboxflow&amp;utm_medium=email"
        "&amp;utm_campaign=cart&amp;utm_content=step1</p>"
    ) in request["html"]
    assert '<p class="rec" style="color: #123456;">p-3  https://' in request["html"]


def test_css_rules_are_inlined_into_style_attributes(templates: Path) -> None:
    html = renderer(templates).render(trigger(), T_DUE)["html"]
    assert '<p style="color: #123456;">Hallo Anna,</p>' in html
    assert "<style>" not in html


def test_every_request_names_its_list_unsubscribe_target(templates: Path) -> None:
    metadata = renderer(templates).render(trigger(), T_DUE)["metadata"]
    assert metadata["list_unsubscribe"] == (
        "https://shop.example.com/email/unsubscribe?customer=c%2F1%20%26x&campaign=cart"
    )
    assert metadata["list_unsubscribe_post"] == ONE_CLICK
    assert unsubscribe_url("mailto:unsub@shop.example.com?subject={customer_id}", "a b", "x") == (
        "mailto:unsub@shop.example.com?subject=a%20b"
    )


def test_a_template_that_raises_while_rendering_is_a_template_error(tmp_path: Path) -> None:
    root = write_templates(
        tmp_path / "t", files={"cart_1.txt.j2": "{{ 1 // (item_count - item_count) }}"}
    )
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        renderer(root).render(trigger(), T_DUE)


# --- the start-up check -------------------------------------------------------------------


def test_the_check_passes_for_complete_templates(templates: Path) -> None:
    renderer(templates).check([("cart", "cart_1", 1, 0)])


def test_the_check_names_a_missing_translation(templates: Path) -> None:
    (templates / "cart_1.txt.j2").write_text(TEXT + '{{ _("Free shipping") }}\n')
    with pytest.raises(TemplateError, match=r"cart_1.txt.j2: de: 'Free shipping'"):
        renderer(templates).check([("cart", "cart_1", 1, 0)])


def test_a_fuzzy_translation_counts_as_missing(tmp_path: Path) -> None:
    fuzzy = DE_PO.replace('msgid "Total"', '#, fuzzy\nmsgid "Total"')
    root = write_templates(tmp_path / "t", po=fuzzy)
    with pytest.raises(TemplateError, match=r"cart_1.html.j2: de: 'Total'"):
        renderer(root).check([("cart", "cart_1", 1, 0)])


def test_a_supported_locale_without_a_catalog_stops_start_up(tmp_path: Path) -> None:
    root = write_templates(tmp_path / "t", po=None)
    with pytest.raises(TemplateError, match=r"no translations for locale 'de'.*messages.po"):
        renderer(root)


def test_the_check_names_the_file_with_an_undefined_variable(templates: Path) -> None:
    (templates / "_footer.html.j2").write_text("<p>{{ shop_name }}</p>")
    (templates / "cart_1.html.j2").write_text(
        HTML.replace("</body>", "{% include '_footer.html.j2' %}</body>")
    )
    with pytest.raises(TemplateError) as caught:
        renderer(templates).check([("cart", "cart_1", 1, 0)])
    message = str(caught.value)
    assert message.startswith("template _footer.html.j2 (campaign cart, step 1, locale en")
    assert "'shop_name' is undefined" in message


def test_the_check_names_the_file_with_a_syntax_error(templates: Path) -> None:
    (templates / "cart_1.subject.j2").write_text("{% if total %}unclosed")
    with pytest.raises(TemplateError, match=r"cart_1.subject.j2"):
        renderer(templates).check([("cart", "cart_1", 1, 0)])


def test_the_samples_cover_first_name_items_and_recommendations() -> None:
    samples = dict(sample_triggers("c", "t", 1, "de"))
    assert {s["first_name"] for s in samples.values()} == {"Sam", None}
    assert {len(s["items"]) for s in samples.values()} == {0, 1, 2}
    assert {len(s["recommendations"]) for s in samples.values()} == {0, 2}
    assert {s["recommendations_source"] for s in samples.values()} == {"personal", "fallback"}
    assert {s["currency"] for s in samples.values()} == {"EUR", "XYZ"}


def test_a_broken_template_stops_the_job_at_start_up_naming_the_file(tmp_path: Path) -> None:
    """The shipped config with a template directory holding one broken file."""
    import dataclasses
    import shutil

    from job.config import ConfigError, check_templates, load_config

    cfg = load_config(env={}, check_template_files=False)
    copy = shutil.copytree(cfg.template_dir, tmp_path / "templates")
    broken = copy / "welcome_1.html.j2"
    broken.write_text("<p>{{ customer.lifetime_value }}</p>")
    with pytest.raises(ConfigError) as caught:
        check_templates(dataclasses.replace(cfg, template_dir=copy))
    assert str(caught.value).startswith("templates: template welcome_1.html.j2 (campaign welcome")
    assert "'customer' is undefined" in str(caught.value)
    check_templates(cfg)  # the shipped templates pass


def test_a_step_that_recommends_must_show_the_recommendations(templates: Path) -> None:
    """The test's html shows the recommendations, its text part does not: a step with
    recommend: 3 stops start-up (the products would be chosen and never shown)."""
    with pytest.raises(TemplateError, match=r"the step recommends 3 products but the email"):
        renderer(templates).check([("cart", "cart_1", 1, 3)])
    (templates / "cart_1.txt.j2").write_text(
        TEXT + "\n{% for product in recommendations %}{{ product.name }}\n{% endfor %}"
    )
    renderer(templates).check([("cart", "cart_1", 1, 3)])


def test_the_shipped_steps_that_recommend_show_them() -> None:
    from job.config import check_templates, load_config

    cfg = load_config(env={}, check_template_files=False)
    recommending = {
        (c.name, i + 1): s.recommend for c in cfg.campaigns for i, s in enumerate(c.steps)
    }
    assert {k: v for k, v in recommending.items() if v} == {
        ("abandoned_cart", 2): 3,
        ("browse_abandonment", 1): 3,
        ("welcome", 2): 4,
    }
    check_templates(cfg)
