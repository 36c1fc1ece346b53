"""The templates' CSS moved into ``style`` attributes once, when a template is loaded, by the
css-inline library: email clients that drop ``<style>`` blocks keep ``style=""``.

Inlining each rendered email took ~200 µs, more than the rest of its render. It can be done
on the template sources instead because the rules are restricted to **type and class
selectors** (``body``, ``.card``, ``td.num``), checked when the templates are read: an
element's style then depends only on its tag, its ``class`` and its own ``style``, never on
where it sits. For each distinct (tag, class, style) of the sources, css-inline computes the
style on a small probe document (so specificity, order and merging with an existing
``style`` are the library's, not ours), and the source's start tag gets that ``style``.
Jinja comments are left alone; the ``<style>`` blocks become Jinja comments of as many
lines (no output; line numbers of template errors stay right). A ``class`` or ``style`` attribute
built by Jinja cannot be known before rendering, and is refused with the file named, as is
any other selector or an at-rule (``@media``).
"""

from __future__ import annotations

import re
from typing import Final

import css_inline
import jinja2

_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.S | re.I)
_START_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)\b([^<>]*?)(/?)>")
_ATTR = {name: re.compile(rf'\s{name}\s*=\s*"([^"]*)"', re.I) for name in ("class", "style")}
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SIMPLE_SELECTOR = re.compile(r"[a-zA-Z][\w-]*|(?:[a-zA-Z][\w-]*)?(?:\.[\w-]+)+")
_PROBE = "data-inboxflow-probe"
_PROBED = re.compile(rf'<[a-zA-Z][a-zA-Z0-9]*\b[^<>]*\b{_PROBE}=""[^<>]*>')
_VOID: Final = frozenset({"img", "br", "hr", "input", "meta", "link", "col", "area", "wbr"})
_NOT_STYLED: Final = frozenset({"html", "head", "title", "meta", "style", "link", "script"})
_INLINER: Final = css_inline.CSSInliner(load_remote_stylesheets=False)


def _masked(source: str) -> str:
    """``source`` with its Jinja comments blanked (same length: offsets stay valid)."""
    return _JINJA_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def style_blocks(source: str) -> list[str]:
    """The contents of the ``<style>`` blocks of a template source (not in comments)."""
    return [m.group(1) for m in _STYLE_BLOCK.finditer(_masked(source))]


class StyleInliner:
    """Inlines ``css`` (the rules of every template's ``<style>`` blocks) into template
    sources. Raises :class:`jinja2.TemplateError` for CSS it cannot inline at load time."""

    def __init__(self, css: str) -> None:
        text = _CSS_COMMENT.sub("", css)
        if "@" in text:
            raise jinja2.TemplateError(
                "the templates' <style> rules hold an at-rule (@media, @import, ...): only "
                "type and class selectors are inlined"
            )
        self.types: set[str] = set()
        for rule in text.split("}"):
            if not rule.strip():
                continue
            selectors, _, _ = rule.partition("{")
            for selector in selectors.split(","):
                selector = selector.strip()
                if not _SIMPLE_SELECTOR.fullmatch(selector):
                    raise jinja2.TemplateError(
                        f"the templates' <style> rule selector {selector!r} is not a type or "
                        "class selector (body, .card, td.num): it cannot be inlined"
                    )
                tag = selector.split(".", 1)[0].lower()
                if tag:
                    self.types.add(tag)
        self.css = text
        self._styles: dict[tuple[str, str, str], str] = {}

    def apply(self, source: str, name: str) -> str:
        """``source`` (the template file ``name``) with every start tag styled and the
        ``<style>`` blocks removed."""
        masked = _masked(source)
        out: list[str] = []
        at = 0
        for block in _STYLE_BLOCK.finditer(masked):
            out.append(
                self._styled_tags(source[at : block.start()], masked[at : block.start()], name)
            )
            # a Jinja comment of as many lines: no output, line numbers unchanged
            out.append("{#" + "\n" * source.count("\n", block.start(), block.end()) + "#}")
            at = block.end()
        out.append(self._styled_tags(source[at:], masked[at:], name))
        return "".join(out)

    def _styled_tags(self, source: str, masked: str, name: str) -> str:
        out: list[str] = []
        at = 0
        for tag in _START_TAG.finditer(masked):
            styled = self._styled(source[tag.start() : tag.end()], tag, name)
            if styled is not None:
                out.append(source[at : tag.start()])
                out.append(styled)
                at = tag.end()
        out.append(source[at:])
        return "".join(out)

    def _styled(self, text: str, tag: re.Match[str], name: str) -> str | None:
        element = tag.group(1).lower()
        attrs = tag.group(2)
        classes = _ATTR["class"].search(attrs)
        style = _ATTR["style"].search(attrs)
        if element in _NOT_STYLED or (classes is None and element not in self.types):
            return None
        for found in (classes, style):
            if found is not None and ("{" in found.group(1) or "}" in found.group(1)):
                raise jinja2.TemplateError(
                    f"{name}: <{element} {found.group(0).strip()}>: a class or style attribute "
                    "built by Jinja cannot be inlined; use fixed classes"
                )
        declared = len(re.findall(r"\s(?:class|style)\s*=", attrs, re.I))
        if declared > (classes is not None) + (style is not None):
            raise jinja2.TemplateError(
                f"{name}: <{element}>: a second or unquoted class or style attribute cannot "
                "be inlined; use one fixed class attribute"
            )
        key = (element, classes.group(1) if classes else "", style.group(1) if style else "")
        computed = self._styles.get(key)
        if computed is None:
            computed = self._styles[key] = self._probe(*key)
        if not computed and style is None:
            return None
        inner = text[1 + len(tag.group(1)) : len(text) - 1 - len(tag.group(3))]
        if style is not None:
            inner = inner.replace(style.group(0), "", 1)
        inner = inner.rstrip()
        slash = tag.group(3)
        addition = f' style="{computed}"' if computed else ""
        return f"<{tag.group(1)}{inner}{addition}{' /' if slash else ''}>"

    def _probe(self, element: str, classes: str, style: str) -> str:
        """The style css-inline gives ``<element class=classes style=style>``."""
        attrs = f' {_PROBE}=""'
        if classes:
            attrs += f' class="{classes}"'
        if style:
            attrs += f' style="{style}"'
        if element == "body":
            body_tag, body = f"<body{attrs}>", ""
        else:
            body_tag = "<body>"
            opened = f"<{element}{attrs}>"
            closed = "" if element in _VOID else f"</{element}>"
            if element in ("td", "th"):
                body = f"<table><tr>{opened}{closed}</tr></table>"
            elif element == "tr":
                body = f"<table>{opened}{closed}</table>"
            elif element in ("tbody", "thead", "tfoot", "caption", "colgroup"):
                body = f"<table>{opened}{closed}</table>"
            elif element == "col":
                body = f"<table><colgroup>{opened}</colgroup></table>"
            elif element in ("li",):
                body = f"<ul>{opened}{closed}</ul>"
            else:
                body = f"{opened}{closed}"
        document = f"<html><head><style>{self.css}</style></head>{body_tag}{body}</body></html>"
        found = _PROBED.search(_INLINER.inline(document))
        if found is None:
            raise jinja2.TemplateError(f"<{element}> could not be styled by css-inline")
        value = _ATTR["style"].search(found.group(0))
        return value.group(1) if value is not None else ""
