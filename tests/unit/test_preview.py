"""``inboxflow preview`` (job/preview.py): every step of every shipped campaign rendered for
both example customers (docs/examples/) in English and German, run in-process through
``job.cli.main`` as the command line runs it; the request it writes equals what the job's
renderer returns for the trigger of the same events applied directly to the journey engine;
every input error ends with exit code 2 and one line; the README's commands run exactly as
written."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import webbrowser
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from job import cli
from job import preview as preview_module
from job.config import load_config, render_settings
from job.pipeline import journey_settings
from udfs.core.journey import CustomerLogic, CustomerState, preview_trigger
from udfs.core.render import Renderer
from udfs.core.validation import EventValidator, Invalid

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
CUSTOMERS = {"en": EXAMPLES / "customer-en.json", "de": EXAMPLES / "customer-de.json"}
FIRST_NAME = {"en": "Anna", "de": "Lena"}
ADDRESS = {"en": "anna.smith@example.com", "de": "lena.huber@example.org"}
MUG = '<script>alert("pwned")</script> Mug'  # p-0009 of the generator's catalogue

# What each step must show, exactly as the example files name the products.
SHOWN: dict[tuple[str, str, int], list[str]] = {
    ("en", "abandoned_cart", 1): ['The "Weekender" Duffel Bag', "Ærø Wool Blanket — 150×200 cm"],
    ("en", "abandoned_cart", 2): ['The "Weekender" Duffel Bag', "Ærø Wool Blanket — 150×200 cm"],
    ("en", "browse_abandonment", 1): [
        "Portable Lamp No. 2",
        "Ceramic Bowl Set",
        "Copper Kettle Classic",
    ],
    ("en", "welcome", 1): [],
    ("en", "welcome", 2): [],
    ("en", "post_purchase", 1): ["Salt & Pepper Mill Set", "Crème Brûlée Torch Kit"],
    ("en", "post_purchase", 2): ["Ceramic Bowl Set", "Copper Kettle Classic", MUG],
    ("de", "abandoned_cart", 1): ["Merino Coat Classic", "Crème Brûlée Torch Kit"],
    ("de", "abandoned_cart", 2): ["Merino Coat Classic", "Crème Brûlée Torch Kit"],
    ("de", "browse_abandonment", 1): ["Magnetic Train Set", "Terracotta Trowel", "Running Sandals"],
    ("de", "welcome", 1): [],
    ("de", "welcome", 2): [],
    ("de", "post_purchase", 1): ["Suede Boots", "Folding Watering Can"],
    ("de", "post_purchase", 2): [
        "Terracotta Trowel",
        "Running Sandals",
        "Oak Planter",
        "Trail Sandals",
        "Children's Rain Boots",
    ],
}
STEPS = sorted({(c, s) for _, c, s in SHOWN})
# A price each step shows, formatted by Babel for the locale of the email:
# (customer, campaign, step) -> (amount, currency of the example file).
PRICED: dict[tuple[str, str, int], str] = {
    ("en", "abandoned_cart", 1): "245.99",
    ("en", "abandoned_cart", 2): "245.99",
    ("en", "browse_abandonment", 1): "28.99",
    ("en", "post_purchase", 1): "75.99",
    ("en", "post_purchase", 2): "22.99",
    ("de", "abandoned_cart", 1): "223.99",
    ("de", "abandoned_cart", 2): "223.99",
    ("de", "browse_abandonment", 1): "45.99",
    ("de", "post_purchase", 1): "178.99",
    ("de", "post_purchase", 2): "104.99",
}
CURRENCY = {"en": "GBP", "de": "EUR"}


def money(amount: str, currency: str, locale: str) -> str:
    """How the email writes the amount, spelled out here (not computed by Babel)."""
    symbol = {"GBP": "£", "EUR": "€"}[currency]
    if locale == "en":
        return f"{symbol}{amount}"
    return f"{amount.replace('.', ',')}\xa0{symbol}"


class _Page(HTMLParser):
    """The text of an HTML document (entities decoded) and its start tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def renderer(cfg):
    return Renderer(render_settings(cfg))


@pytest.fixture(autouse=True)
def config_once(monkeypatch):
    """The command loads its config as it always does, but each file once per module:
    compiling and checking every template in every locale takes most of a second."""
    monkeypatch.setattr(preview_module, "load_config", _load_config_once)


@functools.cache
def _load_config_once(path: Path):
    return load_config(path)


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["preview", *args])
    out, err = capsys.readouterr()
    return code, out, err


def direct_request(cfg, renderer, customer, campaign: str, step: int, locale: str | None):
    """The request for the same events without job/preview.py: validated, applied in time
    order to the journey engine, the trigger from preview_trigger, rendered by the job's
    renderer at the newest event's time."""
    validator = EventValidator(cfg.schema_dir, cfg.limits.max_event_bytes, 10**15)
    events = []
    for doc in json.loads(CUSTOMERS[customer].read_text()):
        event = validator.validate(json.dumps(doc), 0)
        assert not isinstance(event, Invalid), event
        events.append(event)
    events.sort(key=lambda e: e["timestamp"])
    settings = journey_settings(cfg)
    logic, state = CustomerLogic(settings), CustomerState()
    for event in events:
        logic.on_event(state, event, -(2**63))
    now = events[-1]["timestamp"]
    trigger = preview_trigger(settings, state, campaign, step, now)
    if locale is not None:
        trigger["locale"] = locale
    return renderer.render(trigger, now)


# --- every step, both customers, both languages -----------------------------------------------


@pytest.mark.parametrize("campaign,step", STEPS)
@pytest.mark.parametrize("customer", ["en", "de"])
@pytest.mark.parametrize("language", ["en", "de"])
def test_every_step_renders_for_both_customers_in_both_languages(
    cfg, renderer, tmp_path, capsys, customer, campaign, step, language
):
    own = language == customer
    args = ["--campaign", campaign, "--step", str(step), "--customer", str(CUSTOMERS[customer])]
    args += ["--out", str(tmp_path)]
    if not own:
        args += ["--locale", {"en": "en-US", "de": "de-AT"}[language]]
    code, out, err = run(args, capsys)
    assert (code, err) == (0, ""), err

    base = tmp_path / f"{campaign}-{step}-{language}"
    html_file, text_file, json_file = (base.with_suffix(s) for s in (".html", ".txt", ".json"))
    request = json.loads(json_file.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (html_file, text_file, json_file)
    )
    assert out.splitlines() == [
        f"subject: {request['subject']}",
        f"html:    {html_file}",
        f"text:    {text_file}",
        f"request: {json_file}",
    ]
    assert request["subject"].strip()
    assert html_file.read_text() == request["html"]
    assert text_file.read_text() == request["text"]
    assert (request["campaign"], request["step"], request["locale"]) == (campaign, step, language)
    assert request["to"] == ADDRESS[customer]
    assert request["metadata"]["list_unsubscribe"]

    page = parse(request["html"])
    text = "".join(page.text)
    (html_tag,) = [attrs for tag, attrs in page.tags if tag == "html"]
    assert html_tag.get("lang") == language
    assert not [tag for tag, _ in page.tags if tag == "script"]
    assert FIRST_NAME[customer] in text
    assert FIRST_NAME[customer] in request["text"]
    for name in SHOWN[customer, campaign, step]:
        assert name in text, (name, text)
        assert name in request["text"], name
    if (customer, campaign, step) in PRICED:
        price = money(PRICED[customer, campaign, step], CURRENCY[customer], language)
        assert price in text, (price, text)
        assert price in request["text"]

    # the same code path: the renderer's request for the events applied directly
    expected = direct_request(cfg, renderer, customer, campaign, step, None if own else args[-1])
    assert request == expected


def test_the_script_named_product_is_text_not_markup(tmp_path, capsys):
    code, _, err = run(
        ["--campaign", "post_purchase", "--step", "2", "--customer", str(CUSTOMERS["en"])]
        + ["--out", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    page = parse((tmp_path / "post_purchase-2-en.html").read_text())
    assert "script" not in {tag for tag, _ in page.tags}
    assert MUG in "".join(page.text)


def test_events_under_an_events_key_and_in_any_order(tmp_path, capsys):
    events = json.loads(CUSTOMERS["de"].read_text())
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"events": list(reversed(events))}))
    for name, path in (("plain", CUSTOMERS["de"]), ("wrapped", wrapped)):
        out = tmp_path / name
        code, _, err = run(
            ["--campaign", "abandoned_cart", "--customer", str(path), "--out", str(out)], capsys
        )
        assert code == 0, err
    assert (tmp_path / "plain" / "abandoned_cart-1-de.json").read_text() == (
        tmp_path / "wrapped" / "abandoned_cart-1-de.json"
    ).read_text()


def test_an_unsupported_locale_falls_back_as_in_the_job_and_says_so(tmp_path, capsys):
    code, out, err = run(
        ["--campaign", "welcome", "--customer", str(CUSTOMERS["de"]), "--locale", "fr-FR"]
        + ["--out", str(tmp_path)],
        capsys,
    )
    assert code == 0
    assert err == (
        "inboxflow preview: --locale 'fr-FR' is not supported (locales.supported: en, de); "
        "the email is written in 'en', as the job would write it\n"
    )
    request = json.loads((tmp_path / "welcome-1-en.json").read_text())
    assert request["locale"] == "en"
    assert f"html:    {tmp_path / 'welcome-1-en.html'}" in out


# --- errors: exit 2, one line, no traceback --------------------------------------------------


def _error(args: list[str], capsys) -> str:
    code, out, err = run(args, capsys)
    assert code == 2, (out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("inboxflow preview: ")
    return err.removeprefix("inboxflow preview: ").rstrip("\n")


def _events(tmp_path: Path, events: Any, name: str = "customer.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(events))
    return str(path)


def test_unknown_campaign(capsys):
    message = _error(["--campaign", "nope", "--customer", str(CUSTOMERS["en"])], capsys)
    assert message == (
        "unknown campaign 'nope' (campaigns: abandoned_cart, browse_abandonment, "
        "post_purchase, welcome)"
    )


@pytest.mark.parametrize("step", ["0", "3", "-1"])
def test_step_out_of_range(capsys, step):
    message = _error(
        ["--campaign", "abandoned_cart", "--step", step, "--customer", str(CUSTOMERS["en"])],
        capsys,
    )
    assert message == f"campaign 'abandoned_cart' has steps 1 to 2: no step {step}"


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nobody.json"
    message = _error(["--campaign", "welcome", "--customer", str(missing)], capsys)
    assert message == f"cannot read {missing}: No such file or directory"


def test_a_directory_is_not_readable(tmp_path, capsys):
    message = _error(["--campaign", "welcome", "--customer", str(tmp_path)], capsys)
    assert message == f"cannot read {tmp_path}: Is a directory"


def test_invalid_json(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('[{"event_id": "e1",\n  "event_type": }]')
    message = _error(["--campaign", "welcome", "--customer", str(path)], capsys)
    assert message == f"{path}: not valid JSON: Expecting value (line 2, column 17)"


@pytest.mark.parametrize(
    "content,why",
    [
        ({"customer": "c-1"}, 'expected a JSON list of events or an object {"events": [...]}'),
        ("an event", 'expected a JSON list of events or an object {"events": [...]}'),
        ([], "holds no events"),
    ],
)
def test_not_a_list_of_events(tmp_path, capsys, content, why):
    path = _events(tmp_path, content)
    assert _error(["--campaign", "welcome", "--customer", path], capsys) == f"{path}: {why}"


def test_an_invalid_event_names_its_index_id_and_the_validators_reason(tmp_path, capsys):
    events = json.loads(CUSTOMERS["en"].read_text())
    assert events[7]["event_type"] == "cart_add"
    events[7]["properties"]["price"] = -1
    path = _events(tmp_path, events)
    message = _error(["--campaign", "abandoned_cart", "--customer", path], capsys)
    assert message == (
        "event 7 (event_id ev-anna-08): the job rejects it: schema_violation at "
        "$.properties.price: must be >= 0 (cart_add.json: minimum)"
    )


def test_the_first_invalid_event_is_named_with_the_validators_reason(tmp_path, capsys):
    events = json.loads(CUSTOMERS["en"].read_text())
    events[3]["properties"]["currency"] = "€"
    del events[5]["event_id"]
    path = _events(tmp_path, events)
    message = _error(["--campaign", "abandoned_cart", "--customer", path], capsys)
    assert message == (
        "event 3 (event_id ev-anna-04): the job rejects it: bad_currency at "
        "$.properties.currency: currency must be a 3-letter ISO 4217 code"
    )
    events[3]["properties"]["currency"] = "gbp"  # upper-cased by the validator: accepted
    path = _events(tmp_path, events)
    message = _error(["--campaign", "abandoned_cart", "--customer", path], capsys)
    assert message == (
        "event 5 (event_id unknown): the job rejects it: missing_event_id at $.event_id: "
        "event_id is missing or blank"
    )


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            '"timestamp": NaN',
            "event 0 (event_id e1): the job rejects it: not_json at $: NaN and Infinity are "
            "not valid JSON",
        ),
        (
            '"timestamp": "2026-03-02T09:12:00Z", "traits": {"first_name": "\\ud800"}',
            "event 0 (event_id e1): the job rejects it: unpaired_surrogate at "
            "$.traits.first_name: string holds an unpaired UTF-16 surrogate (not encodable as "
            "UTF-8)",
        ),
    ],
)
def test_json_the_job_reads_differently_gets_the_jobs_reason(tmp_path, capsys, raw, message):
    """NaN is JSON to Python's parser but not to the job; an escaped lone surrogate reaches
    the validator as the escape a producer would send."""
    path = tmp_path / "customer.json"
    path.write_text(
        '[{"event_id": "e1", "event_type": "identify", "customer_id": "c-1", ' + raw + "}]"
    )
    assert _error(["--campaign", "welcome", "--customer", str(path)], capsys) == message


def test_out_is_a_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    message = _error(
        ["--campaign", "welcome", "--customer", str(CUSTOMERS["en"]), "--out", str(taken)],
        capsys,
    )
    assert message == f"cannot write to {taken}: File exists"


def test_events_of_two_customers(tmp_path, capsys):
    events = json.loads(CUSTOMERS["en"].read_text())
    events[4]["customer_id"] = "c-someone-else"
    path = _events(tmp_path, events)
    message = _error(["--campaign", "welcome", "--customer", path], capsys)
    assert message == (
        "event 4 (event_id ev-anna-05): customer_id differs from event 0's: a customer file "
        "holds one customer's events"
    )


def test_customer_without_email(tmp_path, capsys):
    events = [e for e in json.loads(CUSTOMERS["en"].read_text()) if e["event_type"] != "identify"]
    path = _events(tmp_path, events)
    message = _error(["--campaign", "abandoned_cart", "--customer", path], capsys)
    assert message == "customer has no email address: add an identify event with traits.email"


def test_a_bad_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_text("limits:\n  nonsense: 1\n")
    message = _error(
        ["--campaign", "welcome", "--customer", str(CUSTOMERS["en"]), "--config", str(config)],
        capsys,
    )
    assert message.startswith("unknown key limits.nonsense")


# --- --open ------------------------------------------------------------------------------------


def test_open_without_a_browser_says_where_the_file_is(tmp_path, capsys, monkeypatch):
    def no_browser(*_: Any) -> Any:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", no_browser)
    code, out, err = run(
        ["--campaign", "welcome", "--customer", str(CUSTOMERS["en"]), "--out", str(tmp_path)]
        + ["--open"],
        capsys,
    )
    assert (code, err) == (0, "")
    html = tmp_path / "welcome-1-en.html"
    assert out.splitlines()[-1] == f"no browser found; open {html} yourself"


def test_open_opens_the_html_file(tmp_path, capsys, monkeypatch):
    opened: list[str] = []

    class Browser:
        def open(self, url: str) -> bool:
            opened.append(url)
            return True

    monkeypatch.setattr(webbrowser, "get", lambda *_: Browser())
    code, out, _ = run(
        ["--campaign", "welcome", "--customer", str(CUSTOMERS["en"]), "--out", str(tmp_path)]
        + ["--open"],
        capsys,
    )
    assert code == 0
    assert opened == [(tmp_path / "welcome-1-en.html").resolve().as_uri()]
    assert "no browser found" not in out


# --- the README's commands, exactly as written ----------------------------------------------


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text[text.index("\n## Preview an email\n") :]
    end = body.find("\n## ", 1)
    body = body if end < 0 else body[:end]
    block = re.findall(r"```\n(.*?)```", body, re.DOTALL)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_the_readme_shows_these_commands():
    assert readme_commands() == [
        ".venv/bin/inboxflow preview --campaign abandoned_cart --step 1 "
        "--customer docs/examples/customer-de.json",
        ".venv/bin/inboxflow preview --campaign post_purchase --step 2 "
        "--customer docs/examples/customer-en.json --locale de",
        ".venv/bin/inboxflow preview --campaign welcome --step 2 "
        "--customer docs/examples/customer-en.json --out var/preview --open",
    ]


def test_the_readme_commands_run_as_written(tmp_path):
    """Each command from the repository root, as a shell would run it. ``--open`` gets a
    stand-in browser through ``$BROWSER`` (Python's webbrowser runs it with the URL), which
    records what it was asked to open."""
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "browser"
    fake.write_text(f'#!/bin/sh\necho "$1" >> {shlex.quote(str(opened))}\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["BROWSER"] = str(fake)
    outputs = {}
    for command in readme_commands():
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/inboxflow"
        assert (ROOT / argv[0]).exists(), f"{argv[0]} is missing: run make install"
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        outputs[command] = done.stdout
    names = ["abandoned_cart-1-de", "post_purchase-2-de", "welcome-2-en"]
    for command, name in zip(readme_commands(), names, strict=True):
        lines = outputs[command].splitlines()
        assert lines[0].startswith("subject: ") and len(lines[0]) > len("subject: ")
        assert lines[1:4] == [
            f"html:    var/preview/{name}.html",
            f"text:    var/preview/{name}.txt",
            f"request: var/preview/{name}.json",
        ]
        for suffix in (".html", ".txt", ".json"):
            assert (ROOT / "var" / "preview" / f"{name}{suffix}").stat().st_size > 0
    html = ROOT / "var" / "preview" / "welcome-2-en.html"
    assert opened.read_text().splitlines() == [html.resolve().as_uri()]
