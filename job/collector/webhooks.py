"""Verify Stripe and Shopify webhooks and map them to inboxflow events (pure: no network,
no Kafka; :class:`CustomerLookup` reads its JSON file once, at construction).

The collector (:mod:`job.collector.app`) calls ``verify`` with the raw request body and the
signature header, then ``map`` with the verified document, and validates every mapped event
with the job's shared :class:`udfs.core.validation.EventValidator` before producing it.

Contract:

* ``verify`` raises nothing but :class:`WebhookError`; its ``message`` never holds a value
  taken from the request (safe to log and to answer with). ``map`` never raises: a signed
  but hostile body (any field missing or of the wrong type) maps to events with the
  unreadable values left out, and the shared validator rejects what is incomplete. Every
  mapped event is serializable by ``orjson`` (no integer beyond 64 bits, no NaN/Infinity).
* ``Mapped.ignored`` and ``Mapped.unmapped`` are value-free too (an event type or topic
  name is only quoted when it looks like one).

Stripe (``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``) is
checked by the official library (``stripe.WebhookSignature.verify_header``), which accepts a
header with several ``v1`` values when one matches (secret rotation). Its one exception
class covers every failure, so an ``expired`` is told from a ``bad_signature`` by checking
the header a second time without the tolerance: only a signature that is right but too old
passes then. Like the library, a timestamp in the future is not refused. A body that is not
UTF-8 cannot have been signed by Stripe (the library signs its text) and is a
``bad_signature``. The library's exception, which carries the body, is never chained to a
:class:`WebhookError`.

Stripe amounts are in the currency's minor unit (Stripe's lists of zero- and three-decimal
currencies below; all others have two decimals).

A checkout session and the PaymentIntent it created both report one payment
(``checkout.session.completed`` and ``payment_intent.succeeded``; with an asynchronous
payment method the session arrives ``unpaid`` and is ignored, and only the PaymentIntent
reports the payment). Both map to a purchase whose order id, and hence event id
(``stripe:<pi id>``), is the PaymentIntent's id, so the job's event-id deduplication keeps
one purchase whichever arrives first (identify events alike: ``stripe:identify:<pi id>``).
The job deduplicates per customer, so this holds when both resolve to the same customer id:
a PaymentIntent does not inherit the session's ``metadata`` or ``client_reference_id``, so
integrations that identify customers that way should also set
``payment_intent_data.metadata[<metadata_key>]`` (or provide a :class:`CustomerLookup`
entry), else the PaymentIntent is ``unmapped``. A session without a PaymentIntent (e.g.
nothing to pay) uses the session id.

Shopify (``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, body))``) signs the body only:
the topic and webhook-id headers are not signed. Hence:

* Expiry: the signed time is the body's ``updated_at`` (else ``created_at``): the first of
  them that is an RFC 3339 time with an offset. A body older than ``tolerance_s`` before
  ``now`` or more than ``tolerance_s`` ahead of it is ``expired``. A body with no such time
  is not expired (nothing signed to tell its age by); replays of it are still caught by the
  event ids below.
* Event ids derive from the signed body (order id; checkout token and ``updated_at``), not
  from the unsigned ``X-Shopify-Webhook-Id``: a redelivery (same body, same webhook id) is
  caught by the collector's :class:`ReplayCache`, and a replay with a forged webhook id
  passes that cache but yields the same event ids, which the job deduplicates.
* The topic header is not signed either: a captured body replayed under another topic is
  mapped as that topic. Only deliveries signed with the shop's secret can be replayed at
  all, and within the tolerance.
* ``Mapped.delivery_id`` is ``shopify:<webhook id>``, or without that header the derived
  event id itself (already ``shopify:...``; not prefixed a second time).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import stripe

MISSING_SIGNATURE: Final = "missing_signature"
BAD_SIGNATURE: Final = "bad_signature"
EXPIRED: Final = "expired"
NOT_JSON: Final = "not_json"
NOT_OBJECT: Final = "not_object"

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
STRIPE_ZERO_DECIMAL: Final = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
STRIPE_THREE_DECIMAL: Final = frozenset("BHD JOD KWD OMR TND".split())

# identify.json's traits.locale (the schema also caps it at 35 characters)
_LOCALE: Final = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_MAX_LOCALE_CHARS: Final = 35
# A type or topic name quoted in an ``ignored`` message; anything else is not quoted.
_LABEL: Final = re.compile(r"[a-z0-9_./-]{1,80}")
# RFC 3339 date-time with an offset (fraction digits beyond microseconds dropped).
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
# Integers written out as such must stay within what every JSON encoder downstream takes.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
# Epoch seconds up to 9999-12-31T23:59:59Z (the job's latest accepted timestamp).
_MAX_EPOCH_S: Final = 253_402_300_799


class WebhookError(Exception):
    """Rejected webhook request. ``status``: HTTP status (400 or 401); ``reason``: stable
    code; ``message``: safe to log (no payload values)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Mapped:
    """What one verified webhook becomes.

    ``delivery_id``: the replay-cache key (``stripe:<evt id>``, ``shopify:<webhook id>``).
    ``events``: inboxflow events to validate and produce, in order. ``ignored``: why
    nothing is produced. ``unmapped``: set (value-free) when the webhook should produce
    events but no customer id was found (the collector dead-letters the webhook).
    """

    delivery_id: str
    events: tuple[dict[str, Any], ...] = ()
    ignored: str | None = None
    unmapped: str | None = None


def _lookup_key(key: str) -> str:
    """``email:`` keys compare case-insensitively and without surrounding white space."""
    if key[:6].lower() == "email:":
        return "email:" + key[6:].strip().lower()
    return key


class CustomerLookup:
    """Provider identities -> inboxflow customer ids, from an optional JSON object file:
    ``{"stripe:cus_123": "c-1", "shopify:4567": "c-2", "email:ann@example.com": "c-3"}``
    (``email:`` keys lower-cased on load and lookup)."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self._map: dict[str, str] = {}
        for number, (key, value) in enumerate((entries or {}).items(), start=1):
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"entry {number}: key must be a non-blank string")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"entry {number}: customer id must be a non-blank string")
            normalized = _lookup_key(key)
            if self._map.get(normalized, value) != value:
                # Keys are not quoted: email keys are personal data.
                raise ValueError(
                    f"entry {number}: key equals an earlier one (email keys ignore case) "
                    "with another customer id"
                )
            self._map[normalized] = value

    @classmethod
    def from_file(cls, path: Path | str | None) -> CustomerLookup:
        """Read ``path`` (``None`` or ``""``: an empty lookup). ValueError naming the file
        and why when it cannot be read, is not a JSON object of non-blank strings, or maps
        one email (ignoring case) to two customer ids."""
        if path is None or path == "":
            return cls()
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(
                f"customer lookup file {path}: cannot be read: {exc.strerror or exc}"
            ) from None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"customer lookup file {path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            # ValueError like every other defect of the file (the documented contract).
            raise ValueError(f"customer lookup file {path}: must be a JSON object")  # noqa: TRY004
        try:
            return cls(doc)
        except ValueError as exc:
            raise ValueError(f"customer lookup file {path}: {exc}") from None

    def get(self, key: str) -> str | None:
        return self._map.get(_lookup_key(key))

    def __len__(self) -> int:
        return len(self._map)


class ReplayCache:
    """Delivery ids seen within ``ttl_s``, at most ``max_entries`` (oldest evicted first).
    Not thread-safe (the collector runs on one asyncio thread). ``now`` is passed in
    (epoch seconds); adding a key again refreshes it."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._ttl_s = float(ttl_s)
        self._max = max_entries
        self._added: OrderedDict[str, float] = OrderedDict()

    def seen(self, key: str, now: float) -> bool:
        added = self._added.get(key)
        if added is None:
            return False
        if now - added < self._ttl_s:
            return True
        del self._added[key]
        return False

    def add(self, key: str, now: float) -> None:
        added = self._added
        while added:
            oldest = next(iter(added))
            if now - added[oldest] < self._ttl_s:
                break
            del added[oldest]
        added[key] = now
        added.move_to_end(key)
        while len(added) > self._max:
            added.popitem(last=False)

    def __len__(self) -> int:
        return len(self._added)


# --- reading hostile documents ----------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A non-blank string, as it is."""
    return value if isinstance(value, str) and value.strip() else None


def _json_int(value: Any) -> int | None:
    if type(value) is int and _INT_MIN <= value <= _INT_MAX:
        return value
    return None


def _as_id(value: Any) -> str | None:
    """An id: a non-blank string as it is, or an integer (Shopify's numeric ids)."""
    if isinstance(value, str):
        return value if value.strip() else None
    number = _json_int(value)
    return None if number is None else str(number)


def _ref_id(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object's ``id``."""
    if isinstance(value, dict):
        return _text(value.get("id"))
    return _text(value)


def _finite(number: Decimal) -> float | None:
    try:
        result = float(number)
    except (ValueError, ArithmeticError):  # signalling NaN
        return None
    return result if math.isfinite(result) else None


def _decimal_amount(value: Any) -> float | None:
    """A major-unit amount written as a string ("199.00") or a number, else None."""
    try:
        if isinstance(value, str):
            return _finite(Decimal(value.strip()))
        if type(value) is int:
            return _finite(Decimal(value))
        if type(value) is float:
            return _finite(Decimal(repr(value)))
    except (ValueError, ArithmeticError):  # decimal.InvalidOperation is an ArithmeticError
        return None
    return None


def _currency(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and value.strip() else None


def _stripe_amount(amount: Any, currency: str | None) -> float | None:
    """A Stripe amount (an integer in the currency's minor unit) in major units."""
    number = _json_int(amount)
    if number is None or currency is None:
        return None
    if currency in STRIPE_ZERO_DECIMAL:
        exponent = 0
    elif currency in STRIPE_THREE_DECIMAL:
        exponent = 3
    else:
        exponent = 2
    try:
        return _finite(Decimal(number).scaleb(-exponent))
    except ArithmeticError:
        return None


def _locale(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= _MAX_LOCALE_CHARS and _LOCALE.fullmatch(value):
        return value
    return None


def _label(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) and _LABEL.fullmatch(value) else "(unreadable)"


def _epoch_seconds(value: Any) -> float | None:
    """An RFC 3339 date-time with an offset as epoch seconds, else None."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) if not zulu else timedelta()
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(-offset if sign == "-" else offset),
        )
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def _raw(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise WebhookError(401, BAD_SIGNATURE, "body is not bytes, so not signed")


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookError(400, NOT_JSON, "body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise WebhookError(400, NOT_OBJECT, "body must be a JSON object")
    return doc


def _identify(
    event_id: str | None, customer_id: str, timestamp: Any, traits: dict[str, Any]
) -> dict[str, Any]:
    return _event(event_id, "identify", customer_id, timestamp, traits=traits)


def _event(
    event_id: str | None,
    event_type: str,
    customer_id: str,
    timestamp: Any,
    *,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event; an unknown event id or timestamp is left out (the validator rejects it)."""
    event: dict[str, Any] = {}
    if event_id is not None:
        event["event_id"] = event_id
    event["event_type"] = event_type
    event["customer_id"] = customer_id
    if timestamp is not None:
        event["timestamp"] = timestamp
    if properties is not None:
        event["properties"] = properties
    if traits is not None:
        event["traits"] = traits
    if context is not None:
        event["context"] = context
    return event


def _first(*candidates: Any) -> str | None:
    for candidate in candidates:
        if candidate is not None:
            return str(candidate)
    return None


# --- Stripe -------------------------------------------------------------------------------


class StripeWebhooks:
    """Stripe webhooks: ``checkout.session.completed`` and ``payment_intent.succeeded``
    become an ``identify`` (when an email is known) and a ``purchase``."""

    def __init__(
        self,
        secret: str,
        tolerance_s: int = 300,
        metadata_key: str = "customer_id",
        lookup: CustomerLookup | None = None,
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            raise ValueError("Stripe webhook secret must be a non-blank string")
        if tolerance_s < 1:
            # The library reads 0 as "no expiry"; replay protection is not optional here.
            raise ValueError(f"Stripe tolerance_s must be >= 1, got {tolerance_s}")
        self._secret = secret
        self._tolerance_s = tolerance_s
        self._metadata_key = metadata_key
        self._lookup = lookup if lookup is not None else CustomerLookup()

    def _signed(self, payload: str, header: str, tolerance: int | None) -> bool:
        try:
            stripe.WebhookSignature.verify_header(payload, header, self._secret, tolerance)
        except stripe.SignatureVerificationError:
            return False
        except Exception:  # noqa: BLE001 - the library parsing a hostile header (e.g. TypeError comparing non-ASCII): not signed
            return False
        return True

    def verify(self, body: bytes, signature: str | None) -> dict[str, Any]:
        """The verified event document, or WebhookError (see the module docstring)."""
        if not isinstance(signature, str) or not signature.strip():
            raise WebhookError(401, MISSING_SIGNATURE, "Stripe-Signature header is missing")
        raw = _raw(body)
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookError(
                401, BAD_SIGNATURE, "body is not UTF-8, so not signed by Stripe"
            ) from None
        if not self._signed(payload, signature, self._tolerance_s):
            if self._signed(payload, signature, None):
                raise WebhookError(
                    400,
                    EXPIRED,
                    f"signature timestamp is more than {self._tolerance_s} s old",
                )
            raise WebhookError(
                401, BAD_SIGNATURE, "Stripe-Signature does not match the body and secret"
            )
        return _parse_object(raw)

    def map(self, event: dict[str, Any]) -> Mapped:
        """The events a verified Stripe event becomes (never raises)."""
        event = _obj(event)
        delivery_id = "stripe:" + (_as_id(event.get("id")) or "")
        kind = event.get("type")
        obj = _obj(_obj(event.get("data")).get("object"))
        created = _json_int(event.get("created"))
        timestamp = created * 1000 if created is not None and 0 <= created <= _MAX_EPOCH_S else None
        if kind == "checkout.session.completed":
            return self._session(delivery_id, obj, timestamp)
        if kind == "payment_intent.succeeded":
            return self._payment_intent(delivery_id, obj, timestamp)
        return Mapped(delivery_id, ignored=f"stripe event type {_label(kind)} is not mapped")

    def _from_metadata(self, metadata: Any) -> str | None:
        return _as_id(_obj(metadata).get(self._metadata_key))

    def _looked_up(self, kind: str, value: str | None) -> str | None:
        return None if value is None else self._lookup.get(f"{kind}:{value}")

    def _session(self, delivery_id: str, obj: dict[str, Any], timestamp: int | None) -> Mapped:
        if obj.get("payment_status") == "unpaid":
            return Mapped(
                delivery_id,
                ignored="checkout session unpaid: payment_intent.succeeded reports the payment",
            )
        email = _text(_obj(obj.get("customer_details")).get("email"))
        customer_id = _first(
            self._from_metadata(obj.get("metadata")),
            _as_id(obj.get("client_reference_id")),
            self._looked_up("stripe", _ref_id(obj.get("customer"))),
            self._looked_up("email", email),
        )
        if customer_id is None:
            return Mapped(
                delivery_id,
                unmapped=(
                    "checkout session without a customer id: none in the metadata, no "
                    "client_reference_id, Stripe customer and email not in the lookup"
                ),
            )
        order_id = _ref_id(obj.get("payment_intent")) or _as_id(obj.get("id"))
        amount = obj.get("amount_total")
        return self._purchase(delivery_id, customer_id, order_id, obj, amount, email, timestamp)

    def _payment_intent(
        self, delivery_id: str, obj: dict[str, Any], timestamp: int | None
    ) -> Mapped:
        email = _text(obj.get("receipt_email"))
        customer_id = _first(
            self._from_metadata(obj.get("metadata")),
            self._looked_up("stripe", _ref_id(obj.get("customer"))),
            self._looked_up("email", email),
        )
        if customer_id is None:
            return Mapped(
                delivery_id,
                unmapped=(
                    "payment intent without a customer id: none in the metadata, Stripe "
                    "customer and receipt email not in the lookup"
                ),
            )
        order_id = _as_id(obj.get("id"))
        amount = obj.get("amount_received")
        return self._purchase(delivery_id, customer_id, order_id, obj, amount, email, timestamp)

    @staticmethod
    def _purchase(
        delivery_id: str,
        customer_id: str,
        order_id: str | None,
        obj: dict[str, Any],
        amount: Any,
        email: str | None,
        timestamp: int | None,
    ) -> Mapped:
        currency = _currency(obj.get("currency"))
        properties: dict[str, Any] = {}
        if order_id is not None:
            properties["order_id"] = order_id
        revenue = _stripe_amount(amount, currency)
        if revenue is not None:
            properties["revenue"] = revenue
        if currency is not None:
            properties["currency"] = currency
        cart_id = _as_id(_obj(obj.get("metadata")).get("cart_id"))
        if cart_id is not None:
            properties["cart_id"] = cart_id
        events = []
        if email is not None:
            identify_id = None if order_id is None else f"stripe:identify:{order_id}"
            events.append(_identify(identify_id, customer_id, timestamp, {"email": email}))
        events.append(
            _event(
                None if order_id is None else f"stripe:{order_id}",
                "purchase",
                customer_id,
                timestamp,
                properties=properties,
                context={"source": "stripe"},
            )
        )
        return Mapped(delivery_id, tuple(events))


# --- Shopify ------------------------------------------------------------------------------


class ShopifyWebhooks:
    """Shopify webhooks: ``orders/create`` becomes an ``identify`` (when an email is known)
    and a ``purchase``; ``checkouts/update`` of an open checkout with lines an ``identify``
    and a ``checkout_start`` carrying the cart (which arms the abandoned-cart journey)."""

    def __init__(
        self, secret: str, tolerance_s: int = 86_400, lookup: CustomerLookup | None = None
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            raise ValueError("Shopify webhook secret must be a non-blank string")
        if tolerance_s < 1:
            raise ValueError(f"Shopify tolerance_s must be >= 1, got {tolerance_s}")
        self._secret = secret.encode("utf-8")
        self._tolerance_s = tolerance_s
        self._lookup = lookup if lookup is not None else CustomerLookup()

    def verify(
        self, body: bytes, hmac_header: str | None, now: float | None = None
    ) -> dict[str, Any]:
        """The verified body, or WebhookError. HMAC compared in constant time; expiry by
        the body's ``updated_at``/``created_at`` (see the module docstring: a body without
        a parsable time is not expired). ``now``: epoch seconds, default ``time.time()``."""
        if not isinstance(hmac_header, str) or not hmac_header.strip():
            raise WebhookError(401, MISSING_SIGNATURE, "X-Shopify-Hmac-Sha256 header is missing")
        try:
            given = base64.b64decode(hmac_header.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookError(401, BAD_SIGNATURE, "X-Shopify-Hmac-Sha256 is not base64") from None
        raw = _raw(body)
        expected = hmac.new(self._secret, raw, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, given):
            raise WebhookError(
                401, BAD_SIGNATURE, "X-Shopify-Hmac-Sha256 does not match the body and secret"
            )
        doc = _parse_object(raw)
        signed_at = _epoch_seconds(doc.get("updated_at"))
        if signed_at is None:
            signed_at = _epoch_seconds(doc.get("created_at"))
        if signed_at is not None:
            current = time.time() if now is None else now
            if abs(current - signed_at) > self._tolerance_s:
                raise WebhookError(
                    400,
                    EXPIRED,
                    f"body updated_at/created_at is more than {self._tolerance_s} s from now",
                )
        return doc

    def map(self, topic: str, webhook_id: str | None, body: dict[str, Any]) -> Mapped:
        """The events a verified Shopify webhook becomes (never raises)."""
        body = _obj(body)
        if topic == "orders/create":
            derived, mapped = self._order(body)
        elif topic == "checkouts/update":
            derived, mapped = self._checkout(body)
        else:
            fallback = _as_id(body.get("id")) or _as_id(body.get("token")) or ""
            derived = f"shopify:{topic if _LABEL.fullmatch(str(topic)) else '?'}:{fallback}"
            mapped = Mapped("", ignored=f"shopify topic {_label(topic)} is not mapped")
        delivery_id = f"shopify:{webhook_id}" if _text(webhook_id) is not None else derived
        return dataclasses.replace(mapped, delivery_id=delivery_id)

    def _customer(self, body: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
        """(customer id, email, customer object)."""
        customer = _obj(body.get("customer"))
        shopify_id = _as_id(customer.get("id"))
        email = _text(body.get("email")) or _text(customer.get("email"))
        customer_id = _first(
            None if shopify_id is None else self._lookup.get(f"shopify:{shopify_id}"),
            None if email is None else self._lookup.get(f"email:{email}"),
            shopify_id,
        )
        return customer_id, email, customer

    @staticmethod
    def _traits(email: str, customer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        traits: dict[str, Any] = {"email": email}
        first_name = _text(customer.get("first_name"))
        if first_name is not None:
            traits["first_name"] = first_name
        locale = _locale(body.get("customer_locale"))
        if locale is not None:
            traits["locale"] = locale
        consent = body.get("buyer_accepts_marketing")
        if isinstance(consent, bool):
            traits["consent"] = consent
        return traits

    @staticmethod
    def _context(body: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {"source": "shopify"}
        locale = _locale(body.get("customer_locale"))
        if locale is not None:
            context["locale"] = locale
        return context

    def _order(self, body: dict[str, Any]) -> tuple[str, Mapped]:
        order_id = _as_id(body.get("id"))
        event_id = None if order_id is None else f"shopify:order:{order_id}"
        derived = event_id or "shopify:order:"
        customer_id, email, customer = self._customer(body)
        if customer_id is None:
            return derived, Mapped(
                "", unmapped="order without a customer id: no customer, email not in the lookup"
            )
        timestamp = _text(body.get("created_at"))
        properties: dict[str, Any] = {}
        if order_id is not None:
            properties["order_id"] = order_id
        revenue = _decimal_amount(body.get("total_price"))
        if revenue is not None:
            properties["revenue"] = revenue
        currency = _currency(body.get("currency"))
        if currency is not None:
            properties["currency"] = currency
        cart_id = _as_id(body.get("checkout_token"))
        if cart_id is not None:
            properties["cart_id"] = cart_id
        properties["items"] = list(_items(body.get("line_items")))
        identify_id = None if order_id is None else f"shopify:identify:order:{order_id}"
        return derived, self._mapped(
            body, customer, email, customer_id, timestamp, identify_id,
            _event(event_id, "purchase", customer_id, timestamp, properties=properties,
                   context=self._context(body)),
        )  # fmt: skip

    def _checkout(self, body: dict[str, Any]) -> tuple[str, Mapped]:
        token = _as_id(body.get("token"))
        updated_at = _text(body.get("updated_at"))
        version = None if token is None or updated_at is None else f"{token}:{updated_at}"
        event_id = None if version is None else f"shopify:checkout:{version}"
        derived = event_id or f"shopify:checkout:{token or ''}"
        if body.get("completed_at"):
            return derived, Mapped(
                "", ignored="checkout completed: orders/create reports the purchase"
            )
        items = list(_items(body.get("line_items")))
        if not items:
            return derived, Mapped("", ignored="empty checkout")
        customer_id, email, customer = self._customer(body)
        if customer_id is None:
            return derived, Mapped(
                "",
                unmapped="checkout without a customer id: no customer, email not in the lookup",
            )
        properties: dict[str, Any] = {}
        if token is not None:
            properties["cart_id"] = token
        value = _decimal_amount(body.get("total_price"))
        if value is not None:
            properties["value"] = value
        currency = _currency(body.get("currency"))
        if currency is not None:
            properties["currency"] = currency
        properties["items"] = items
        identify_id = None if version is None else f"shopify:identify:checkout:{version}"
        return derived, self._mapped(
            body, customer, email, customer_id, updated_at, identify_id,
            _event(event_id, "checkout_start", customer_id, updated_at, properties=properties,
                   context=self._context(body)),
        )  # fmt: skip

    def _mapped(
        self,
        body: dict[str, Any],
        customer: dict[str, Any],
        email: str | None,
        customer_id: str,
        timestamp: Any,
        identify_id: str | None,
        event: dict[str, Any],
    ) -> Mapped:
        """``event``, after an identify of the buyer when an e-mail address is known."""
        if email is None:
            return Mapped("", (event,))
        traits = self._traits(email, customer, body)
        return Mapped("", (_identify(identify_id, customer_id, timestamp, traits), event))


def _items(lines: Any) -> Iterator[dict[str, Any]]:
    """Shopify line items as inboxflow items; lines with neither a product nor a variant id
    are left out, unreadable fields of the others too."""
    if not isinstance(lines, list):
        return
    for line in lines:
        if not isinstance(line, dict):
            continue
        product_id = _as_id(line.get("product_id")) or _as_id(line.get("variant_id"))
        if product_id is None:
            continue
        item: dict[str, Any] = {"product_id": product_id}
        quantity = _json_int(line.get("quantity"))
        if quantity is not None:
            item["quantity"] = quantity
        price = _decimal_amount(line.get("price"))
        if price is not None:
            item["price"] = price
        name = line.get("title")
        if isinstance(name, str):
            item["name"] = name
        yield item
