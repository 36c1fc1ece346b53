"""Hostile inputs for property-based tests and for real-job fuzz runs (issue 9).

Every generator here is written once against a tiny :class:`Draw` interface and runs on two
back ends:

* **Hypothesis** (``st_*`` strategies, e.g. :func:`st_record`, :func:`st_stream`): shrinking
  and example databases, used by ``tests/unit/test_fuzz.py``;
* **random.Random(seed)** (:func:`fuzzed_records`): a reproducible list of Kafka values for
  tests that cannot run Hypothesis' engine (a real job on a broker).

Raw records are built as *text*, never through ``json.dumps`` of a finished dict only, so they
can hold what a JSON library would never write: duplicate keys, ``NaN``/``Infinity`` tokens,
escapes of unpaired surrogates (``"\\ud800"``), numbers that overflow a double, 30,000 levels of
nesting. Input classes (see :data:`INPUT_CLASSES`, one ``kind`` per class):

* ``valid``: a valid event of every type in ``conf/schemas/`` with hostile text (unicode edge
  cases, markup and template injection, header injection, very long strings) in every
  free-text field and id, unknown extra keys with arbitrary JSON values, arbitrary traits on
  every event type, huge/tiny amounts, both timestamp forms; sometimes spelled with
  escapes, duplicate keys or odd (valid) white space;
* ``wrong_type``: a valid event with one field of its schemas (envelope or type schema,
  items included) given a value of a type the schema does not allow;
* ``json``: arbitrary JSON documents (objects with the envelope's keys, arrays, scalars)
  with dangerous numbers, duplicate keys and odd strings;
* ``deep``: nesting from 10 to 30,000 levels, alone or inside an event;
* ``bytes``: arbitrary bytes, and valid events broken at the byte level (invalid UTF-8,
  overlong and surrogate encodings, truncation, BOM, UTF-16, NUL bytes);
* ``oversize``: events around the size limit;
* ``broken``: valid events with a token-level defect (NaN, trailing garbage, a cut);
* big carts (:func:`big_cart`): up to 60 cart lines whose every field has the largest
  length the schema allows, for the size of the email request they lead to.

The JVM half of the job is modelled by :func:`jvm_view`: the text Python receives (Kafka
bytes decoded with U+FFFD replacement, unpaired surrogates replaced) and the key the JVM
extracts (``io.inboxflow.flink.EnvelopeExtractor``: top-level ``customer_id``, trimmed the
way ``String.strip()`` trims, "" when unreadable).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

from tests.factories import DAY, HOUR, MINUTE, SCHEMA_DIR, SECOND, T0

T = TypeVar("T")

MAX_EVENT_BYTES = 65_536
#: The wall clock the unit harness validates against (events may be up to 24 h ahead):
#: after every event time of a stream's span (see :func:`event_times`).
NOW = T0 + 40 * DAY

#: Default customer pool: plain ids, non-ASCII ones, one that differs from "c-1" only in
#: trimmed white space (same customer), and ones the JVM and Python trim differently
#: (U+00A0, U+202F: Java's String.strip() keeps them, Python's str.strip() does not, so the
#: event goes to the DLQ as key_mismatch).
CUSTOMERS: tuple[str, ...] = (
    "c-1",
    "c-2",
    "ü-3",
    "客户-4",
    "c\U0001f600-5",
    " c-1\t",
    "\u3000c-2",
    "c-1\u200b",
    "\u202ec-6",
    "c-7\x00",
    "\xa0c-1",
    "c-8\u202f",
)
PLAIN_CUSTOMERS: tuple[str, ...] = CUSTOMERS[:5]
INPUT_CLASSES: tuple[str, ...] = (
    "valid",
    "wrong_type",
    "json",
    "deep",
    "bytes",
    "oversize",
    "broken",
)


# --------------------------------------------------------------------------- draw back ends


class Draw(Protocol):
    """The randomness every generator below needs; one implementation per back end."""

    def choice(self, options: Sequence[T]) -> T: ...
    def integer(self, lo: int, hi: int) -> int: ...
    def chance(self, percent: int) -> bool: ...
    def any_text(self, max_size: int) -> str: ...
    def any_bytes(self, max_size: int) -> bytes: ...
    def rng(self) -> random.Random: ...


class HypothesisDraw:
    """Draws through Hypothesis (inside ``@st.composite``): shrinkable choices."""

    _TEXT = st.characters(codec=None, exclude_categories=())  # surrogates included

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]):
        self._draw = draw

    def choice(self, options: Sequence[T]) -> T:
        return self._draw(st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def chance(self, percent: int) -> bool:
        return self._draw(st.integers(0, 99)) < percent

    def any_text(self, max_size: int) -> str:
        return self._draw(st.text(self._TEXT, max_size=max_size))

    def any_bytes(self, max_size: int) -> bytes:
        return self._draw(st.binary(max_size=max_size))

    def rng(self) -> random.Random:
        # bulk decisions (per character escapes) from one drawn seed: few Hypothesis choices
        return random.Random(self._draw(st.integers(0, 2**32 - 1)))


class RandomDraw:
    """Draws from ``random.Random(seed)``: reproducible without Hypothesis' engine."""

    def __init__(self, rng: random.Random):
        self._rng = rng

    def choice(self, options: Sequence[T]) -> T:
        return options[self._rng.randrange(len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return self._rng.randint(lo, hi)

    def chance(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent

    def any_text(self, max_size: int) -> str:
        size = self._rng.randint(0, max_size)
        return "".join(_random_char(self._rng) for _ in range(size))

    def any_bytes(self, max_size: int) -> bytes:
        return self._rng.randbytes(self._rng.randint(0, max_size))

    def rng(self) -> random.Random:
        return random.Random(self._rng.getrandbits(32))


_CHAR_RANGES = (  # (weight, lo, hi)
    (40, 0x20, 0x7E),
    (8, 0x00, 0x1F),
    (8, 0x7F, 0xFF),
    (16, 0x100, 0xD7FF),
    (6, 0xD800, 0xDFFF),
    (8, 0xE000, 0xFFFF),
    (10, 0x10000, 0x10FFFF),
    (4, 0x300, 0x36F),
)


def _random_char(rng: random.Random) -> str:
    pick = rng.randrange(sum(w for w, _, _ in _CHAR_RANGES))
    for weight, lo, hi in _CHAR_RANGES:
        if pick < weight:
            return chr(rng.randint(lo, hi))
        pick -= weight
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- hostile text

HOSTILE_ATOMS: tuple[str, ...] = (
    # control characters, white space the JVM and Python disagree on, invisible characters
    "\x00",
    "\x01",
    "\x08",
    "\t",
    "\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1b[31m",
    "\x1c",
    "\x1f",
    "\x7f",
    "\x85",
    "\x9f",
    "\xa0",
    "\xad",
    "\u034f",
    "\u061c",
    "\u180e",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2028",
    "\u2029",
    "\u202f",
    "\u2060",
    "\u3000",
    "\ufeff",
    "\ufffd",
    "\ufffe",
    "\uffff",
    # bidirectional controls (RTL marks and overrides)
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u202eoxt.exe",
    # unpaired surrogates (as escapes in ASCII-escaped documents, raw characters otherwise)
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\udc00\ud800",
    "\ud83d",
    "x\ude00",
    # astral, combining, case-mapping oddities, scripts, digits
    "\U0001f600",
    "\U0001f469\u200d\U0001f4bb",
    "\U0001f1fa\U0001f1f8",
    "\U0001d54f",
    "\U000e0041",
    "\U0010ffff",
    "\U000f0000",
    "e\u0301",
    "Z\u0351\u0352\u0353\u0354\u0355",
    "\u0301",
    "İ",
    "ı",
    "ß",
    "ſ",
    "ﬀ",
    "Ω",
    "Å",
    "ŉ",
    "ǅ",
    "٢٠٢٦",
    "𝟘",
    "①",
    "مرحبا",
    "שלום",
    "日本語",
    "한국어",
    "ไทย",
    "हिन्दी",
    # injection: markup, templates, headers, URLs, SQL, format strings, JSON-ish text
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "</title><script>",
    "&lt;&amp;&#x3C;",
    "{{ 7*7 }}",
    "{{ config.items() }}",
    "{% raw %}",
    "{#",
    "}}",
    "${jndi:ldap://x/a}",
    "%s%n%x",
    "' OR '1'='1",
    "\"; DROP TABLE x; --",
    "\\",
    "\"",
    "'",
    "`",
    "../../../etc/passwd",
    "\r\nBcc: victim@example.com",
    "\nSubject: x",
    "javascript:alert(1)",
    "data:text/html,<script>",
    "?a=1&b=2#frag",
    "%00",
    "%0d%0a",
    "\\u0000",
    "\\ud800",
    "null",
    "NaN",
    "Infinity",
    "-0",
    "1e400",
    "true",
    "{}",
    "[]",
    "\t\n ",
    " ",
)
_WORDS = ("Mug", "sku-1", "Alice", "cart", "Ünïcödé", "x", "0", "shop", "naïve café")
LONG_LENGTHS = (
    100,
    127,
    128,
    129,
    255,
    256,
    511,
    512,
    513,
    1024,
    1025,
    2048,
    2049,
    10_000,
    33_000,
    65_536,
    70_000,
)


def hostile_text(d: Draw, max_len: int | None = None) -> str:
    """A string biased to what breaks text handling (see :data:`HOSTILE_ATOMS`)."""
    shape = d.integer(0, 9)
    if shape <= 3:
        text = d.choice(HOSTILE_ATOMS)
    elif shape <= 6:
        text = "".join(d.choice(HOSTILE_ATOMS + _WORDS) for _ in range(d.integer(1, 5)))
    elif shape == 7:
        text = d.any_text(40)
    else:  # very long: one atom repeated
        atom = d.choice(
            ("x", "é", "\U0001d54f", "\u0301", "<b>", "\u202e", "\x00", "\ud800", "a b")
        )
        length = d.choice(
            LONG_LENGTHS
            if max_len is None
            else tuple(n for n in LONG_LENGTHS if n <= max_len) or (max_len,)
        )
        text = (atom * (length // len(atom) + 1))[:length]
    return text if max_len is None else text[:max_len]


def _drop_surrogates(text: str) -> str:
    return "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)


# --------------------------------------------------------------------------- JSON as text


@dataclass(frozen=True)
class Raw:
    """A token written verbatim into the document (``NaN``, ``1e400``, garbage)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object written with exactly these members, in order: duplicate keys allowed."""

    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Style:
    """How one document is spelled: string escapes and the white space between tokens."""

    escape: str  # "raw" | "ascii" | "mixed"
    item_sep: str
    key_sep: str
    rng: random.Random


def draw_style(d: Draw) -> Style:
    escape = d.choice(("raw", "raw", "ascii", "mixed"))
    item_sep = d.choice((",", ", ", ",\n  ", " ,\t", ",\r\n"))
    key_sep = d.choice((":", ": ", " : ", ":\n"))
    return Style(escape, item_sep, key_sep, d.rng())


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def string_literal(text: str, style: Style) -> str:
    """``text`` as a JSON string literal. ``raw`` keeps every other character as is (an
    unpaired surrogate stays a raw character, not encodable as UTF-8); ``ascii`` escapes
    all non-ASCII (surrogates become ``\\udXXX`` escapes, valid JSON syntax); ``mixed``
    escapes characters at random, in either hex case, sometimes ``\\/``."""
    if style.escape == "raw":
        return json.dumps(text, ensure_ascii=False)
    if style.escape == "ascii":
        return json.dumps(text)
    rng = style.rng
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES and (code >= 0x20 or rng.random() < 0.5):
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or rng.random() < 0.3:
            if code > 0xFFFF:
                code -= 0x10000
                units = (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
            else:
                units = (code,)
            fmt = "\\u{:04x}" if rng.random() < 0.5 else "\\u{:04X}"
            out.extend(fmt.format(u) for u in units)
        elif ch == "/" and rng.random() < 0.5:
            out.append("\\/")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_json_text(value: Any, style: Style) -> str:
    """Serialize Python values, :class:`Raw` tokens and :class:`Pairs` objects."""
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)  # NaN / Infinity tokens for non-finite floats
    if isinstance(value, str):
        return string_literal(value, style)
    if isinstance(value, list | tuple):
        return "[" + style.item_sep.join(to_json_text(v, style) for v in value) + "]"
    items = value.items if isinstance(value, Pairs) else tuple(value.items())
    return (
        "{"
        + style.item_sep.join(
            string_literal(k, style) + style.key_sep + to_json_text(v, style) for k, v in items
        )
        + "}"
    )


NUMBER_TOKENS: tuple[str, ...] = (
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    "-0.0",
    "1e2",
    "1E+2",
    "1e-2",
    "2.0",
    "10000",
    "10001",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "100000000000000000000000000000",
    "1e308",
    "1.7976931348623157e308",
    "1e309",
    "1e400",
    "-1e400",
    "5e-324",
    "1e-400",
    "2.2250738585072014e-308",
    "0.1",
    "123456789.123456789",
    "999999999.995",
    "1000000000",
    "1000000000.0000001",
    "9" * 400,
    "9" * 5000,
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "+1",
    "01",
    ".5",
    "1.",
    "0x10",
    "1_000",
    "١",
)


def number_token(d: Draw) -> Raw:
    if d.chance(60):
        return Raw(d.choice(NUMBER_TOKENS))
    if d.chance(50):
        return Raw(str(d.integer(-(2**70), 2**70)))
    return Raw(repr(d.integer(-(10**6), 10**6) / d.choice((1, 3, 7, 1000, 1e-300, 1e300))))


_KEY_POOL = (
    "event_id",
    "event_type",
    "customer_id",
    "timestamp",
    "properties",
    "traits",
    "context",
    "price",
    "items",
    "email",
    "name",
    "",
    " ",
    "\ud800",
    "a",
    "a",
    "customer_id\x00",
    "ＣＵＳＴＯＭＥＲ_ID",
)


def json_value(d: Draw, depth: int = 3) -> Any:
    """An arbitrary JSON value (with :class:`Raw` number tokens, duplicate keys)."""
    shape = d.integer(0, 9 if depth > 0 else 5)
    if shape == 0:
        return d.choice((None, True, False))
    if shape <= 2:
        return number_token(d)
    if shape <= 5:
        return hostile_text(d) if d.chance(70) else d.choice(_WORDS)
    if shape <= 7:
        return [json_value(d, depth - 1) for _ in range(d.integer(0, 4))]
    return Pairs(
        tuple(
            (d.choice(_KEY_POOL) if d.chance(60) else hostile_text(d, 20), json_value(d, depth - 1))
            for _ in range(d.integer(0, 5))
        )
    )


def plain_json_value(d: Draw, depth: int = 2) -> Any:
    """A JSON value a strict parser accepts (no Raw tokens), with hostile strings."""
    shape = d.integer(0, 8 if depth > 0 else 5)
    if shape == 0:
        return d.choice((None, True, False))
    if shape <= 2:
        return d.choice(
            (0, -1, 2**63 - 1, 2**64, 10**30, 0.5, -0.0, 5e-324, 1e308, d.integer(-(2**40), 2**40))
        )
    if shape <= 5:
        return _drop_surrogates(hostile_text(d, 300))
    if shape <= 6:
        return [plain_json_value(d, depth - 1) for _ in range(d.integer(0, 3))]
    return {
        _drop_surrogates(hostile_text(d, 20)): plain_json_value(d, depth - 1)
        for _ in range(d.integer(0, 3))
    }


# --------------------------------------------------------------------------- event builders


def timestamp_value(d: Draw, ms: int) -> Any:
    """``ms`` as epoch ms or as RFC 3339 in some offset, fraction and case."""
    if d.chance(50):
        return ms
    # the accepted extremes: ±18:00 (java.time's range; beyond it is bad_timestamp)
    offset = timedelta(minutes=d.choice((0, 0, 60, -300, 330, 14 * 60, -18 * 60, 18 * 60)))
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        local = moment.astimezone(timezone(offset))
    except OverflowError:  # beyond year 9999 in this offset: epoch ms it is
        return ms
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    frac = d.choice(("", "ms", "us", "ns"))
    if frac == "ms":
        text += f".{local.microsecond // 1000:03d}"
    elif frac == "us":
        text += f".{local.microsecond:06d}"
    elif frac == "ns":
        text += f".{local.microsecond:06d}000"
    elif local.microsecond:
        text += f".{local.microsecond // 1000:03d}"
    if offset == timedelta(0) and d.chance(60):
        text += d.choice(("Z", "z"))
    else:
        total = int(offset.total_seconds() // 60)
        sign = "-" if total < 0 else "+"
        text += f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
    if d.chance(20):
        text = text.replace("T", "t")
    return text


class Hostile:
    """Field values for valid events: hostile, but within what the schemas allow (JSON
    Schema counts code points; ids need a non-space character; no unpaired surrogates,
    which the validator rejects by design, unless ``surrogates``)."""

    def __init__(self, d: Draw, surrogates: bool):
        self.d = d
        self.surrogates = surrogates

    def _clean(self, text: str) -> str:
        return text if self.surrogates else _drop_surrogates(text)

    def text(self, max_len: int) -> str:
        d = self.d
        if d.chance(25):
            return d.choice(_WORDS)[:max_len]
        return self._clean(hostile_text(d, max_len))

    def ident(self, pool: Sequence[str]) -> str:
        """An id: mostly from ``pool`` (so carts and products meet), else hostile, 1..128
        characters with one that no side trims."""
        d = self.d
        if d.chance(70):
            return d.choice(pool)
        core = self._clean(hostile_text(d, 120))
        return (core + d.choice(("x", "7", "é", "\U0001f600")))[-128:]

    def amount(self) -> Any:
        d = self.d
        return d.choice(
            (
                0,
                0.0,
                -0.0,
                5e-324,
                1e-9,
                0.005,
                0.01,
                0.125,
                0.125 + 1e-12,
                1.005,
                19.99,
                59.9,
                1234.5,
                999999999.995,
                1e9,
                10**9,
                d.integer(0, 10**9),
                d.integer(0, 10**6) / 100,
            )
        )

    def quantity(self) -> Any:
        return self.d.choice((1, 2, 3, 2.0, 7, 99, 10000, self.d.integer(1, 10000)))

    def currency(self) -> str:
        return self.d.choice(("EUR", "usd", "Gbp", "JPY", "xxx", "CHF"))

    def url(self, max_len: int = 2048) -> str:
        d = self.d
        base = d.choice(("https://", "http://", "https://shop.example.com/"))
        return (base + self.text(max_len))[:max_len]

    def email(self) -> str:
        """Matches identify.json's pattern for both regex dialects: no '@' or white space
        in the parts, no '.' in the labels."""

        def part(max_len: int, dots: bool) -> str:
            text = self.text(max_len)
            # not isspace() alone: the schema's regex (ECMA 262) also counts U+FEFF as \s
            keep = "".join(
                ch
                for ch in text
                if ch != "@" and not ch.isspace() and ch != "\ufeff" and (dots or ch != ".")
            )
            return keep or "x"

        email = f"{part(60, True)}@{part(60, False)}.{part(20, False)}"
        if self.d.chance(20):
            email = self.d.choice((" ", "\t", "\u3000")) + email.upper() + " "
        return email[-254:] if len(email) > 254 else email


BAD_EMAILS = (
    "a@b@c.de",
    "a@",
    "@b.de",
    "@",
    "a\ufeff@b.de",
    "a@b.de\u2028",
    "a\x00@b.de",
    "a\x7f@b.de",
    "\u3000a@b.de",
    "a b@c.de",
    "<a@b.de>",
    "a@b.de\r\nBcc: x@y.z",
    "a\u200b@b.de",
    "a\xa0@b.de",
    "a@\u202eed.b",
    "ä@ü.de",
    "x",
    "a@b\x85.de",
)
PRODUCTS = ("sku-1", "sku-2", "sku-3", "sku-\U0001f600", "sku <b>4</b>")
CARTS = ("cart-1", "cart-2", "cart-\u202e3")
ORDERS = ("o-1", "o-2", "o-3")


def _items(h: Hostile, max_items: int = 3) -> list[dict]:
    d = h.d
    out = []
    for _ in range(d.integer(0, max_items)):
        item: dict[str, Any] = {"product_id": h.ident(PRODUCTS)}
        for key, make in (
            ("quantity", h.quantity),
            ("price", h.amount),
            ("currency", h.currency),
            ("name", lambda: h.text(512)),
            ("category", lambda: h.text(512)),
        ):
            if d.chance(60):
                item[key] = make()
        out.append(item)
    return out


def _maybe(d: Draw, props: dict, key: str, make: Callable[[], Any], percent: int = 60) -> None:
    if d.chance(percent):
        props[key] = make()


def event_properties(h: Hostile, event_type: str) -> dict[str, Any] | None:
    """The ``properties`` of a valid event of ``event_type`` (None: left out)."""
    d = h.d
    p: dict[str, Any] = {}
    if event_type == "cart_add":
        p["product_id"] = h.ident(PRODUCTS)
        p["price"] = h.amount()
        _maybe(d, p, "quantity", h.quantity)
        _maybe(d, p, "name", lambda: h.text(512), 80)
        _maybe(d, p, "category", lambda: h.text(512))
        _maybe(d, p, "currency", h.currency)
        _maybe(d, p, "cart_id", lambda: h.ident(CARTS), 80)
        _maybe(d, p, "image_url", h.url)
    elif event_type == "cart_remove":
        p["product_id"] = h.ident(PRODUCTS)
        _maybe(d, p, "quantity", h.quantity, 40)
        _maybe(d, p, "cart_id", lambda: h.ident(CARTS))
    elif event_type == "checkout_start":
        _maybe(d, p, "cart_id", lambda: h.ident(CARTS))
        _maybe(d, p, "value", h.amount)
        _maybe(d, p, "currency", h.currency)
        _maybe(d, p, "items", lambda: _items(h))
    elif event_type == "purchase":
        p["order_id"] = h.ident(ORDERS)
        p["revenue"] = h.amount()
        _maybe(d, p, "currency", h.currency)
        _maybe(d, p, "cart_id", lambda: h.ident(CARTS), 70)
        _maybe(d, p, "items", lambda: _items(h))
    elif event_type == "product_view":
        p["product_id"] = h.ident(PRODUCTS)
        for key, make in (
            ("name", lambda: h.text(512)),
            ("category", lambda: h.text(512)),
            ("price", h.amount),
            ("currency", h.currency),
            ("image_url", h.url),
            ("url", h.url),
        ):
            _maybe(d, p, key, make, 50)
    elif event_type == "page_view":
        for key, limit in (("url", 2048), ("path", 2048), ("title", 512), ("referrer", 2048)):
            _maybe(d, p, key, lambda limit=limit: h.text(limit), 50)
    elif event_type == "unsubscribe":
        _maybe(d, p, "list", lambda: h.text(128), 40)
        _maybe(d, p, "reason", lambda: h.text(512), 40)
    elif event_type == "identify" and d.chance(70):
        return None
    if d.chance(25):  # keys the type schema does not define: allowed, must be harmless
        defined = {
            path[1]
            for path, _ in fields_by_type()[event_type]
            if path[0] == "properties" and len(path) == 2
        }
        extra = [
            k
            for k in ("color", "category", "name", "extra", "nested", "price_text", "\u202ekey")
            if k not in defined
        ]
        for _ in range(d.integer(1, 3)):
            p[d.choice(extra)] = plain_json_value(d)
    return p


def event_traits(h: Hostile, event_type: str) -> dict[str, Any] | None:
    d = h.d
    if event_type != "identify":
        # no type schema constrains traits of other events: anything JSON goes, and
        # strings that almost look like email addresses
        if not d.chance(15):
            return None
        return {
            d.choice(("email", "first_name", "locale", "timezone", "vip")): d.choice(BAD_EMAILS)
            if d.chance(40)
            else plain_json_value(d)
            for _ in range(d.integer(1, 3))
        }
    t: dict[str, Any] = {}
    _maybe(d, t, "email", h.email, 80)
    _maybe(d, t, "first_name", lambda: h.text(128), 70)
    _maybe(d, t, "last_name", lambda: h.text(128), 40)
    _maybe(
        d,
        t,
        "locale",
        lambda: d.choice(("en", "de-DE", "pt_BR", "zh-Hant-TW", "EN", "fil-PH-x1y2z3")),
        40,
    )
    _maybe(
        d,
        t,
        "timezone",
        lambda: d.choice(("Europe/Berlin", "UTC", "Etc/GMT+5", "America/Argentina/Buenos_Aires")),
        40,
    )
    _maybe(
        d,
        t,
        "consent",
        lambda: d.choice((True, False, {}, {"email": True, "sms": False}, {"\u202e": True})),
        30,
    )
    return t


def event_context(h: Hostile) -> dict[str, Any] | None:
    d = h.d
    if d.chance(50):
        return None
    c: dict[str, Any] = {}
    _maybe(d, c, "page", lambda: d.choice(({"url": h.url()}, h.text(300), {})), 40)
    _maybe(d, c, "user_agent", lambda: h.text(1024), 40)
    _maybe(d, c, "campaign", lambda: d.choice(({"name": h.text(64)}, h.text(64))), 30)
    _maybe(d, c, "ip", lambda: d.choice(("127.0.0.1", "::1", "fe80::1%eth0", h.text(64))), 30)
    _maybe(d, c, "locale", lambda: h.text(35), 30)
    return c


EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        p.stem
        for p in SCHEMA_DIR.glob("*.json")
        if p.name not in ("envelope.json", "email_request.json")
    )
)


def valid_event(
    d: Draw,
    customer: str,
    ts: int,
    *,
    event_type: str | None = None,
    surrogates: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A valid event (as a dict): hostile text in every free-text field, within the
    schemas. ``surrogates``: free text may hold unpaired surrogates (then the event is
    rejected as ``unpaired_surrogate`` once spelled with escapes)."""
    h = Hostile(d, surrogates)
    kind = event_type or d.choice(EVENT_TYPES + ("cart_add", "cart_add", "identify", "purchase"))
    doc: dict[str, Any] = {
        # a small pool now and then: redelivered duplicates
        "event_id": event_id
        or (
            d.choice(tuple(f"e-{i}" for i in range(20)))
            if d.chance(10)
            else h.ident((f"e-{d.integer(0, 10**9)}",))
        ),
        "event_type": kind,
        "customer_id": customer,
        "timestamp": timestamp_value(d, ts),
    }
    for name, section in (
        ("properties", event_properties(h, kind)),
        ("traits", event_traits(h, kind)),
        ("context", event_context(h)),
    ):
        if section is not None:
            doc[name] = section
    if d.chance(10):
        doc[d.choice(("anonymous_id", "version", "_meta"))] = plain_json_value(d)
    return doc


def spell(d: Draw, doc: dict[str, Any]) -> str:
    """One JSON text for ``doc``: random escapes and white space, sometimes a duplicate key
    whose last value is the real one (still the same event)."""
    items = list(doc.items())
    if d.chance(15):
        real = d.integer(0, len(items) - 1)
        # a decoy member first; the real one after it wins (JSON parsers keep the last)
        items.insert(d.integer(0, real), (items[real][0], plain_json_value(d, 1)))
    text = to_json_text(Pairs(tuple(items)), draw_style(d))
    if d.chance(10):
        text = d.choice((" ", "\n", "\t", "\r\n")) + text + d.choice(("", " ", "\n"))
    return text


# --------------------------------------------------------------------------- wrong types


def _resolve(schema: dict, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        merged = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **merged}
    return node


def _types(node: Any) -> frozenset[str] | None:
    t = node.get("type") if isinstance(node, dict) else None
    if t is None:
        return None
    return frozenset([t] if isinstance(t, str) else t)


def _walk(fields: dict[tuple, frozenset], root: dict, node: Any, path: tuple) -> None:
    node = _resolve(root, node)
    types = _types(node)
    if types is not None and path:
        fields[path] = fields.get(path, types) & types
    if not isinstance(node, dict):
        return
    for key, sub in (node.get("properties") or {}).items():
        _walk(fields, root, sub, (*path, key))
    if isinstance(node.get("items"), dict):
        _walk(fields, root, node["items"], (*path, 0))


def schema_fields(schema_dir: Path = SCHEMA_DIR) -> dict[str, tuple[tuple[tuple, frozenset], ...]]:
    """For every event type: (path, allowed JSON types) of every typed field of the
    envelope and the type schema (both apply), ``items`` lines as path element 0."""
    envelope = json.loads((schema_dir / "envelope.json").read_text())
    out: dict[str, tuple[tuple[tuple, frozenset], ...]] = {}
    for kind in EVENT_TYPES:
        schema = json.loads((schema_dir / f"{kind}.json").read_text())
        fields: dict[tuple, frozenset] = {}
        _walk(fields, envelope, envelope, ())
        _walk(fields, schema, schema, ())
        out[kind] = tuple(sorted(fields.items(), key=lambda kv: [str(p) for p in kv[0]]))
    return out


WRONG_VALUES: dict[str, tuple[Any, ...]] = {
    "null": (None,),
    "boolean": (True, False),
    "integer": (0, -1, 7, 2**63, 10**30),
    "number": (1.5, -0.25, 1e-300, 1e300),
    "string": ("", "x", "12", "2026-01-05T08:00:00Z"),
    "array": ([], [1], ["x", None]),
    "object": ({}, {"a": 1}, {"price": 1}),
}


def wrong_values(allowed: frozenset[str]) -> tuple[Any, ...]:
    """JSON values none of whose types ``allowed`` admits ("number" admits integers)."""
    out: list[Any] = []
    for name, values in WRONG_VALUES.items():
        if name in allowed or (name == "integer" and "number" in allowed):
            continue
        out.extend(values)
    return tuple(out)


def plain_event(event_type: str, customer: str = "c-1", ts: int = T0) -> dict[str, Any]:
    """A small valid event of ``event_type`` that has every section and one item, so that
    every schema path exists (the base for :func:`with_value`)."""
    item = {
        "product_id": "sku-1",
        "quantity": 1,
        "price": 1.5,
        "currency": "EUR",
        "name": "Mug",
        "category": "kitchen",
    }
    props: dict[str, dict[str, Any]] = {
        "cart_add": {
            "product_id": "sku-1",
            "price": 1.5,
            "quantity": 1,
            "name": "Mug",
            "category": "kitchen",
            "currency": "EUR",
            "cart_id": "cart-1",
            "image_url": "https://img.example/1.png",
        },
        "cart_remove": {"product_id": "sku-1", "quantity": 1, "cart_id": "cart-1"},
        "checkout_start": {"cart_id": "cart-1", "value": 1.5, "currency": "EUR", "items": [item]},
        "purchase": {
            "order_id": "o-1",
            "revenue": 1.5,
            "currency": "EUR",
            "cart_id": "cart-1",
            "items": [item],
        },
        "product_view": {
            "product_id": "sku-1",
            "name": "Mug",
            "category": "kitchen",
            "price": 1.5,
            "currency": "EUR",
            "image_url": "https://i.example/",
            "url": "https://shop.example.com/p/1",
        },
        "page_view": {
            "url": "https://shop.example.com/",
            "path": "/",
            "title": "Shop",
            "referrer": "https://search.example/",
        },
        "unsubscribe": {"list": "news", "reason": "too many"},
        "identify": {},
    }
    traits = (
        {
            "email": "alice@example.com",
            "first_name": "Alice",
            "last_name": "Smith",
            "locale": "en",
            "timezone": "UTC",
            "consent": {"email": True},
        }
        if event_type == "identify"
        else {}
    )
    return {
        "event_id": "e-1",
        "event_type": event_type,
        "customer_id": customer,
        "timestamp": ts,
        "context": {
            "page": {"url": "https://shop.example.com/"},
            "user_agent": "UA",
            "campaign": "spring",
            "ip": "127.0.0.1",
            "locale": "en",
        },
        "properties": dict(props.get(event_type, {})),
        "traits": traits,
    }


def with_value(doc: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``value`` at ``path`` (missing objects created)."""
    doc = json.loads(json.dumps(doc))
    target: Any = doc
    for part in path[:-1]:
        if isinstance(part, int):
            target = target[part]
        else:
            target = target.setdefault(part, {})
    target[path[-1]] = value
    return doc


_FIELDS: dict[str, tuple[tuple[tuple, frozenset], ...]] | None = None


def fields_by_type() -> dict[str, tuple[tuple[tuple, frozenset], ...]]:
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = schema_fields()
    return _FIELDS


def wrong_type_event(d: Draw, customer: str, ts: int) -> dict[str, Any]:
    kind = d.choice(EVENT_TYPES)
    path, allowed = d.choice(fields_by_type()[kind])
    doc = with_value(plain_event(kind, customer, ts), path, d.choice(wrong_values(allowed)))
    doc["event_id"] = doc["event_id"] if path == ("event_id",) else f"w-{d.integer(0, 99)}"
    return doc


# --------------------------------------------------------------------------- raw records


def deep_text(d: Draw) -> str:
    depth = d.choice((10, 100, 500, 998, 999, 1000, 1001, 1023, 1024, 1025, 3000, 30_000))
    shape = d.choice(("array", "object", "mixed"))
    if shape == "array":
        nested = "[" * depth + "]" * depth
    elif shape == "object":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = '[{"a":' * (depth // 2) + "null" + "}]" * (depth // 2)
    return nested


def byte_mutation(d: Draw, data: bytes) -> bytes:
    bad = (
        b"\xff",
        b"\xfe",
        b"\xc3",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
        b"\xef\xbb\xbf",
        b"\x00",
        b"\xc3\x28",
        b"\xe2\x82",
    )
    what = d.integer(0, 5)
    pos = d.integer(0, len(data))
    if what == 0:
        return data[:pos]
    if what == 1:
        return data[:pos] + d.choice(bad) + data[pos:]
    if what == 2 and data:
        i = min(pos, len(data) - 1)
        return data[:i] + bytes([data[i] ^ (1 << d.integer(0, 7))]) + data[i + 1 :]
    if what == 3:
        return d.choice((b"\xef\xbb\xbf", b"\xff\xfe", b"\x00")) + data
    if what == 4:
        text = data.decode("utf-8", "surrogatepass")
        try:
            return text.encode(
                d.choice(("utf-16", "utf-16-be", "utf-32", "latin-1")), "surrogatepass"
            )
        except UnicodeError:  # latin-1 cannot hold the text
            return data[::-1]
    return d.any_bytes(300)


@dataclass(frozen=True)
class Record:
    """One raw record: ``value`` as a producer would send it (str may hold raw unpaired
    surrogates, as a Java producer's String could), ``kind`` one of INPUT_CLASSES."""

    kind: str
    value: str | bytes


def record(d: Draw, customers: Sequence[str], ts: int) -> Record:
    """One hostile record for a customer of ``customers`` around event time ``ts``."""
    customer = d.choice(customers)
    pick = d.integer(0, 99)
    if pick < 45:
        doc = valid_event(d, customer, ts, surrogates=d.chance(15))
        return Record("valid", spell(d, doc))
    if pick < 60:
        return Record("wrong_type", spell(d, wrong_type_event(d, customer, ts)))
    if pick < 70:
        value = json_value(d, 3)
        if d.chance(50):  # an object with the envelope's keys, arbitrary values
            value = Pairs(
                tuple(
                    (k, json_value(d, 2) if d.chance(50) else v)
                    for k, v in valid_event(d, customer, ts).items()
                )
            )
        return Record("json", to_json_text(value, draw_style(d)))
    if pick < 76:
        nested = deep_text(d)
        if d.chance(50):
            return Record("deep", nested)
        doc = valid_event(d, customer, ts)
        items = list(doc.items())
        items.insert(d.integer(0, len(items)), ("nested", Raw(nested)))
        return Record("deep", to_json_text(Pairs(tuple(items)), draw_style(d)))
    if pick < 88:
        if d.chance(30):
            return Record("bytes", d.any_bytes(200))
        base = spell(d, valid_event(d, customer, ts)).encode("utf-8", "surrogatepass")
        return Record("bytes", byte_mutation(d, base))
    if pick < 92:
        doc = valid_event(d, customer, ts)
        doc["context"] = {"pad": ""}
        compact = Style("raw", ",", ":", random.Random(0))
        size = len(to_json_text(doc, compact).encode("utf-8", "surrogatepass"))
        pad_char = d.choice(("x", "é", "\U0001f600"))
        room = MAX_EVENT_BYTES + d.choice((-1, 0, 1, 2, 5000)) - size
        doc["context"]["pad"] = pad_char * max(0, room // len(pad_char.encode()))
        return Record("oversize", to_json_text(doc, compact))
    text = spell(d, valid_event(d, customer, ts))
    defect = d.integer(0, 4)
    if defect == 0:
        text = text.replace(":", ": NaN,", 1) if d.chance(50) else text[:-1] + ',"x":Infinity}'
    elif defect == 1:
        text += d.choice((" x", "{}", text, "\x00", ",", "\u00a0"))
    elif defect == 2:
        text = text[: d.integer(0, len(text))]
    elif defect == 3:
        text = text.replace('"', "'")
    else:
        text = d.choice(
            (
                "",
                " ",
                "null",
                "[]",
                "42",
                '"str"',
                "true",
                "{}",
                "\ufeff{}",
                "/* c */{}",
                "{,}",
                '{"a":1,}',
            )
        )
    return Record("broken", text)


def big_cart(customer: str, lines: int, atom: str, start: int = T0) -> list[str]:
    """A customer with an email and ``lines`` cart lines of distinct products, each with
    the longest fields the schema allows, made of the one character ``atom`` (one that
    escaping makes longer, or 4 bytes in UTF-8), then an event 2 h later that makes step 1
    due: the largest email requests valid events can ask for."""
    out = [
        json.dumps(
            {
                "event_id": "big-0",
                "event_type": "identify",
                "customer_id": customer,
                "timestamp": start,
                "traits": {"email": "big@example.com", "first_name": atom * 128},
            }
        )
    ]
    for i in range(lines):
        out.append(
            json.dumps(
                {
                    "event_id": f"big-{i + 1}",
                    "event_type": "cart_add",
                    "customer_id": customer,
                    "timestamp": start + i + 1,
                    "properties": {
                        "product_id": (f"{i:04d}" + atom * 124)[:128],
                        "price": 999.99,
                        "quantity": 10000,
                        "currency": "EUR",
                        "cart_id": "big",
                        "name": atom * 512,
                        "category": atom * 512,
                        "image_url": "https://" + atom * 2040,
                    },
                },
                ensure_ascii=False,
            )
        )
    out.append(
        json.dumps(
            {
                "event_id": "big-end",
                "event_type": "page_view",
                "customer_id": customer,
                "timestamp": start + lines + 2 * HOUR,
            }
        )
    )
    return out


def as_kafka_value(value: str | bytes) -> bytes:
    """What a producer puts on the wire: UTF-8, unpaired surrogates included (as the
    invalid 3-byte sequences a lenient encoder writes)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- the JVM's view

_JAVA_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
)
_JACKSON_WS = " \t\r\n"
_JACKSON_MAX_DEPTH = 1000  # StreamReadConstraints of the shaded Jackson 2.15
_JACKSON_MAX_NUMBER = 1000
_SURROGATE = re.compile("[\ud800-\udfff]")


def java_strip(text: str) -> str:
    """``String.strip()``: Character.isWhitespace at both ends (not U+00A0, U+2007, U+202F,
    U+0085, which Python's str.strip() removes)."""
    start, end = 0, len(text)
    while start < end and text[start] in _JAVA_WHITESPACE:
        start += 1
    while end > start and text[end - 1] in _JAVA_WHITESPACE:
        end -= 1
    return text[start:end]


def _unpaired(text: str) -> bool:
    # Python str holds code points: a surrogate code point is always unpaired here
    return _SURROGATE.search(text) is not None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(strict=True, parse_constant=_no_constants)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JACKSON_WS:
        i += 1
    return i


def _check_value_limits(text: str, start: int, depth: int) -> None:
    """Raise where Jackson would, before Python parses the value at ``start``: nesting
    deeper than 1000 (counting the ``depth`` levels around it), a number longer than 1000
    characters. Only brackets, strings and number characters are looked at."""
    in_string = escaped = False
    number = 0
    level = 0
    for ch in itertools.islice(text, start, None):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if level == 0:
                    return
            continue
        if ch in "0123456789+-.eE":
            number += 1
            if number > _JACKSON_MAX_NUMBER:
                raise ValueError("number too long")
            continue
        if number and level == 0:
            return
        number = 0
        if ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            if depth + level > _JACKSON_MAX_DEPTH:
                raise ValueError("too deep")
        elif ch in "]}":
            level -= 1
            if level <= 0:
                return
        elif level == 0 and ch not in _JACKSON_WS:
            return  # a literal (true, null, ...) or garbage: Python decides


def _raw_decode(text: str, i: int) -> tuple[Any, int]:
    """``raw_decode`` with room for the 1000 levels Jackson allows (the C scanner counts
    against the interpreter's recursion limit)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * _JACKSON_MAX_DEPTH)
    try:
        return _DECODER.raw_decode(text, i)
    finally:
        sys.setrecursionlimit(limit)


def jvm_key(text: str) -> str:
    """The key ``EnvelopeExtractor.envelope`` gives ``text``: the top-level ``customer_id``
    (last one wins; a non-string value gives ""), stripped as Java strips, "" if it holds
    an unpaired surrogate. Reading stops at the first syntax error, keeping what was read;
    object and array values are skipped whole."""
    key = ""
    try:
        i = _skip_ws(text, 0)
        if not text.startswith("{", i):
            return ""
        i += 1
        depth = 1
        while True:
            i = _skip_ws(text, i)
            if not text.startswith('"', i):
                break  # "}" or a syntax error: the loop ends either way
            name, i = json.decoder.scanstring(text, i + 1, True)
            i = _skip_ws(text, i)
            if not text.startswith(":", i):
                break
            i = _skip_ws(text, i + 1)
            _check_value_limits(text, i, depth)
            value, end = _raw_decode(text, i)
            if name == "customer_id":
                key = java_strip(value) if isinstance(value, str) else ""
            i = _skip_ws(text, end)
            if text.startswith(",", i):
                i += 1
                continue
            break
    except (ValueError, RecursionError, IndexError):
        pass  # keep what was read
    return "" if _unpaired(key) else key


def jvm_view(value: str | bytes) -> tuple[str, str]:
    """(key, text) as the Python customer function receives a record: bytes decoded with
    U+FFFD replacement (``new String(bytes, UTF_8)``); a str is taken as the UTF-16 code
    units of a Java String (a high and a low surrogate in a row form one character, every
    other surrogate becomes U+FFFD, as ``EnvelopeExtractor`` replaces them); a leading byte
    order mark dropped; the key from :func:`jvm_key`. (Java replaces some invalid byte
    sequences with fewer U+FFFD than Python does; tests that need the exact text use the
    JVM itself, ``tests/integration/envelope.py``.)"""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    elif _SURROGATE.search(value):
        text = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    else:
        text = value
    text = text.removeprefix("\ufeff")  # a byte order mark is dropped
    return jvm_key(text), text


# --------------------------------------------------------------------------- streams


#: Event time beyond which no event is accepted (9999-12-31T23:59:59.999Z, also far in the
#: future of any wall clock) and the lower bound the validator accepts (2000-01-01).
MAX_TS = 253_402_300_799_999
MIN_TS = 946_684_800_000
SPAN = 30 * DAY


def event_times(
    d: Draw, n: int, start: int = T0, span: int = SPAN, now: int | None = None
) -> list[int]:
    """Event times of a stream within ``[start, start + span)``: mostly forward in steps
    that make reminders come due, sometimes back (out of order, late), wrapping around at
    the end of the span; rarely far off (year 2000 or 9999, just outside the accepted range,
    and, when ``now`` is given, right at the future limit ``now + 1 d``)."""
    clock, out = 0, []
    far = (MAX_TS, MAX_TS + 1, MIN_TS, MIN_TS - 1)
    if now is not None:
        far += (now + DAY, now + DAY + 1)
    for _ in range(n):
        clock += d.choice(
            (0, SECOND, MINUTE, 10 * MINUTE, 30 * MINUTE, HOUR, HOUR + 1, 2 * HOUR, 25 * HOUR)
        )
        jitter = d.choice((0, 0, 0, -MINUTE, -10 * MINUTE, -3 * HOUR))
        ts = start + (clock % span) + jitter
        if d.chance(3):
            ts = d.choice(far)
        out.append(ts)
    return out


def stream(
    d: Draw,
    n: int,
    customers: Sequence[str] = CUSTOMERS,
    start: int = T0,
    span: int = SPAN,
    now: int | None = None,
) -> list[Record]:
    return [record(d, customers, ts) for ts in event_times(d, n, start, span, now)]


def fuzzed_records(
    seed: int, n: int, customers: Sequence[str] = CUSTOMERS, start: int = T0, span: int = SPAN
) -> list[bytes]:
    """``n`` hostile Kafka values drawn from ``random.Random(seed)``: the same list for the
    same arguments on every run (no Hypothesis engine). Customer ids come from
    ``customers`` (pass ids of a scripted story so that some records hit its customers);
    event times lie in ``[start, start + span)`` (pass the story's time range so that valid
    fuzzed events do not move the watermark past it), except about 3 % at the edges of the
    accepted range (year 2000, year 9999: rejected as future by any wall clock, so no
    watermark moves). About half are valid events; the rest must end in the DLQ with a
    known reason."""
    d = RandomDraw(random.Random(seed))
    return [as_kafka_value(r.value) for r in stream(d, n, customers, start, span)]


# --------------------------------------------------------------------------- strategies


@st.composite
def st_record(draw: Any, customers: Sequence[str] = CUSTOMERS, ts: int = T0) -> Record:
    return record(HypothesisDraw(draw), customers, ts)


@st.composite
def st_stream(draw: Any, max_size: int = 30, customers: Sequence[str] = CUSTOMERS) -> list[Record]:
    d = HypothesisDraw(draw)
    # a few customers per stream, so that each one sees enough events for a journey
    first = d.integer(0, len(customers) - 1)
    pool = [customers[(first + i * 5) % len(customers)] for i in range(d.integer(1, 3))]
    return stream(d, d.integer(1, max_size), pool, now=NOW)


@st.composite
def st_valid_event(
    draw: Any, customers: Sequence[str] = PLAIN_CUSTOMERS, event_type: str | None = None
) -> tuple[dict[str, Any], str]:
    """(doc, text): a valid event without unpaired surrogates, and one spelling of it."""
    d = HypothesisDraw(draw)
    doc = valid_event(d, d.choice(customers), T0 + d.integer(0, DAY), event_type=event_type)
    return doc, spell(d, doc)


@st.composite
def st_json_text(draw: Any) -> str:
    """An arbitrary JSON-like document as text (may be invalid JSON on purpose)."""
    d = HypothesisDraw(draw)
    return to_json_text(json_value(d, 4), draw_style(d))


@st.composite
def st_wrong_type_event(draw: Any) -> str:
    d = HypothesisDraw(draw)
    return spell(d, wrong_type_event(d, d.choice(PLAIN_CUSTOMERS), T0))


@st.composite
def st_hostile_text(draw: Any, max_len: int | None = None) -> str:
    return hostile_text(HypothesisDraw(draw), max_len)


st_bytes = st.one_of(st.binary(max_size=400), st_record().map(lambda r: as_kafka_value(r.value)))


@st.composite
def st_big_cart(draw: Any, max_lines: int = 60) -> list[str]:
    d = HypothesisDraw(draw)
    atom = d.choice(('"', "\U0001d54f", "<", "&", "é", "x", "\u202e"))
    return big_cart(d.choice(PLAIN_CUSTOMERS), d.integer(1, max_lines), atom)
