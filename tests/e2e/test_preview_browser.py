"""Every shipped campaign step's ``inboxflow preview`` (job/preview.py) opened in a real
headless browser: Debian's ``chromium``, driven by Playwright (never a downloaded browser;
``make test`` installs the package with apt when ``/usr/bin/chromium`` is missing, and this
test fails without it).

Both example customers (docs/examples/), each in their own language. Every request the page
makes is intercepted: the file itself loads; remote images (the emails' images live on a
CDN) get a 1x1 PNG and are recorded; a script, or anything else remote, is recorded and
aborted. Per page: no console error, no page error, no script requested or in the DOM, no
inline event handler, every image with alt text (and loaded), the heading, the customer's
first name and the product names the step shows (exact), every link absolute http(s) or
mailto and tagged ``utm_source=inboxflow`` where it leads to the shop, the unsubscribe link
of the request's List-Unsubscribe. A full-page screenshot of each goes to
``var/preview/screenshots/`` for people; the assertions are on the DOM.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from job import cli
from job import preview as preview_module
from job.config import load_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Needed on a machine whose network is closed: no QUIC, no background or component traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "preview" / "screenshots"
SHOP_HOST = "shop.example.com"
# a 1x1 light grey PNG: what every remote image of the email shows
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGO4AgAA1gDVlnXDeQAAAABJRU5ErkJggg=="
)

CUSTOMERS = {
    "en": ROOT / "docs" / "examples" / "customer-en.json",
    "de": ROOT / "docs" / "examples" / "customer-de.json",
}
FIRST_NAME = {"en": "Anna", "de": "Lena"}
MUG = '<script>alert("pwned")</script> Mug'  # p-0009 of the generator's catalogue
# (customer = language, campaign, step) -> (heading, product names the step shows)
EXPECTED: dict[tuple[str, str, int], tuple[str, list[str]]] = {
    ("en", "abandoned_cart", 1): (
        "You left something in your cart",
        ['The "Weekender" Duffel Bag', "Ærø Wool Blanket — 150×200 cm"],
    ),
    ("en", "abandoned_cart", 2): (
        "Your cart is still waiting",
        ['The "Weekender" Duffel Bag', "Ærø Wool Blanket — 150×200 cm"],
    ),
    ("en", "browse_abandonment", 1): (
        "Still thinking about these?",
        ["Portable Lamp No. 2", "Ceramic Bowl Set", "Copper Kettle Classic"],
    ),
    ("en", "welcome", 1): ("Welcome!", []),
    ("en", "welcome", 2): ("Here's what's new", []),
    ("en", "post_purchase", 1): (
        "Thank you for your order",
        ["Salt & Pepper Mill Set", "Crème Brûlée Torch Kit"],
    ),
    ("en", "post_purchase", 2): (
        "You might also like",
        ["Ceramic Bowl Set", "Copper Kettle Classic", MUG],
    ),
    ("de", "abandoned_cart", 1): (
        "Du hast etwas in deinem Warenkorb vergessen",
        ["Merino Coat Classic", "Crème Brûlée Torch Kit"],
    ),
    ("de", "abandoned_cart", 2): (
        "Dein Warenkorb wartet noch auf dich",
        ["Merino Coat Classic", "Crème Brûlée Torch Kit"],
    ),
    ("de", "browse_abandonment", 1): (
        "Denkst du noch an diese Produkte?",
        ["Magnetic Train Set", "Terracotta Trowel", "Running Sandals"],
    ),
    ("de", "welcome", 1): ("Willkommen!", []),
    ("de", "welcome", 2): ("Das ist neu", []),
    ("de", "post_purchase", 1): (
        "Vielen Dank für deine Bestellung",
        ["Suede Boots", "Folding Watering Can"],
    ),
    ("de", "post_purchase", 2): (
        "Das könnte dir auch gefallen",
        [
            "Terracotta Trowel",
            "Running Sandals",
            "Oak Planter",
            "Trail Sandals",
            "Children's Rain Boots",
        ],
    ),
}


@dataclass
class Recorder:
    """What one page load asked for and reported."""

    images: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # any other remote request (aborted)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def route(self, route) -> None:
        request = route.request
        url, kind = request.url, request.resource_type
        if kind == "script":
            self.scripts.append(url)
            route.abort()
        elif url.startswith("file:"):
            route.continue_()
        elif kind == "image" and url.startswith(("https://", "http://")):
            self.images.append(url)
            route.fulfill(status=200, content_type="image/png", body=PNG)
        else:
            self.other.append(f"{kind} {url}")
            route.abort()

    def console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def page_error(self, error) -> None:
        self.page_errors.append(str(error))


@dataclass(frozen=True)
class Rendered:
    html: Path
    request: dict


@pytest.fixture(scope="module")
def previews(tmp_path_factory) -> dict[tuple[str, str, int], Rendered]:
    """Each step rendered by the command (in-process, as ``inboxflow preview`` runs it; the
    config is loaded once)."""
    out = tmp_path_factory.mktemp("preview")
    rendered = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preview_module, "load_config", functools.cache(load_config))
        for customer, campaign, step in EXPECTED:
            argv = ["preview", "--campaign", campaign, "--step", str(step)]
            argv += ["--customer", str(CUSTOMERS[customer]), "--out", str(out)]
            assert cli.main(argv) == 0, argv
            base = out / f"{campaign}-{step}-{customer}"
            request = orjson.loads(base.with_suffix(".json").read_bytes())
            rendered[customer, campaign, step] = Rendered(base.with_suffix(".html"), request)
    return rendered


@pytest.fixture(scope="module")
def browser_page() -> Iterator[tuple[object, list[Recorder]]]:
    """One headless Chromium, one context, one page reused for every preview; the last
    recorder of the list collects what the current load does."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's chromium is missing ({CHROMIUM}): `make test` installs it "
            "(apt-get install -y chromium, as root); this test does not run without it"
        )
    from playwright.sync_api import sync_playwright

    recorders = [Recorder()]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 760, "height": 900})
        page = context.new_page()
        page.route("**/*", lambda route: recorders[-1].route(route))
        page.on("console", lambda message: recorders[-1].console(message))
        page.on("pageerror", lambda error: recorders[-1].page_error(error))
        try:
            yield page, recorders
        finally:
            context.close()
            browser.close()


@pytest.mark.parametrize("customer,campaign,step", list(EXPECTED))
def test_the_preview_in_headless_chromium(previews, browser_page, customer, campaign, step):
    page, recorders = browser_page
    rendered = previews[customer, campaign, step]
    heading, products = EXPECTED[customer, campaign, step]
    recorders.append(Recorder())
    seen = recorders[-1]
    started = time.monotonic()
    page.goto(rendered.html.resolve().as_uri(), wait_until="load")
    page.wait_for_load_state("networkidle")

    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.scripts == []
    assert seen.other == [], "the email loads something remote besides images"
    assert page.locator("script").count() == 0
    handlers = page.evaluate(
        "() => [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]"
        ".filter(a => a.name.toLowerCase().startsWith('on')).map(a => e.tagName + ' ' + a.name))"
    )
    assert handlers == []
    assert page.evaluate("() => document.documentElement.lang") == customer

    images = page.evaluate(
        "() => [...document.images].map(i => [i.getAttribute('src'), i.getAttribute('alt'),"
        " i.complete && i.naturalWidth > 0])"
    )
    for src, alt, loaded in images:
        assert alt and alt.strip(), f"image without alt text: {src}"
        assert loaded, f"image not loaded: {src}"
        assert src in seen.images
    names_with_images = {alt for _, alt, _ in images}
    for name in products:
        assert name in names_with_images, f"no image of {name!r}"

    assert page.locator("h1").inner_text().strip() == heading
    body = page.inner_text("body")
    assert FIRST_NAME[customer] in body
    for name in products:
        assert page.get_by_text(name, exact=True).count() >= 1, f"{name!r} not shown"

    unsubscribe = rendered.request["metadata"]["list_unsubscribe"]
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    assert unsubscribe in hrefs
    for href in hrefs:
        parts = urlsplit(href)
        assert parts.scheme in ("https", "http", "mailto"), f"not an absolute link: {href}"
        if parts.scheme != "mailto":
            assert parts.netloc, href
        if parts.netloc == SHOP_HOST and href != unsubscribe:
            assert parse_qs(parts.query).get("utm_source") == ["inboxflow"], href

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{campaign}-{step}-{customer}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    assert time.monotonic() - started < 15
