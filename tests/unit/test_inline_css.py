"""The templates' CSS inlined when a template is loaded (udfs/core/inline_css.py): the same
styles css-inline gives the rendered email, for every shipped step, language and sample; and
the CSS it refuses, with the reason."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import css_inline
import jinja2
import pytest

from tests.factories import ROOT
from udfs.core.inline_css import StyleInliner
from udfs.core.render import Renderer, RenderSettings, TemplateError, sample_triggers

TEMPLATES = ROOT / "templates"
STEPS = [
    ("abandoned_cart", "abandoned_cart_1", 1),
    ("abandoned_cart", "abandoned_cart_2", 2),
    ("browse_abandonment", "browse_abandonment_1", 1),
    ("welcome", "welcome_1", 1),
    ("welcome", "welcome_2", 2),
    ("post_purchase", "post_purchase_1", 1),
    ("post_purchase", "post_purchase_2", 2),
]
SETTINGS = RenderSettings(TEMPLATES, "https://shop.example.com/cart", locales=("en", "de"))


class RuntimeInlined(Renderer):
    """The templates as written (the <style> block kept); css-inline on each rendered email,
    as the renderer did before inlining moved to load time."""

    inliner = css_inline.CSSInliner(load_remote_stylesheets=False)

    def _loader(self, locale: str) -> jinja2.BaseLoader:
        own = self.template_dir / locale
        dirs = [str(own)] if own.is_dir() else []
        return jinja2.FileSystemLoader([*dirs, str(self.template_dir)])

    def render(self, trigger, emitted_at_ms):  # type: ignore[no-untyped-def]
        request = super().render(trigger, emitted_at_ms)
        request["html"] = self.inliner.inline(request["html"])
        return request


class Elements(HTMLParser):
    """(tag, attributes with style split into declarations) of every element but <tbody>
    (the inliner's parser adds it), and the text with white space collapsed."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, tuple]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        if tag == "tbody":
            return
        values = {}
        for name, value in attrs:
            if name == "style":
                value = tuple(d.strip() for d in (value or "").split(";") if d.strip())
            values[name] = value
        self.tags.append((tag, tuple(sorted(values.items()))))

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if data.strip():
            self.text.append(" ".join(data.split()))


@pytest.fixture(scope="module")
def renderers() -> tuple[Renderer, Renderer]:
    return Renderer(SETTINGS), RuntimeInlined(SETTINGS)


@pytest.mark.parametrize(("campaign", "template", "step"), STEPS)
@pytest.mark.parametrize("locale", ["en", "de"])
def test_load_time_inlining_gives_the_styles_css_inline_gives_the_email(
    renderers: tuple[Renderer, Renderer], campaign: str, template: str, step: int, locale: str
) -> None:
    ours, runtime = renderers
    for label, trigger in sample_triggers(campaign, template, step, locale):
        got = Elements(ours.render(trigger, 0)["html"])
        expected = Elements(runtime.render(trigger, 0)["html"])
        assert got.tags == expected.tags, label
        assert got.text == expected.text, label
        assert any(dict(attrs).get("style") for _, attrs in got.tags)  # styles did arrive


def test_an_element_keeps_its_own_style_over_the_rules() -> None:
    inliner = StyleInliner("p { color: red; margin: 0 } .x { color: blue }")
    source = '<p class="x" style="color: green">{{ a }}</p><p>{% if b %}b{% endif %}</p>'
    assert inliner.apply(source, "t.html.j2") == (
        '<p class="x" style="margin: 0;color: green">{{ a }}</p>'
        '<p style="color: red;margin: 0;">{% if b %}b{% endif %}</p>'
    )


def test_jinja_comments_and_line_numbers_are_kept() -> None:
    inliner = StyleInliner(".x { color: red }")
    source = '{# <p class="x"> #}\n<style>\n.x { color: red }\n</style>\n<p class="x">'
    out = inliner.apply(source, "t.html.j2")
    assert out == '{# <p class="x"> #}\n{#\n\n#}\n<p class="x" style="color: red;">'
    assert out.count("\n") == source.count("\n")


@pytest.mark.parametrize(
    ("css", "message"),
    [
        ("td p { color: red }", "'td p' is not a type or class selector"),
        (".a > .b { color: red }", "'.a > .b' is not a type or class selector"),
        ("a:hover { color: red }", "'a:hover' is not a type or class selector"),
        ("@media (max-width: 600px) { .a { width: 100% } }", "at-rule"),
    ],
)
def test_css_that_cannot_be_inlined_at_load_time_stops_start_up(
    tmp_path: Path, css: str, message: str
) -> None:
    (tmp_path / "t_1.subject.j2").write_text("s")
    (tmp_path / "t_1.txt.j2").write_text("t")
    (tmp_path / "t_1.html.j2").write_text(f"<style>{css}</style><p>x</p>")
    with pytest.raises(TemplateError, match=message):
        Renderer(RenderSettings(tmp_path, "https://shop.example.com/cart"))


def test_a_class_built_by_jinja_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "t_1.subject.j2").write_text("s")
    (tmp_path / "t_1.txt.j2").write_text("t")
    (tmp_path / "t_1.html.j2").write_text(
        '<style>.a { color: red }</style><p class="{{ c }}">x</p>'
    )
    renderer = Renderer(RenderSettings(tmp_path, "https://shop.example.com/cart"))
    assert renderer.missing_templates(["t_1"]) == ["t_1"]
    with pytest.raises(jinja2.TemplateError, match=r"t_1.html.j2: <p class=\"\{\{ c \}\}\">"):
        StyleInliner(".a { color: red }").apply('<p class="{{ c }}">x</p>', "t_1.html.j2")
