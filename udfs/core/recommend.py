"""Products an email recommends (a step's ``recommend: N``), chosen from the customer's own
behaviour in keyed state, as pure Python (no pyflink import).

:func:`recommend` returns up to ``k`` products and where they came from:

* ``personal``: the customer's recently viewed products (``Profile.viewed``, bounded by
  ``limits.recent_products``), never a product in the cart, already bought
  (``Profile.bought``), already shown by the email itself (its items: the cart lines, the
  order lines, the viewed products of a browse email), nor twice. Ranked, deterministically:

  1. **co-viewed**: viewed in the same session as a product the email shows. A session is a
     maximal chain of views whose consecutive view times are at most
     ``recommendations.session_gap`` apart; a shown product anchors the session of its own
     view (a shown product the customer never viewed, or whose view is no longer kept,
     anchors none);
  2. in one of the customer's **favourite categories** (``limits.favourite_categories``,
     most viewed/added/bought first): a better-ranked favourite first;
  3. any other recently viewed product.

  Within a tier the newest view comes first, then the lower ``product_id`` (equal view times
  give the same order in every run).
* ``fallback``: when nothing personal is left, the configured fallback block
  (``recommendations.fallback_file``, e.g. bestsellers) minus the same exclusions, products
  in the customer's favourite categories first (better-ranked favourite first), otherwise in
  file order.
* ``none``: ``k`` is 0, or nothing at all is left.

A short personal list is **not** topped up with fallback products: the email's heading
differs ("Picked for you" vs "Our bestsellers"), so one block never mixes both sources.

Each product is a dict ``{product_id, name, price, currency, image_url, category}`` (price a
float or None; the others a string or None). The link (``links.product_url`` with UTM
parameters) is the renderer's.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

PERSONAL: Final = "personal"
FALLBACK: Final = "fallback"
NONE: Final = "none"

_REQUIRED: Final = ("product_id", "name", "price", "image_url")
_OPTIONAL: Final = ("currency", "category")
_FIELDS: Final = frozenset(_REQUIRED + _OPTIONAL)


class ProductsError(ValueError):
    """The fallback products file is missing or holds a bad record (the message names the
    file and the record)."""


@dataclass(frozen=True)
class Product:
    """A product of the fallback block (``conf/bestsellers.json``)."""

    product_id: str
    name: str | None
    price: float | None
    currency: str | None = None
    image_url: str | None = None
    category: str | None = None


class _Viewed(Protocol):
    product_id: str
    name: str | None
    price: float | None
    image_url: str | None
    category: str | None
    currency: str | None
    at: int


class _Profile(Protocol):
    @property
    def viewed(self) -> Sequence[_Viewed]: ...
    @property
    def bought(self) -> Sequence[str]: ...


def recommend(
    profile: _Profile,
    cart: Iterable[str],
    shown: Iterable[str],
    k: int,
    session_gap_ms: int,
    favourite_categories: Sequence[str],
    fallback: Sequence[Product] = (),
) -> tuple[list[dict[str, Any]], str]:
    """Up to ``k`` products for the customer and their source (:data:`PERSONAL`,
    :data:`FALLBACK` or :data:`NONE`); ``cart`` and ``shown``: product ids (the module
    docstring has the rules)."""
    if k <= 0:
        return [], NONE
    shown_ids = set(shown)
    exclude = set(profile.bought)
    exclude.update(cart)
    exclude.update(shown_ids)
    favourite = {name: i for i, name in enumerate(favourite_categories)}
    viewed = profile.viewed
    if viewed:
        # newest first, then product id (Profile.viewed is kept newest first; sorted here
        # again so that equal view times have one order; a reversed sort is stable)
        order = sorted(viewed, key=_PRODUCT_ID)
        order.sort(key=_AT, reverse=True)
        # the tiers, each in view order: co-viewed, each favourite category, the others
        co: list[_Viewed] = []
        favourites: list[list[_Viewed]] = [[] for _ in favourite]
        others: list[_Viewed] = []

        def place(session: list[_Viewed], anchored: bool) -> None:
            if anchored:
                co.extend(session)
                return
            for v in session:
                rank = favourite.get(v.category) if v.category is not None else None
                (others if rank is None else favourites[rank]).append(v)

        # one pass over the sessions (chains of views at most session_gap_ms apart)
        session: list[_Viewed] = []
        anchored, prev = False, order[0].at
        for v in order:
            if prev - v.at > session_gap_ms:
                place(session, anchored)
                session, anchored = [], False
            prev = v.at
            pid = v.product_id
            if pid in shown_ids:
                anchored = True
            if pid in exclude:
                continue
            exclude.add(pid)  # duplicates: the newest view only
            session.append(v)
        place(session, anchored)
        for tier in favourites:
            co += tier
        co += others
        if co:
            return [_as_dict(v) for v in co[:k]], PERSONAL
    if not fallback:
        return [], NONE
    # favourite categories first (each in file order), then the others in file order
    first: list[list[Product]] = [[] for _ in favourite]
    rest: list[Product] = []
    for product in fallback:
        pid = product.product_id
        if pid in exclude:
            continue
        exclude.add(pid)
        category = product.category
        rank = favourite.get(category) if category is not None else None
        if rank is not None:
            first[rank].append(product)
        elif len(rest) < k:
            rest.append(product)
    picked = [p for tier in first for p in tier]
    picked += rest
    if not picked:
        return [], NONE
    return [_as_dict(p) for p in picked[:k]], FALLBACK


def _as_dict(p: _Viewed | Product) -> dict[str, Any]:
    """A recommended product as the trigger carries it (a viewed or a fallback product)."""
    return {
        "product_id": p.product_id,
        "name": p.name,
        "price": p.price,
        "currency": p.currency,
        "image_url": p.image_url,
        "category": p.category,
    }


_PRODUCT_ID: Final = operator.attrgetter("product_id")
_AT: Final = operator.attrgetter("at")


# --- the fallback file ----------------------------------------------------------------------


def load_products(path: Path | str) -> tuple[Product, ...]:
    """The fallback products of a JSON file: a list of records ``{product_id, name, price,
    image_url, currency?, category?}``. Raises :class:`ProductsError` (a ValueError) naming
    the file and the record (``bestsellers.json: [3].price: ...``) for anything else."""
    path = Path(path)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ProductsError(f"{path}: fallback products file not found") from None
    except OSError as exc:
        raise ProductsError(f"{path}: cannot read: {type(exc).__name__}") from None
    except orjson.JSONDecodeError as exc:
        raise ProductsError(f"{path}: not valid JSON: {exc}") from None
    return parse_products(data, str(path))


def parse_products(data: Any, where: str = "products") -> tuple[Product, ...]:
    """Checked :class:`Product` records of ``data`` (a list of mappings, see
    :func:`load_products`); errors name ``where`` and the record's position."""
    if not isinstance(data, list):
        raise ProductsError(f"{where}: expected a JSON list of products, got {type(data).__name__}")
    out: list[Product] = []
    seen: set[str] = set()
    for i, record in enumerate(data):
        at = f"{where}: [{i}]"
        if not isinstance(record, dict):
            raise ProductsError(f"{at}: expected an object, got {record!r}")
        unknown = sorted(set(record) - _FIELDS)
        if unknown:
            raise ProductsError(
                f"{at}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(_FIELDS))})"
            )
        for key in _REQUIRED:
            if record.get(key) is None:
                raise ProductsError(f"{at}.{key}: missing")
        for key in ("product_id", "name", "image_url", *_OPTIONAL):
            value = record.get(key)
            if value is not None and (type(value) is not str or not value.strip()):
                raise ProductsError(f"{at}.{key}: expected a non-empty string, got {value!r}")
        price = record["price"]
        if type(price) not in (int, float) or price < 0:
            raise ProductsError(f"{at}.price: expected a number >= 0, got {price!r}")
        if not record["image_url"].startswith(("https://", "http://")):
            raise ProductsError(
                f"{at}.image_url: expected an http(s) URL, got {record['image_url']!r}"
            )
        currency = record.get("currency")
        if currency is not None and (len(currency) != 3 or not currency.isupper()):
            raise ProductsError(
                f"{at}.currency: expected an ISO 4217 code, e.g. EUR, got {currency!r}"
            )
        pid = record["product_id"]
        if pid in seen:
            raise ProductsError(f"{at}.product_id: {pid!r} is listed twice")
        seen.add(pid)
        out.append(
            Product(
                product_id=pid,
                name=record["name"],
                price=float(price),
                currency=currency,
                image_url=record["image_url"],
                category=record.get("category"),
            )
        )
    return tuple(out)
