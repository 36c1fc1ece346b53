"""Render journey triggers into email requests (pure Python, no pyflink).

A trigger (built by the customer function) names a template base ``X``; ``X`` maps to
three files in the template directory: ``X.subject.j2`` (plain text, one line),
``X.html.j2`` (HTML, autoescaped) and ``X.txt.j2`` (plain text, not escaped).

Templates are edited by marketers and fed with untrusted event data (product names,
first names, image URLs), so they run in Jinja2's immutable sandbox with
``StrictUndefined``; a ``None`` reaching the output is an error too. Every value a
template can see is prepared here with an explicit fallback, so a typo in a template
fails loudly instead of sending an email with a hole in it.

Variables available to templates:

=================  ==========================================================
``first_name``     the customer's first name, or ``"there"`` ("Hi there,")
``has_first_name`` whether a real first name was known (for subjects)
``items``          list of :class:`ItemView` (name falls back to product id)
``item_count``     total quantity over all items
``total``          formatted cart value, e.g. ``"EUR 119.80"``
``currency``       currency code, ``"USD"`` when the trigger has none
``cart_url``       "Return to your cart" link with UTM parameters
``locale``         the customer's locale, ``"en"`` when unknown
``campaign``       campaign name, e.g. ``"abandoned_cart"``
``step``           step number (1-based)
``subject``        the rendered subject (html/txt only)
=================  ==========================================================
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from udfs.core.instant import iso_ms

log = logging.getLogger(__name__)

#: Used when a trigger carries no currency. The cart schema makes currency optional and
#: the shop's catalogue default is not known here; USD is the most common default of
#: storefront platforms, and the code is always printed next to the amount, so a wrong
#: guess is visible rather than silently misleading.
DEFAULT_CURRENCY = "USD"
#: Used when the customer's locale is unknown; the shipped templates are English.
DEFAULT_LOCALE = "en"
#: Greeting fallback: "Hi there,".
DEFAULT_FIRST_NAME = "there"

UTM_SOURCE = "inboxflow"
TEMPLATE_PARTS = ("subject", "html", "txt")

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_CENTS = Decimal("0.01")
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


@dataclass(frozen=True, slots=True)
class ItemView:
    """One cart line as templates see it; every field is non-None except image_url."""

    product_id: str
    name: str  # the item's name, or its product id when the name is missing
    quantity: int
    unit_price: str  # "EUR 59.90"
    line_price: str  # rounded unit price x quantity
    image_url: str | None  # only http(s) URLs, anything else (javascript:, data:) dropped
    category: str | None


_ITEM_FIELDS: Final = frozenset(field.name for field in fields(ItemView))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with a shortcut for the lookup templates make most: a
    field of an :class:`ItemView` (a dozen per rendered email). The sandbox would look the
    field up and then run its safety checks (no ``_`` prefix, not an internal attribute of
    a function/type/frame, not a mutating method of a list/dict/set), all of which pass
    for a field holding a str, int or None; the shortcut returns the same value without
    them. Everything else goes through the sandbox unchanged."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is ItemView and attribute in _ITEM_FIELDS:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


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
    head, tail = _cart_url_frame(base_url)
    # urlencode(params, quote_via=quote, safe="") spelled out for these parameters: quote
    # (not quote_plus) with safe="", so "/", "&", "=", "+", "#" in ids are encoded.
    first = f"cart_id={_quote(cart_id)}" if cart_id else f"customer_id={_quote(customer_id)}"
    return (
        f"{head}{first}&utm_source={_UTM_SOURCE_QUOTED}&utm_medium=email"
        f"&utm_campaign={_quote(campaign)}&utm_content={_quote(f'step{step}')}{tail}"
    )


def _quote(value: object) -> str:
    # urlencode's treatment of a value: bytes quoted as they are, anything else as str().
    return quote(value if isinstance(value, bytes) else str(value), safe="")


_UTM_SOURCE_QUOTED: Final = _quote(UTM_SOURCE)


@functools.lru_cache(maxsize=16)
def _cart_url_frame(base_url: str) -> tuple[str, str]:
    """The cart url before and after its parameters: ``urlunsplit`` of the split base url
    with the query in the middle, cut where the query goes (it appends ``?query`` and
    ``#fragment`` last, after everything else); any query of the base url comes first."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"cart base url must be an absolute http(s) url, got {base_url!r}")
    head = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + "?"
    if parts.query:
        head = f"{head}{parts.query}&"
    return head, f"#{parts.fragment}" if parts.fragment else ""


def format_money(amount: float | Decimal, currency: str) -> str:
    """``"EUR 1,234.50"``: currency code, thousands separator, exactly 2 decimals.

    Half-up rounding on the decimal representation, so 0.125 gives 0.13 (binary float
    rounding would give 0.12).
    """
    return f"{currency} {_to_cents(amount):,.2f}"


def _to_cents(amount: object) -> Decimal:  # any value: checked here, TypeError if no number
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
        raise TypeError(f"amount must be a number, got {type(amount).__name__}")
    if isinstance(amount, float) and not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount!r}")
    try:
        # str() first: Decimal(59.9) would carry the binary float error into the result.
        cents = Decimal(str(amount)).quantize(_CENTS, rounding=ROUND_HALF_UP)
    except InvalidOperation as exc:
        raise ValueError(f"amount cannot be formatted: {amount!r}") from exc
    # A zero keeps its sign: a price of -0.0 (which the schemas' "minimum": 0 admits) printed
    # as "EUR -0.00", and so did -0.004. Found by fuzzing (issue 9).
    return cents.copy_abs() if cents.is_zero() else cents


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


class Renderer:
    """Renders triggers into email requests with sandboxed, cached Jinja2 templates.

    Invariants: rendering is a pure function of (trigger, emitted_at_ms) and the
    template files; compiled templates are cached for the renderer's lifetime (edits on
    disk need a restart, checked by :meth:`missing_templates` at start-up); only
    ``*.html.j2`` is autoescaped; every failure is a :class:`TemplateError`.
    """

    def __init__(self, template_dir: Path, cart_base_url: str) -> None:
        self.template_dir = Path(template_dir)
        if not self.template_dir.is_dir():
            raise TemplateError(f"template directory does not exist: {self.template_dir}")
        cart_url(cart_base_url, None, "probe", "probe", 1)  # fail at start-up on a bad url
        self.cart_base_url = cart_base_url
        self._env = _Sandbox(
            loader=jinja2.FileSystemLoader(str(self.template_dir)),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            finalize=_refuse_none,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # no stat() per render; our own cache holds them anyway
        )
        # What Template.render puts under the variables: templates are loaded without
        # globals of their own and the environment's are not changed after this.
        self._globals = dict(self._env.globals)
        self._compiled: dict[str, _TemplateSet] = {}

    # -- templates -------------------------------------------------------------------

    def missing_templates(self, names: Iterable[str]) -> list[str]:
        """Base names (sorted, unique) whose three files are not all present and compilable.

        Logs the precise problem (file name and error) for each; meant for job start-up.
        """
        missing: set[str] = set()
        for name in names:
            try:
                self._templates(name)
            except TemplateError as exc:
                log.error("template %r unusable: %s", name, exc)
                missing.add(name)
        return sorted(missing)

    def _templates(self, name: str) -> _TemplateSet:
        cached = self._compiled.get(name)
        if cached is not None:
            return cached
        if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
            raise TemplateError(f"invalid template name {name!r}")
        loaded = []
        for part in TEMPLATE_PARTS:
            file_name = f"{name}.{part}.j2"
            try:
                loaded.append(self._env.get_template(file_name))
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(
                    f"missing template file {file_name} in {self.template_dir}"
                ) from exc
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"syntax error in {file_name} line {exc.lineno}: {exc.message}"
                ) from exc
        for template in loaded:
            # Its globals are the environment's, as a ChainMap that each render copies into
            # a set, key by key in Python; a plain dict of the same items (the environment's
            # globals do not change after __init__) makes that a fast copy.
            template.globals = dict(template.globals)
        result = _TemplateSet(*loaded)
        self._compiled[name] = result
        return result

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
        try:
            templates = self._templates(template)  # type: ignore[arg-type]
        except TemplateError as exc:
            raise fail(str(exc)) from exc

        try:
            # What Template.render does, with the template variables merged into the
            # globals once per email instead of once per template.
            variables = {**self._globals, **context}
            subject = one_line(self._render(templates.subject, variables))
            variables["subject"] = subject
            html = self._render(templates.html, variables)
            text = self._render(templates.text, variables)
        except jinja2.sandbox.SecurityError as exc:
            raise fail(f"sandbox violation: {exc}") from exc
        except (jinja2.TemplateError, TemplateError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from exc
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
            "locale": context["locale"],
            "trigger_event_time": iso_ms(trigger["due_at"]),
            "emitted_at": iso_ms(emitted_at_ms),
            "metadata": metadata,
        }

    def _render(self, template: jinja2.Template, variables: dict[str, Any]) -> str:
        """``template.render(context)``, given the globals and ``context`` merged as the
        render would merge them (``variables``): the context is built on that dict (which
        rendering does not change) instead of a copy, and the output joined the same way;
        an exception is re-raised through the environment as ``render`` does it."""
        try:
            return self._env.concat(
                template.root_render_func(template.new_context(variables, shared=True))
            )
        except Exception:  # noqa: BLE001 - re-raised (traceback rewritten), as render does
            self._env.handle_exception()

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

        first_name = trigger.get("first_name")
        first_name = one_line(first_name) if isinstance(first_name, str) else ""
        currency = trigger.get("currency")
        currency = (
            currency.strip().upper()
            if isinstance(currency, str) and currency.strip()
            else DEFAULT_CURRENCY
        )
        locale = trigger.get("locale")
        locale = locale.strip() if isinstance(locale, str) and locale.strip() else DEFAULT_LOCALE

        raw_items = trigger.get("items")
        if not isinstance(raw_items, list):
            raise TypeError("items must be a list")
        items = [_item_view(item, currency) for item in raw_items]
        cart_value = trigger.get("cart_value")
        total = format_money(cart_value, currency)  # type: ignore[arg-type]
        link = cart_url(
            self.cart_base_url,
            cart_id,
            trigger["customer_id"],
            trigger["campaign"],
            step,
        )

        context = {
            "first_name": first_name or DEFAULT_FIRST_NAME,
            "has_first_name": bool(first_name),
            "items": items,
            "item_count": sum(item.quantity for item in items),
            "total": total,
            "currency": currency,
            "cart_url": link,
            "locale": locale,
            "campaign": trigger["campaign"],
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
        }
        return context, metadata


def _item_view(item: Any, currency: str) -> ItemView:
    if not isinstance(item, Mapping):
        raise TypeError("each item must be an object")
    product_id = item.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        raise ValueError("item product_id must be a non-empty string")
    quantity = item.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValueError(f"item {product_id!r} quantity must be an int >= 1")
    price = item.get("price")
    unit = _to_cents(price)  # already rounded: formatted as is (format_money would round again)
    name = item.get("name")
    name = name if isinstance(name, str) and name.strip() else product_id
    category = item.get("category")
    return ItemView(
        product_id=product_id,
        name=name,
        quantity=quantity,
        unit_price=f"{currency} {unit:,.2f}",
        # Line price from the rounded unit price: what the customer sees adds up.
        line_price=format_money(unit * quantity, currency),
        image_url=safe_image_url(item.get("image_url")),
        category=category if isinstance(category, str) else None,
    )
