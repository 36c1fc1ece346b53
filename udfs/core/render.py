"""Render journey triggers into email requests (pure Python, no pyflink).

A trigger (built by the customer function) names a template base ``X``; ``X`` maps to
three files in the template directory: ``X.subject.j2`` (plain text, one line),
``X.html.j2`` (HTML, autoescaped) and ``X.txt.j2`` (plain text, not escaped). Files whose
name starts with ``_`` are partials (layouts, macros) that campaign templates extend,
include or import.

**Locales** (README "Locales"). The email is written in the customer's language when the
job supports it (``locales.supported``), else ``locales.default``, else English
(:func:`udfs.core.l10n.resolve_locale`; ``de-AT`` counts as ``de``). Each locale has its own
Jinja2 environment with the ``jinja2.ext.i18n`` extension (new-style gettext) and that
locale's translations, read at start-up from ``locale/<lang>/LC_MESSAGES/messages.po``
under the template directory (English is the source language and needs none). A file in
``<template dir>/<lang>/`` replaces the file of the same name for that locale only. Money,
numbers and dates are formatted by Babel for the locale (``111,99 €`` / ``€111.99``), dates
in the customer's time zone (identify trait ``timezone``, else the configured default).

Templates are edited by marketers and fed with untrusted event data (product names,
first names, image URLs), so they run in Jinja2's immutable sandbox with
``StrictUndefined``; a ``None`` reaching the output is an error too. Every value a
template can see is prepared here with an explicit fallback, so a typo in a template
fails loudly instead of sending an email with a hole in it; :meth:`Renderer.check` renders
every campaign step in every locale with sample customers at start-up and checks every
translatable string has a translation, so a broken template stops the job at start-up.

Variables available to templates:

=========================== ==========================================================
``first_name``              the customer's first name, ``""`` when unknown
``has_first_name``          whether a first name is known (greet "Hi there," otherwise)
``items``                   what the step shows: list of :class:`ItemView`
``item_count``              total quantity over all items
``total``                   formatted value of the items, e.g. ``"€119.80"``
``currency``                currency code, ``"USD"`` when the trigger has none
``cart_url``                "Return to your cart" link with UTM parameters
``recommendations``         list of :class:`ProductView` (may be empty: show no block)
``recommendations_personal`` chosen from the customer's behaviour (else bestsellers)
``started_on``              the journey's start date (long format, customer's zone)
``sent_on``                 the step's due date (long format, customer's zone)
``unsubscribe_url``         the customer's unsubscribe link (also List-Unsubscribe)
``locale``                  the language the email is written in, e.g. ``"de"``
``campaign``                campaign name, e.g. ``"abandoned_cart"``
``step``                    step number (1-based)
``subject``                 the rendered subject (html/txt only)
=========================== ==========================================================

The rendered HTML goes through the ``css-inline`` library: rules of ``<style>`` blocks
become ``style=""`` attributes, which is what email clients that drop ``<style>`` keep.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from gettext import NullTranslations
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import jinja2
import jinja2.ext
import jinja2.nodes
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from udfs.core import l10n
from udfs.core.guards import zone_or_none
from udfs.core.inline_css import StyleInliner, style_blocks
from udfs.core.instant import iso_ms

log = logging.getLogger(__name__)

#: Used when a trigger carries no currency. The cart schema makes currency optional and
#: the shop's catalogue default is not known here; USD is the most common default of
#: storefront platforms.
DEFAULT_CURRENCY = "USD"
#: The source language of the templates, and the last locale fallback.
DEFAULT_LOCALE = l10n.SOURCE_LOCALE

UTM_SOURCE = "inboxflow"
TEMPLATE_PARTS = ("subject", "html", "txt")
#: Where a locale's translations live, under the template directory.
CATALOG_PATH = "locale/{locale}/LC_MESSAGES/messages.po"
#: RFC 8058 one-click unsubscribe, sent with an https List-Unsubscribe target.
ONE_CLICK = "List-Unsubscribe=One-Click"

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
# C0/C1 control characters other than whitespace (str.split() handles whitespace,
# including \r, \n, \u2028 and \u2029): removed from subjects to keep headers clean.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# For str patterns \s is exactly str.isspace() (tests/unit/test_render_paths.py checks every
# code point): one regex search instead of a Python loop over the characters.
_WHITESPACE = re.compile(r"\s")
# What a plain email address must not hold: white space, U+FEFF, C0 controls.
_NOT_IN_ADDRESS = re.compile(r"[\s\ufeff\x00-\x1f]")


class TemplateError(ValueError):
    """A template is missing, broken or unsafe, or a trigger cannot be rendered.

    Messages name the template, customer id, request id and reason, never the payload.
    Sandbox violations are raised as ``TemplateError`` from a
    :class:`jinja2.sandbox.SecurityError` (see ``__cause__``).
    """


@dataclass(frozen=True)
class RenderSettings:
    """What a :class:`Renderer` is built from (``job.config.render_settings``)."""

    template_dir: Path
    cart_base_url: str
    # a product's page; {product_id} is replaced (URL-encoded)
    product_url: str = "https://shop.example.com/products/{product_id}"
    # List-Unsubscribe target; {customer_id} and {campaign} are replaced (URL-encoded)
    unsubscribe_url: str = (
        "https://shop.example.com/email/unsubscribe?customer={customer_id}&campaign={campaign}"
    )
    locales: tuple[str, ...] = (DEFAULT_LOCALE,)
    default_locale: str = DEFAULT_LOCALE
    # IANA zone for dates of customers without a (valid) timezone trait
    default_timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ItemView:
    """One product an email shows, as templates see it; every field is non-None except
    image_url and category."""

    product_id: str
    name: str  # the item's name, or its product id when the name is missing
    quantity: int
    unit_price: str  # "€59.90" / "59,90 €"; "" when the price is unknown
    line_price: str  # rounded unit price x quantity; "" when the price is unknown
    image_url: str | None  # only http(s) URLs, anything else (javascript:, data:) dropped
    category: str | None
    image_alt: str = ""  # the name: alt text of the image
    url: str = ""  # the product's page, with UTM parameters


@dataclass(frozen=True, slots=True)
class ProductView:
    """One recommended product as templates see it."""

    product_id: str
    name: str
    price: str  # formatted, "" when unknown (print no price)
    image_url: str | None
    image_alt: str
    url: str
    category: str | None


_ITEM_FIELDS: Final = frozenset(field.name for field in fields(ItemView))
_PRODUCT_FIELDS: Final = frozenset(field.name for field in fields(ProductView))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with a shortcut for the lookup templates make most: a
    field of an :class:`ItemView` or :class:`ProductView` (a dozen per rendered email). The
    sandbox would look the field up and then run its safety checks (no ``_`` prefix, not an
    internal attribute of a function/type/frame, not a mutating method of a list/dict/set),
    all of which pass for a field holding a str, int or None; the shortcut returns the same
    value without them. Everything else goes through the sandbox unchanged."""

    #: Functions of our own that templates call (the gettext functions): called directly,
    #: as ``Context.call`` would call a ``pass_context`` function, without the sandbox's and
    #: the context's checks (a render calls them ~25 times: those checks were 40% of it).
    trusted: frozenset[Any] = frozenset()

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if __obj in __self.trusted:
            # what Context.call drops before the call (the functions only read autoescape,
            # which the loop's and block's derived contexts share)
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return __obj(__context, *args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if (kind is ItemView and attribute in _ITEM_FIELDS) or (
            kind is ProductView and attribute in _PRODUCT_FIELDS
        ):
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


class _CompiledI18n(jinja2.ext.InternationalizationExtension):
    """Jinja2's i18n extension, with a ``{% trans %}`` block that has no variables, no
    plural and no context translated when the template is compiled: its text is the same
    for every email of the environment's locale (what new-style gettext would return at each
    render: the translation, ``%`` with no variables, unescaped). Blocks with variables or a
    plural are left to the gettext functions at render time. Most of a render's ~25
    translated strings are such fixed paragraphs."""

    def _make_node(
        self,
        singular: str,
        plural: str | None,
        context: str | None,
        variables: dict[str, jinja2.nodes.Expr],
        plural_expr: jinja2.nodes.Expr | None,
        vars_referenced: bool,
        num_called_num: bool,
    ) -> jinja2.nodes.Output:
        translations = getattr(self.environment, "translations", None)
        newstyle = getattr(self.environment, "newstyle_gettext", False)
        if translations is not None and newstyle and plural is None and context is None:
            if not variables and not vars_referenced:
                try:
                    text = translations.gettext(singular) % {}
                except (TypeError, ValueError, KeyError):
                    pass  # left to render time, which raises the same error
                else:
                    return jinja2.nodes.Output([jinja2.nodes.TemplateData(text)])
        return super()._make_node(
            singular, plural, context, variables, plural_expr, vars_referenced, num_called_num
        )


class _InliningLoader(jinja2.BaseLoader):
    """``inner``'s sources, the HTML ones with the templates' CSS in ``style`` attributes
    (:mod:`udfs.core.inline_css`)."""

    def __init__(self, inner: jinja2.BaseLoader, inliner: StyleInliner) -> None:
        self.inner = inner
        self.inliner = inliner

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Any]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        if template.endswith(".html.j2"):
            source = self.inliner.apply(source, template)
        return source, filename, uptodate


@dataclass(frozen=True, slots=True)
class _TemplateSet:
    subject: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template


def cart_url(base_url: str, cart_id: str | None, customer_id: str, campaign: str, step: int) -> str:
    """Link back to the cart with UTM tracking, every parameter URL-encoded.

    ``cart_id`` identifies the cart; when there is none, ``customer_id`` is sent
    instead so the shop can restore that customer's current cart. Parameters are
    appended to any query the base URL already has; a fragment stays last.
    """
    head, tail = _url_frame(base_url)
    # urlencode(params, quote_via=quote, safe="") spelled out for these parameters: quote
    # (not quote_plus) with safe="", so "/", "&", "=", "+", "#" in ids are encoded.
    first = f"cart_id={_quote(cart_id)}" if cart_id else f"customer_id={_quote(customer_id)}"
    return f"{head}{first}&{_utm(campaign, step)}{tail}"


@functools.lru_cache(maxsize=8192)  # the same products are shown again and again
def product_url(pattern: str, product_id: str, campaign: str, step: int) -> str:
    """The product's page (``pattern`` with ``{product_id}`` URL-encoded) with UTM tracking."""
    head, tail = _url_frame(pattern.replace("{product_id}", _quote(product_id)))
    return f"{head}{_utm(campaign, step)}{tail}"


def unsubscribe_url(pattern: str, customer_id: str, campaign: str) -> str:
    """The customer's unsubscribe link: ``pattern`` with ``{customer_id}`` and
    ``{campaign}`` URL-encoded."""
    return pattern.replace("{customer_id}", _quote(customer_id)).replace(
        "{campaign}", _quote(campaign)
    )


@functools.lru_cache(maxsize=1024)
def _utm(campaign: str, step: int) -> str:
    return (
        f"utm_source={_UTM_SOURCE_QUOTED}&utm_medium=email"
        f"&utm_campaign={_quote(campaign)}&utm_content={_quote(f'step{step}')}"
    )


def _quote(value: object) -> str:
    # urlencode's treatment of a value: bytes quoted as they are, anything else as str().
    return quote(value if isinstance(value, bytes) else str(value), safe="")


_UTM_SOURCE_QUOTED: Final = _quote(UTM_SOURCE)


@functools.lru_cache(maxsize=4096)
def _url_frame(base_url: str) -> tuple[str, str]:
    """The url before and after its parameters: ``urlunsplit`` of the split base url
    with the query in the middle, cut where the query goes (it appends ``?query`` and
    ``#fragment`` last, after everything else); any query of the base url comes first."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"link base must be an absolute http(s) url, got {base_url!r}")
    head = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + "?"
    if parts.query:
        head = f"{head}{parts.query}&"
    return head, f"#{parts.fragment}" if parts.fragment else ""


def _to_cents(amount: object) -> Decimal:  # any value: checked here, TypeError if no number
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
        raise TypeError(f"amount must be a number, got {type(amount).__name__}")
    if isinstance(amount, float) and not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount!r}")
    try:
        # no sign on a zero: a price of -0.0 (which the schemas' "minimum": 0 admits) printed
        # as "EUR -0.00", and so did -0.004. Found by fuzzing (issue 9).
        return l10n.round_half_up(amount, 2)
    except InvalidOperation as exc:
        raise ValueError(f"amount cannot be formatted: {amount!r}") from exc


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces and drop control chars.

    Subjects become a mail header; a newline there would allow header injection.
    """
    return " ".join(_CONTROL.sub("", text).split())


def safe_image_url(url: object) -> str | None:
    """The URL if it is http(s), else None (no javascript:, data: or relative URLs)."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    lowered = url.lower()
    if not lowered.startswith(("https://", "http://")):
        return None
    if len(url) <= len("https://") or _WHITESPACE.search(url) is not None:
        return None
    return url


def _refuse_none(value: Any) -> Any:
    # Jinja prints None as "None"; StrictUndefined does not catch it, this does.
    if value is None:
        raise TemplateError("template printed a None value")
    return value


def read_catalog(template_dir: Path, locale: str) -> Catalog | None:
    """The locale's catalog (``locale/<lang>/LC_MESSAGES/messages.po`` under
    ``template_dir``), read once; None for English without one (the source language needs
    none). A missing or broken catalog of another locale is a :class:`TemplateError` naming
    the file."""
    path = template_dir / CATALOG_PATH.format(locale=locale)
    if not path.is_file():
        if locale == DEFAULT_LOCALE:
            return None
        raise TemplateError(f"no translations for locale {locale!r}: {path} is missing")
    try:
        with path.open("rb") as handle:
            return read_po(handle, locale=locale, abort_invalid=True)
    except Exception as exc:  # Babel raises several kinds; all mean "broken"
        raise TemplateError(f"{path}: not a valid .po file: {exc}") from exc


def translations_of(catalog: Catalog | None) -> NullTranslations:
    """The gettext translations of ``catalog`` (fuzzy entries are not used)."""
    if catalog is None:
        return NullTranslations()
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer)


def load_translations(template_dir: Path, locale: str) -> NullTranslations:
    """The locale's translations: :func:`translations_of` :func:`read_catalog`."""
    return translations_of(read_catalog(template_dir, locale))


def _new_style_gettext(translations: NullTranslations) -> dict[str, Any]:
    """``gettext`` and ``ngettext`` as ``jinja2.ext`` makes them for new-style gettext
    (``_make_new_gettext``: the translation, ``Markup`` when autoescaping, then always
    ``%`` with the variables), with each translation looked up once."""
    singular: dict[str, str] = {}
    plural: dict[tuple[str, str, int], str] = {}

    @jinja2.pass_context
    def gettext(__context: jinja2.runtime.Context, __string: str, **variables: Any) -> str:
        rv = singular.get(__string)
        if rv is None:
            rv = singular[__string] = translations.gettext(__string)
        if __context.eval_ctx.autoescape:
            rv = Markup(rv)
        return rv % variables

    @jinja2.pass_context
    def ngettext(
        __context: jinja2.runtime.Context,
        __singular: str,
        __plural: str,
        __num: int,
        **variables: Any,
    ) -> str:
        variables.setdefault("num", __num)
        key = (__singular, __plural, __num)
        rv = plural.get(key)
        if rv is None:
            rv = translations.ngettext(__singular, __plural, __num)
            if len(plural) < 10_000:  # counts are small numbers; bounded all the same
                plural[key] = rv
        if __context.eval_ctx.autoescape:
            rv = Markup(rv)
        return rv % variables

    return {"gettext": gettext, "ngettext": ngettext}


def translated_ids(catalog: Catalog) -> frozenset[str]:
    """The msgids (singular) with a non-empty, non-fuzzy translation in ``catalog``."""
    done: set[str] = set()
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if all(strings):
            msgid = message.id[0] if isinstance(message.id, (tuple, list)) else message.id
            done.add(str(msgid))
    return frozenset(done)


class Renderer:
    """Renders triggers into email requests with sandboxed, cached Jinja2 templates.

    Invariants: rendering is a pure function of (trigger, emitted_at_ms) and the
    template files; compiled templates are cached for the renderer's lifetime (edits on
    disk need a restart, checked by :meth:`check` at start-up); only ``*.html.j2`` is
    autoescaped; every failure is a :class:`TemplateError`.
    """

    def __init__(self, settings: RenderSettings) -> None:
        self.settings = settings
        self.template_dir = Path(settings.template_dir)
        if not self.template_dir.is_dir():
            raise TemplateError(f"template directory does not exist: {self.template_dir}")
        cart_url(settings.cart_base_url, None, "probe", "probe", 1)  # fail at start-up
        product_url(settings.product_url, "probe", "probe", 1)
        self.cart_base_url = settings.cart_base_url
        self.locales = tuple(settings.locales) or (DEFAULT_LOCALE,)
        self.default_locale = settings.default_locale
        zone = zone_or_none(settings.default_timezone)
        if zone is None:
            raise TemplateError(f"unknown default time zone {settings.default_timezone!r}")
        self.default_zone: ZoneInfo = zone
        css = "\n".join(
            block
            for path in sorted(self.template_dir.rglob("*.html.j2"))
            for block in style_blocks(path.read_text())
        )
        try:
            self._inliner = StyleInliner(css)
        except jinja2.TemplateError as exc:
            raise TemplateError(str(exc)) from exc
        # each .po file read once: the environments' translations and the check's msgids
        self._catalogs = {
            locale: read_catalog(self.template_dir, locale) for locale in self.locales
        }
        self._envs = {locale: self._environment(locale) for locale in self.locales}
        # What Template.render puts under the variables: templates are loaded without
        # globals of their own and the environments' are not changed after this.
        self._globals = {locale: dict(env.globals) for locale, env in self._envs.items()}
        self._compiled: dict[tuple[str, str], _TemplateSet] = {}

    def _loader(self, locale: str) -> jinja2.BaseLoader:
        """The locale's template files (its own first), the HTML ones with the CSS inlined."""
        loaders: list[jinja2.BaseLoader] = []
        own = self.template_dir / locale
        if own.is_dir():  # files of this locale replace the shared ones of the same name
            loaders.append(jinja2.FileSystemLoader(str(own)))
        loaders.append(jinja2.FileSystemLoader(str(self.template_dir)))
        return _InliningLoader(jinja2.ChoiceLoader(loaders), self._inliner)

    def _environment(self, locale: str) -> _Sandbox:
        env = _Sandbox(
            loader=self._loader(locale),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            finalize=_refuse_none,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # no stat() per render; our own cache holds them anyway
            extensions=[_CompiledI18n],
        )
        translations = translations_of(self._catalogs[locale])
        env.translations = translations  # type: ignore[attr-defined]  # read by _CompiledI18n
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        # The same new-style functions with the lookups cached and without the second trip
        # through the sandbox's call per string (a render made ~25 of them: 40% of its time)
        functions = _new_style_gettext(translations)
        env.globals.update(functions)
        env.trusted = frozenset(functions.values())
        return env

    # -- templates -------------------------------------------------------------------

    def missing_templates(self, names: Iterable[str]) -> list[str]:
        """Base names (sorted, unique) whose three files are not all present and compilable
        in every locale. Logs the precise problem (file name and error) for each."""
        missing: set[str] = set()
        for name in names:
            for locale in self.locales:
                try:
                    self._templates(name, locale)
                except TemplateError as exc:
                    log.error("template %r unusable: %s", name, exc)
                    missing.add(name)
        return sorted(missing)

    def _templates(self, name: str, locale: str) -> _TemplateSet:
        cached = self._compiled.get((name, locale))
        if cached is not None:
            return cached
        if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
            raise TemplateError(f"invalid template name {name!r}")
        env = self._envs[locale]
        loaded = []
        for part in TEMPLATE_PARTS:
            file_name = f"{name}.{part}.j2"
            try:
                loaded.append(env.get_template(file_name))
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(
                    f"missing template file {exc.name or file_name} in {self.template_dir}"
                ) from exc
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"syntax error in {exc.name or file_name} line {exc.lineno}: {exc.message}"
                ) from exc
            except jinja2.TemplateError as exc:  # the loader's: CSS it cannot inline
                raise TemplateError(str(exc)) from exc
        for template in loaded:
            # Its globals are the environment's, as a ChainMap that each render copies into
            # a set, key by key in Python; a plain dict of the same items (the environment's
            # globals do not change after __init__) makes that a fast copy.
            template.globals = dict(template.globals)
        result = _TemplateSet(*loaded)
        self._compiled[(name, locale)] = result
        return result

    def untranslated(self) -> list[str]:
        """Every translatable string of every template file (partials and per-locale files
        included) that a supported locale's catalog does not translate, as
        ``"<file>: <locale>: <msgid>"`` (English needs no catalog)."""
        problems = []
        for locale in self.locales:
            catalog = self._catalogs[locale]
            if catalog is None:  # English without a catalog: the source text
                continue
            done = translated_ids(catalog)
            env = self._envs[locale]
            for path in sorted(self.template_dir.rglob("*.j2")):
                relative = path.relative_to(self.template_dir)
                if len(relative.parts) > 1 and relative.parts[0] != locale:
                    continue  # another locale's own file
                try:
                    found = env.extract_translations(path.read_text())  # type: ignore[attr-defined]
                    for _line, _function, message in found:
                        msgid = message[0] if isinstance(message, tuple) else message
                        if isinstance(msgid, str) and msgid not in done:
                            problems.append(f"{relative}: {locale}: {msgid!r}")
                except jinja2.TemplateSyntaxError as exc:
                    problems.append(f"{relative}: syntax error line {exc.lineno}: {exc.message}")
        return problems

    def check(self, steps: Iterable[tuple[str, str, int, int]]) -> None:
        """Start-up check of ``(campaign, template, step, recommend)`` in every locale: the
        files compile, every string has a translation, and each renders with every sample
        customer of :func:`sample_triggers` (undefined variables, None printed, an empty
        subject or body); a step that recommends products (``recommend`` > 0) must show
        them. Raises :class:`TemplateError` naming the file and locale."""
        problems = self.untranslated()
        if problems:
            raise TemplateError(
                "untranslated strings (add them to the locale's messages.po): "
                + "; ".join(problems[:10])
                + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
            )
        for campaign, template, step, recommend in steps:
            for locale in self.locales:
                for label, trigger in sample_triggers(campaign, template, step, locale):
                    try:
                        request = self.render(trigger, trigger["due_at"])
                    except TemplateError as exc:
                        where = self._failing_file(exc.__cause__) or f"{template}.*.j2"
                        raise TemplateError(
                            f"template {where} (campaign {campaign}, step {step}, locale "
                            f"{locale}, sample {label}): {exc}"
                        ) from exc
                    shown = [p.get("name") for p in trigger["recommendations"] if p.get("name")]
                    if recommend and any(
                        name not in request[part] for name in shown for part in ("html", "text")
                    ):
                        raise TemplateError(
                            f"template {template}.html.j2 / .txt.j2 (campaign {campaign}, step "
                            f"{step}, locale {locale}): the step recommends {recommend} "
                            "products but the email does not show them (add the "
                            "recommendations block, or set the step's recommend: 0)"
                        )

    def _failing_file(self, exc: BaseException | None) -> str | None:
        """The template file an error was raised in: its name for a syntax error, else the
        innermost template frame of its traceback (Jinja2 rewrites those to the file)."""
        if exc is None:
            return None
        name = getattr(exc, "name", None)
        if isinstance(exc, jinja2.TemplateSyntaxError) and name:
            return str(name)
        found = None
        tb = exc.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.endswith(".j2"):
                path = Path(filename)
                try:
                    found = path.relative_to(self.template_dir).as_posix()
                except ValueError:
                    found = path.name
            tb = tb.tb_next
        return found

    # -- rendering -------------------------------------------------------------------

    def render(self, trigger: Mapping[str, Any], emitted_at_ms: int) -> dict[str, Any]:
        """Build the email request for one trigger (see conf/schemas/email_request.json)."""
        customer_id = trigger.get("customer_id")
        request_id = trigger.get("request_id")
        template = trigger.get("template")

        def fail(reason: str) -> TemplateError:
            return TemplateError(
                f"cannot render template={template!r} customer_id={customer_id!r} "
                f"request_id={request_id!r}: {reason}"
            )

        try:
            context, metadata = self._context(trigger)
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(f"invalid trigger: {exc}") from exc
        locale = context["locale"]
        try:
            templates = self._templates(template, locale)  # type: ignore[arg-type]
        except TemplateError as exc:
            raise fail(str(exc)) from exc

        try:
            # What Template.render does, with the template variables merged into the
            # globals once per email instead of once per template.
            variables = {**self._globals[locale], **context}
            subject = one_line(self._render(locale, templates.subject, variables))
            variables["subject"] = subject
            html = self._render(locale, templates.html, variables)
            text = self._render(locale, templates.text, variables)
        except jinja2.sandbox.SecurityError as exc:
            raise fail(f"sandbox violation: {exc}") from exc
        except (jinja2.TemplateError, TemplateError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # a template error of any kind: not sent
            raise fail(f"template raised {type(exc).__name__}: {exc}") from exc
        if not subject:
            raise fail("subject rendered empty")
        if not html.strip() or not text.strip():
            raise fail("body rendered empty")

        return {
            "request_id": request_id,
            "campaign": trigger["campaign"],
            "step": trigger["step"],
            "customer_id": customer_id,
            "to": trigger["to"],
            "subject": subject,
            "html": html,
            "text": text,
            "locale": locale,
            "trigger_event_time": iso_ms(trigger["due_at"]),
            "emitted_at": iso_ms(emitted_at_ms),
            "metadata": metadata,
        }

    def _render(self, locale: str, template: jinja2.Template, variables: dict[str, Any]) -> str:
        """``template.render(context)``, given the globals and ``context`` merged as the
        render would merge them (``variables``): the context is built on that dict (which
        rendering does not change) instead of a copy, and the output joined the same way;
        an exception is re-raised through the environment as ``render`` does it."""
        env = self._envs[locale]
        try:
            return env.concat(
                template.root_render_func(template.new_context(variables, shared=True))
            )
        except Exception:  # noqa: BLE001 - re-raised (traceback rewritten), as render does
            env.handle_exception()

    def _context(self, trigger: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Template variables and request metadata, with every fallback applied."""
        for key in (
            "request_id",
            "campaign",
            "customer_id",
            "to",
            "template",
            "reason",
        ):
            if not isinstance(trigger.get(key), str) or not trigger[key]:
                raise ValueError(f"{key} must be a non-empty string")
        to = trigger["to"]
        # The shape conf/schemas/email_request.json promises (^[^@\s]+@[^@\s]+$, no \s):
        # one "@" with text on both sides. Only identify.json checks an email; the traits
        # of other event types are unchecked strings ("a@", "a@b@c" reached the request:
        # found by fuzzing, issue 9). U+FEFF is \s for the schema's ECMA 262 regex but not
        # str.isspace().
        local, _, domain = to.partition("@")
        if not local or not domain or "@" in domain or _NOT_IN_ADDRESS.search(to) is not None:
            raise ValueError("to is not a plain email address")
        step = trigger.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be an int >= 1, got {step!r}")
        for key in ("armed_at", "due_at"):
            value = trigger.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{key} must be epoch ms (int), got {type(value).__name__}")
        cart_id = trigger.get("cart_id") or None
        if cart_id is not None and not isinstance(cart_id, str):
            raise ValueError("cart_id must be a string or null")
        campaign, customer_id = trigger["campaign"], trigger["customer_id"]

        first_name = trigger.get("first_name")
        first_name = one_line(first_name) if isinstance(first_name, str) else ""
        currency = trigger.get("currency")
        currency = (
            currency.strip().upper()
            if isinstance(currency, str) and currency.strip()
            else DEFAULT_CURRENCY
        )
        locale = l10n.resolve_locale(trigger.get("locale"), self.locales, self.default_locale)
        zone = zone_or_none(trigger.get("timezone")) or self.default_zone

        raw_items = trigger.get("items")
        if not isinstance(raw_items, list):
            raise TypeError("items must be a list")
        pattern = self.settings.product_url
        items = [_item_view(item, currency, locale, pattern, campaign, step) for item in raw_items]
        cart_value = trigger.get("cart_value")
        total = l10n.format_money(_to_cents(cart_value), currency, locale)
        link = cart_url(self.cart_base_url, cart_id, customer_id, campaign, step)
        unsubscribe = unsubscribe_url(self.settings.unsubscribe_url, customer_id, campaign)
        recommended = _recommendations(trigger, currency, locale, pattern, campaign, step)

        context = {
            "first_name": first_name,
            "has_first_name": bool(first_name),
            "items": items,
            "item_count": sum(item.quantity for item in items),
            "total": total,
            "currency": currency,
            "cart_url": link,
            "recommendations": recommended,
            "recommendations_personal": trigger.get("recommendations_source") != "fallback",
            "started_on": l10n.format_date(trigger["armed_at"], zone, locale),
            "sent_on": l10n.format_date(trigger["due_at"], zone, locale),
            "unsubscribe_url": unsubscribe,
            "locale": locale,
            "campaign": campaign,
            "step": step,
        }
        metadata = {
            "cart_id": cart_id,
            # Copies: the request must not alias (and later change with) the caller's state.
            "items": [dict(item) for item in raw_items],
            "cart_value": cart_value,
            "currency": currency,
            "reason": trigger["reason"],
            "template": trigger["template"],
            "cart_url": link,
            "armed_at_ms": trigger["armed_at"],
            "due_at_ms": trigger["due_at"],
            "list_unsubscribe": unsubscribe,
            "list_unsubscribe_post": ONE_CLICK if unsubscribe.startswith("https://") else None,
            "recommended": [p.product_id for p in recommended],
            "recommendations_source": (
                (trigger.get("recommendations_source") or "none") if recommended else "none"
            ),
        }
        return context, metadata


def _item_view(
    item: Any, currency: str, locale: str, pattern: str, campaign: str, step: int
) -> ItemView:
    if not isinstance(item, Mapping):
        raise TypeError("each item must be an object")
    product_id = item.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        raise ValueError("item product_id must be a non-empty string")
    quantity = item.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValueError(f"item {product_id!r} quantity must be an int >= 1")
    price = item.get("price")
    name = _name(item.get("name"), product_id)
    category = item.get("category")
    if price is None:  # a viewed product whose price was never known: print none
        unit_price = line_price = ""
    else:
        unit = _to_cents(price)
        unit_price = l10n.format_money(unit, currency, locale)
        # Line price from the rounded unit price: what the customer sees adds up.
        line_price = l10n.format_money(unit * quantity, currency, locale)
    return ItemView(
        product_id=product_id,
        name=name,
        quantity=quantity,
        unit_price=unit_price,
        line_price=line_price,
        image_url=safe_image_url(item.get("image_url")),
        category=category if isinstance(category, str) else None,
        image_alt=name,
        url=product_url(pattern, product_id, campaign, step),
    )


def _name(value: object, product_id: str) -> str:
    return one_line(value) if isinstance(value, str) and value.strip() else product_id


def _recommendations(
    trigger: Mapping[str, Any], currency: str, locale: str, pattern: str, campaign: str, step: int
) -> list[ProductView]:
    """The trigger's recommended products as templates see them. A product that cannot be
    shown (no id, a price that is no number) is left out of the block, never the email."""
    raw = trigger.get("recommendations") or []
    if not isinstance(raw, list):
        return []
    shown = []
    for product in raw:
        if not isinstance(product, Mapping):
            continue
        product_id = product.get("product_id")
        if not isinstance(product_id, str) or not product_id:
            continue
        price = product.get("price")
        own = product.get("currency")
        try:
            label = (
                ""
                if price is None
                else l10n.format_money(
                    _to_cents(price), own if isinstance(own, str) and own else currency, locale
                )
            )
        except (TypeError, ValueError):
            label = ""
        name = _name(product.get("name"), product_id)
        category = product.get("category")
        shown.append(
            ProductView(
                product_id=product_id,
                name=name,
                price=label,
                image_url=safe_image_url(product.get("image_url")),
                image_alt=name,
                url=product_url(pattern, product_id, campaign, step),
                category=category if isinstance(category, str) else None,
            )
        )
    return shown


# The sample customers every template is rendered with at start-up (Renderer.check): with
# and without a first name, image, recommendations (personal and bestsellers), one item and
# several, an unknown currency, a time zone and none.
_SAMPLE_ITEMS: Final = (
    {
        "product_id": "p-1",
        "name": "Sample shoe",
        "price": 59.9,
        "quantity": 1,
        "image_url": "https://cdn.example.com/p-1.jpg",
        "category": "shoes",
    },
    {
        "product_id": "p-2",
        "name": None,
        "price": 12.5,
        "quantity": 2,
        "image_url": None,
        "category": None,
    },
)
_SAMPLE_PRODUCTS: Final = (
    {
        "product_id": "p-3",
        "name": "Sample bag",
        "price": 89.0,
        "currency": "EUR",
        "image_url": "https://cdn.example.com/p-3.jpg",
        "category": "bags",
    },
    {
        "product_id": "p-4",
        "name": None,
        "price": None,
        "currency": None,
        "image_url": None,
        "category": None,
    },
)


def sample_triggers(
    campaign: str, template: str, step: int, locale: str
) -> list[tuple[str, dict[str, Any]]]:
    """(label, trigger) pairs covering the fallbacks templates must handle."""
    base = {
        "request_id": "sample",
        "campaign": campaign,
        "step": step,
        "template": template,
        "customer_id": "sample-customer",
        "to": "sample@example.com",
        "first_name": "Sam",
        "locale": locale,
        "timezone": "Europe/Berlin",
        "cart_id": "sample-cart",
        "items": [dict(_SAMPLE_ITEMS[0])],
        "cart_value": 59.9,
        "currency": "EUR",
        "armed_at": 1_796_083_200_000,
        "due_at": 1_796_086_800_000,
        "reason": campaign,
        "recommendations": [dict(p) for p in _SAMPLE_PRODUCTS],
        "recommendations_source": "personal",
    }
    several = [dict(item) for item in _SAMPLE_ITEMS]
    return [
        ("full", base),
        (
            "no first name, several items, bestsellers, no time zone",
            {
                **base,
                "first_name": None,
                "items": several,
                "cart_value": 84.9,
                "timezone": None,
                "recommendations_source": "fallback",
            },
        ),
        (
            "no items, no recommendations, unknown currency",
            {**base, "items": [], "cart_value": 0, "currency": "XYZ", "recommendations": []},
        ),
    ]
