"""Locales: which language an email is written in, and money, numbers and dates formatted
for it with Babel (CLDR data), never by hand.

A customer's locale comes from the ``identify`` trait ``locale`` or the event's
``context.locale``, in whatever form the shop sends it (``de-AT``, ``de_AT``, ``DE``,
``de_DE.UTF-8``). :func:`normalize_locale` reduces it to the language Babel knows (``de``);
:func:`resolve_locale` picks the first of that language, the configured default and ``en``
that the job supports.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Final
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

#: The language the templates are written in: always available, the last fallback.
SOURCE_LOCALE: Final = "en"

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
_LOCALE_TEXT = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
_NBSP: Final = "\xa0"


@functools.lru_cache(maxsize=512)
def normalize_locale(value: object) -> str | None:
    """``"de-AT"`` -> ``"de"``: the language of a locale tag Babel knows, else None.

    Accepts ``-`` or ``_`` separators, any case, and a POSIX suffix (``de_DE.UTF-8``,
    ``de_DE@euro``)."""
    if not isinstance(value, str):
        return None
    text = value.strip().split(".", 1)[0].split("@", 1)[0]
    if not _LOCALE_TEXT.fullmatch(text):
        return None
    try:
        parsed = Locale.parse(text.replace("-", "_"), sep="_")
    except (UnknownLocaleError, ValueError, TypeError):
        try:  # "de_XX": an unknown region of a known language is still German
            parsed = Locale.parse(text.replace("-", "_").split("_", 1)[0].lower())
        except (UnknownLocaleError, ValueError, TypeError):
            return None
    return parsed.language


def resolve_locale(value: object, supported: tuple[str, ...], default: str) -> str:
    """The locale an email is written in: the customer's language when supported, else the
    configured default when supported, else :data:`SOURCE_LOCALE`."""
    language = normalize_locale(value)
    if language is not None and language in supported:
        return language
    if default in supported:
        return default
    return SOURCE_LOCALE


def is_known_currency(code: object) -> bool:
    """An ISO 4217 code Babel has data for (``EUR``; not ``XYZ``, ``eur`` or ``€``)."""
    return (
        isinstance(code, str)
        and _CURRENCY_CODE.fullmatch(code) is not None
        and _known_currencies().__contains__(code)
    )


@functools.lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(babel_numbers.list_currencies())


def round_half_up(amount: float | int | Decimal, places: int) -> Decimal:
    """Half-up rounding on the decimal representation (0.125 -> 0.13; binary float rounding
    and Babel's half-even rounding would give 0.12); a zero keeps no sign."""
    value = Decimal(str(amount)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return value.copy_abs() if value.is_zero() else value


@functools.lru_cache(maxsize=8192)  # Babel takes ~25 µs a call; shop prices repeat
def format_money(amount: float | int | Decimal, currency: str, locale: str) -> str:
    """``111,99 €`` (de), ``€111.99`` (en): Babel's currency format for the locale, rounded
    half-up to the currency's own digits (JPY none). An unknown currency code prints the
    amount with 2 decimals in the locale's format, followed by the code when it looks like
    one (``1.234,50 XYZ``), else alone: never an error."""
    if is_known_currency(currency):
        digits = babel_numbers.get_currency_precision(currency)
        return babel_numbers.format_currency(
            round_half_up(amount, digits), currency, locale=locale, decimal_quantization=True
        )
    number = babel_numbers.format_decimal(
        round_half_up(amount, 2), format="#,##0.00", locale=locale, decimal_quantization=True
    )
    if isinstance(currency, str) and _CURRENCY_CODE.fullmatch(currency):
        return f"{number}{_NBSP}{currency}"
    return number


def format_number(value: int | float, locale: str) -> str:
    """``1.234`` (de), ``1,234`` (en)."""
    return babel_numbers.format_decimal(value, locale=locale)


def format_date(epoch_ms: int, zone: ZoneInfo, locale: str, fmt: str = "long") -> str:
    """The calendar date of ``epoch_ms`` in ``zone``: ``1. Dezember 2026`` (de, long),
    ``December 1, 2026`` (en, long)."""
    return _format_day(datetime.fromtimestamp(epoch_ms / 1000, tz=zone).date(), locale, fmt)


@functools.lru_cache(maxsize=4096)  # Babel takes ~40 µs a call; emails of a day share it
def _format_day(day: date, locale: str, fmt: str) -> str:
    return babel_dates.format_date(day, format=fmt, locale=locale)


def format_datetime(epoch_ms: int, zone: ZoneInfo, locale: str, fmt: str = "medium") -> str:
    """Date and time of ``epoch_ms`` in ``zone``, in the locale's ``fmt`` format."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=zone)
    return babel_dates.format_datetime(moment, format=fmt, tzinfo=zone, locale=locale)
