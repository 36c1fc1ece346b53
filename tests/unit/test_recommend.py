"""Recommendations (``udfs.core.recommend``): ranking, exclusions, the fallback block, and the
fallback file as the job loads it (``job.config``)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from job.config import ConfigError, load_config
from job.dev.gen import CATALOG
from tests.factories import job_yaml
from udfs.core.journey import Profile, Viewed
from udfs.core.recommend import (
    FALLBACK,
    NONE,
    PERSONAL,
    Product,
    load_products,
    parse_products,
    recommend,
)

ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000
GAP = 30 * MINUTE
T0 = 1_772_000_000_000

# what each product is: (name, category, price)
PRODUCTS = {
    "boots": ("Hiking Boots", "Shoes", 120.0),
    "scarf": ("Wool Scarf", "Outerwear", 35.0),
    "socks": ("Merino Socks", "Shoes", 15.0),
    "kettle": ("Copper Kettle", "Kitchen", 60.0),
    "mug": ("Stoneware Mug", "Kitchen", 12.0),
    "teapot": ("Glass Teapot", "Kitchen", 28.0),
    "novel": ("Paperback Novel", "Books", 9.0),
    "atlas": ("World Atlas", "Books", 45.0),
    "rake": ("Leaf Rake", "Garden", 22.0),
}


def viewed(pid: str, minute: int) -> Viewed:
    name, category, price = PRODUCTS[pid]
    image = f"https://cdn.example.com/{pid}.jpg"
    return Viewed(pid, name, price, image, category, "EUR", T0 + minute * MINUTE)


def profile(*views: tuple[str, int], bought: tuple[str, ...] = ()) -> Profile:
    """A profile with these (product, minute) views, kept newest first as the engine does."""
    ordered = sorted((viewed(pid, m) for pid, m in views), key=lambda v: -v.at)
    return Profile("c-1", T0, T0, viewed=ordered, bought=list(bought))


def ids(result: tuple[list[dict[str, Any]], str]) -> tuple[list[str], str]:
    products, source = result
    return [p["product_id"] for p in products], source


def rec(
    p: Profile,
    cart: tuple[str, ...] = (),
    shown: tuple[str, ...] = (),
    k: int = 12,
    favourites: tuple[str, ...] = (),
    fallback: tuple[Product, ...] = (),
) -> tuple[list[str], str]:
    return ids(recommend(p, cart, shown, k, GAP, favourites, fallback))


# Two sessions: A (minutes 0-20) and B (120-150): more than the 30 minute gap between them.
TWO_SESSIONS = profile(
    ("boots", 0), ("scarf", 10), ("socks", 20), ("kettle", 120), ("mug", 140), ("teapot", 150)
)


# --------------------------------------------------------------------------- personal


def test_co_viewed_in_the_shown_products_session_come_first_then_favourites():
    # the email shows the scarf (session A): boots and socks are co-viewed, ahead of the
    # newer kitchen products of the favourite category
    assert rec(TWO_SESSIONS, cart=("scarf",), shown=("scarf",), favourites=("Kitchen",)) == (
        ["socks", "boots", "teapot", "mug", "kettle"],
        PERSONAL,
    )


def test_the_session_of_the_other_shown_product_is_co_viewed_instead():
    assert rec(TWO_SESSIONS, shown=("mug",)) == (
        ["teapot", "kettle", "socks", "scarf", "boots"],
        PERSONAL,
    )


def test_shown_products_in_both_sessions_make_both_co_viewed_newest_first():
    assert rec(TWO_SESSIONS, shown=("scarf", "mug"), favourites=("Books",)) == (
        ["teapot", "kettle", "socks", "boots"],
        PERSONAL,
    )


def test_a_session_is_a_chain_of_views_each_within_the_gap_of_the_next():
    # 0, 25, 50, 75: every step is within 30 minutes, so one session although the rake is
    # 75 minutes from the novel; the atlas at 106 starts a new one (31 minutes later)
    p = profile(("novel", 0), ("scarf", 25), ("mug", 50), ("rake", 75), ("atlas", 106))
    assert rec(p, shown=("novel",)) == (["rake", "mug", "scarf", "atlas"], PERSONAL)
    # exactly the gap apart is still the same session
    p = profile(("novel", 0), ("atlas", 30))
    assert rec(p, shown=("novel",), favourites=()) == (["atlas"], PERSONAL)


def test_a_shown_product_never_viewed_anchors_no_session():
    assert rec(TWO_SESSIONS, shown=("rake",), favourites=("Shoes",)) == (
        ["socks", "boots", "teapot", "mug", "kettle", "scarf"],
        PERSONAL,
    )


def test_favourite_categories_in_their_rank_order_then_the_others_newest_first():
    p = profile(
        ("boots", 0), ("novel", 10), ("kettle", 20), ("atlas", 30), ("mug", 40), ("rake", 50)
    )
    # Books ranks above Kitchen: the older books first; Shoes and Garden are no favourites
    assert rec(p, favourites=("Books", "Kitchen")) == (
        ["atlas", "novel", "mug", "kettle", "rake", "boots"],
        PERSONAL,
    )
    assert rec(p, favourites=("Kitchen", "Books")) == (
        ["mug", "kettle", "atlas", "novel", "rake", "boots"],
        PERSONAL,
    )


def test_cart_bought_and_shown_products_are_never_recommended():
    p = profile(
        ("boots", 0), ("scarf", 10), ("socks", 20), ("kettle", 30), ("mug", 40), bought=("socks",)
    )
    # the shown boots anchor the one session: the others are co-viewed, newest first
    assert rec(p, cart=("kettle",), shown=("boots",)) == (["mug", "scarf"], PERSONAL)


def test_k_cuts_the_ranked_list():
    assert rec(TWO_SESSIONS, shown=("scarf",), favourites=("Kitchen",), k=3) == (
        ["socks", "boots", "teapot"],
        PERSONAL,
    )
    assert rec(TWO_SESSIONS, k=1) == (["teapot"], PERSONAL)


def test_equal_view_times_order_by_product_id_whatever_the_order_kept():
    views = [viewed(pid, 5) for pid in ("mug", "atlas", "teapot", "boots")]
    for seed in range(5):
        random.Random(seed).shuffle(views)
        p = Profile("c-1", T0, T0, viewed=list(views))
        assert rec(p) == (["atlas", "boots", "mug", "teapot"], PERSONAL)
        assert rec(p, favourites=("Kitchen",)) == (["mug", "teapot", "atlas", "boots"], PERSONAL)


def test_a_product_kept_twice_is_recommended_once_at_its_newest_view():
    p = Profile("c-1", T0, T0, viewed=[viewed("mug", 30), viewed("boots", 20), viewed("mug", 10)])
    assert rec(p) == (["mug", "boots"], PERSONAL)


def test_each_product_carries_name_price_currency_image_and_category():
    p = profile(("kettle", 0), ("rake", 5))
    p.viewed[0] = Viewed("rake", None, None, None, None, None, T0 + 5 * MINUTE)
    products, source = recommend(p, (), (), 3, GAP, (), ())
    assert source == PERSONAL
    assert products == [
        {
            "product_id": "rake",
            "name": None,
            "price": None,
            "currency": None,
            "image_url": None,
            "category": None,
        },
        {
            "product_id": "kettle",
            "name": "Copper Kettle",
            "price": 60.0,
            "currency": "EUR",
            "image_url": "https://cdn.example.com/kettle.jpg",
            "category": "Kitchen",
        },
    ]


def test_a_short_personal_list_is_not_topped_up_with_the_fallback():
    assert rec(profile(("mug", 0)), k=4, fallback=BESTSELLERS) == (["mug"], PERSONAL)


# --------------------------------------------------------------------------- fallback

BESTSELLERS = (
    Product("b1", "Face Oil", 31.99, "EUR", "https://cdn.example.com/b1.jpg", "Beauty"),
    Product("b2", "Cookbook", 14.99, "EUR", "https://cdn.example.com/b2.jpg", "Books"),
    Product("b3", "Pepper Mill", 75.99, "EUR", "https://cdn.example.com/b3.jpg", "Kitchen"),
    Product("b4", "Atlas", 45.99, "EUR", "https://cdn.example.com/b4.jpg", "Books"),
    Product("b5", "Planter", 47.99, "EUR", "https://cdn.example.com/b5.jpg", "Garden"),
    Product("b6", "Gift Card", 25.0, None, "https://cdn.example.com/b6.jpg", None),
)


def test_fallback_in_file_order_when_nothing_personal_is_known():
    assert rec(profile(), k=4, fallback=BESTSELLERS) == (["b1", "b2", "b3", "b4"], FALLBACK)
    products, _ = recommend(profile(), (), (), 1, GAP, (), BESTSELLERS)
    assert products == [
        {
            "product_id": "b1",
            "name": "Face Oil",
            "price": 31.99,
            "currency": "EUR",
            "image_url": "https://cdn.example.com/b1.jpg",
            "category": "Beauty",
        }
    ]


def test_fallback_without_exclusions_favourite_categories_first():
    # every viewed product is in the cart or bought: nothing personal is left
    p = profile(("mug", 0), ("boots", 5), bought=("boots", "b4"))
    assert rec(
        p, cart=("mug", "b2"), shown=("b5",), favourites=("Kitchen", "Books"), fallback=BESTSELLERS
    ) == (["b3", "b1", "b6"], FALLBACK)
    assert rec(p, cart=("mug",), favourites=("Books", "Kitchen"), fallback=BESTSELLERS) == (
        ["b2", "b3", "b1", "b5", "b6"],
        FALLBACK,
    )


def test_nothing_at_all_or_k_0_is_none():
    assert rec(TWO_SESSIONS, k=0, fallback=BESTSELLERS) == ([], NONE)
    assert rec(profile(), fallback=()) == ([], NONE)
    everything = tuple(b.product_id for b in BESTSELLERS)
    assert rec(profile(), cart=everything, fallback=BESTSELLERS) == ([], NONE)


# --------------------------------------------------------------------------- the file


def test_the_shipped_bestsellers_are_products_of_the_dev_catalog():
    products = load_products(ROOT / "conf" / "bestsellers.json")
    catalog = {p.product_id: p for p in CATALOG}
    assert len(products) >= 8
    assert len({p.category for p in products}) >= 4
    for p in products:
        known = catalog[p.product_id]
        assert (p.name, p.price, p.image_url, p.category, p.currency) == (
            known.name,
            known.price,
            known.image_url,
            known.category,
            "EUR",
        )
    assert load_config(env={}, check_template_files=False).fallback_products == products


GOOD = {
    "product_id": "p-1",
    "name": "Mug",
    "price": 12,
    "image_url": "https://cdn.example.com/p-1.jpg",
}


def test_a_record_needs_id_name_price_and_image_only():
    assert parse_products([GOOD, {**GOOD, "product_id": "p-2", "currency": "EUR"}]) == (
        Product("p-1", "Mug", 12.0, None, "https://cdn.example.com/p-1.jpg", None),
        Product("p-2", "Mug", 12.0, "EUR", "https://cdn.example.com/p-1.jpg", None),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"products": []}, "f.json: expected a JSON list of products, got dict"),
        ([GOOD, "p-2"], "f.json: [1]: expected an object, got 'p-2'"),
        ([{**GOOD, "title": "x"}], "f.json: [0]: unknown key 'title' (known keys: category, "),
        ([GOOD, {k: v for k, v in GOOD.items() if k != "name"}], "f.json: [1].name: missing"),
        ([{**GOOD, "price": None}], "f.json: [0].price: missing"),
        ([{**GOOD, "price": -1}], "f.json: [0].price: expected a number >= 0, got -1"),
        ([{**GOOD, "price": "9.99"}], "f.json: [0].price: expected a number >= 0, got '9.99'"),
        ([{**GOOD, "price": True}], "f.json: [0].price: expected a number >= 0, got True"),
        ([{**GOOD, "product_id": 7}], "f.json: [0].product_id: expected a non-empty string"),
        ([{**GOOD, "name": " "}], "f.json: [0].name: expected a non-empty string, got ' '"),
        ([{**GOOD, "image_url": "cdn/p.jpg"}], "f.json: [0].image_url: expected an http(s) URL"),
        ([{**GOOD, "currency": "eur"}], "f.json: [0].currency: expected an ISO 4217 code"),
        ([GOOD, GOOD], "f.json: [1].product_id: 'p-1' is listed twice"),
    ],
)
def test_a_bad_record_is_refused_naming_the_file_and_its_position(data, message):
    with pytest.raises(ValueError) as exc:
        parse_products(data, "f.json")
    assert str(exc.value).startswith(message)


def fallback_config(path: Path | str) -> Any:
    overrides = {"recommendations": {"fallback_file": str(path)}}
    return load_config(env={}, overrides=overrides, check_template_files=False)


def test_the_job_refuses_a_bad_fallback_file_at_start_up(tmp_path):
    bad = tmp_path / "best.json"
    bad.write_text(json.dumps([GOOD, {**GOOD, "product_id": "p-2", "price": -5}]))
    with pytest.raises(ConfigError) as exc:
        fallback_config(bad)
    assert str(exc.value) == (
        f"recommendations.fallback_file: {bad}: [1].price: expected a number >= 0, got -5"
    )
    bad.write_text("[{")
    with pytest.raises(ConfigError, match=r"best\.json: not valid JSON"):
        fallback_config(bad)
    with pytest.raises(ConfigError, match=r"missing\.json: fallback products file not found"):
        fallback_config(tmp_path / "missing.json")


def test_a_relative_fallback_file_resolves_against_the_config_file_and_empty_is_none(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps([GOOD]))
    config = tmp_path / "job.yaml"
    written = job_yaml({"clickhouse": {"enabled": False}}, tmp_path)
    written["recommendations"] = {"fallback_file": "best.json"}
    config.write_text(yaml.safe_dump(written))
    assert [
        p.product_id
        for p in load_config(config, env={}, check_template_files=False).fallback_products
    ] == ["p-1"]
    assert fallback_config("").fallback_products == ()
