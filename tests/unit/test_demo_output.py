"""What `make demo` prints at the end: one English and one German email (issue 15)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from job.dev.demo import pick_example, print_summary


def request(rid: str, locale: str, items: list, recommended: list, text: str) -> dict:
    return {
        "request_id": rid,
        "campaign": "abandoned_cart",
        "step": 1,
        "customer_id": f"c-{rid}",
        "to": f"{rid}@example.com",
        "subject": f"subject {rid}",
        "html": "<p>x</p>",
        "text": text,
        "locale": locale,
        "trigger_event_time": "2026-12-01T10:00:00.000Z",
        "emitted_at": "2026-12-01T10:00:00.100Z",
        "metadata": {
            "items": items,
            "recommended": recommended,
            "list_unsubscribe": f"https://shop.example.com/u?c={rid}",
        },
    }


def records(*values: dict) -> list[SimpleNamespace]:
    return [SimpleNamespace(value=json.dumps(v).encode()) for v in values]


def test_the_demo_prints_one_english_and_one_german_email(capsys) -> None:
    item = [{"product_id": "p-1"}]
    requests = records(
        request("a", "en", [], [], "plain English"),
        request("b", "en", item, ["p-2"], "rich English"),
        request("c", "de", item, [], "nur Deutsch"),
    )
    print_summary(3, 1.0, requests, [], [])
    out = capsys.readouterr().out
    assert "emails by language   {'en': 2, 'de': 1}" in out
    english = out.index("--- one English email request ---")
    german = out.index("--- one German email request ---")
    assert english < out.index("rich English") < german < out.index("nur Deutsch")
    assert "plain English" not in out  # the richer English one was chosen
    assert "List-Unsubscribe: <https://shop.example.com/u?c=c>" in out


def test_a_language_without_email_is_said_so(capsys) -> None:
    print_summary(1, 1.0, records(request("a", "en", [], [], "hi")), [], [])
    assert "--- no German email in this run ---" in capsys.readouterr().out
    assert pick_example([], "de") is None
