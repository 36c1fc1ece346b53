"""Schemas of the suppression events: hard_bounce and spam_complaint (reported by the
sending service) and unsubscribe with an optional campaign, through the real validator
(conf/schemas): exact normalized events for good input, exact reason, path and message
for bad input, the same result given as bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from udfs.core.validation import EventValidator, Invalid

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / Path("conf/schemas")
NOW = 1_767_600_000_000  # 2026-01-05T08:00:00Z
EMAIL_PATTERN = "^\\s*[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+\\s*$"
CAMPAIGN_PATTERN = "^[a-z][a-z0-9_]{0,63}$"


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(SCHEMA_DIR, 65536, 86_400_000)


def raw_event(event_type: str, **fields: Any) -> str:
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "event_type": event_type,
        "customer_id": "c-1",
        "timestamp": NOW,
    }
    doc.update(fields)
    return json.dumps(doc)


def normalized(event_type: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "event_type": event_type,
        "customer_id": "c-1",
        "timestamp": NOW,
        "context": {},
        "properties": properties or {},
        "traits": {},
    }


def test_new_event_types_are_defined_by_their_schema_files(validator: EventValidator) -> None:
    assert {"hard_bounce", "spam_complaint", "unsubscribe"} <= validator.event_types


GOOD = [
    pytest.param("unsubscribe", None, id="unsubscribe_from_everything"),
    pytest.param("unsubscribe", {"campaign": "welcome"}, id="unsubscribe_from_one_campaign"),
    pytest.param(
        "unsubscribe",
        {"campaign": "abandoned_cart", "list": "news", "reason": "too many"},
        id="unsubscribe_campaign_with_list_and_reason",
    ),
    pytest.param("unsubscribe", {"campaign": "a" + "b" * 63}, id="campaign_of_64_characters"),
    pytest.param("unsubscribe", {"campaign": "x"}, id="campaign_of_one_letter"),
    pytest.param("unsubscribe", {"campaign": "post_purchase_2"}, id="campaign_with_digit"),
    pytest.param("hard_bounce", None, id="hard_bounce_minimal"),
    pytest.param("hard_bounce", {}, id="hard_bounce_empty_properties"),
    pytest.param(
        "hard_bounce",
        {
            "email": "bob@example.com",
            "request_id": "r" * 128,
            "code": "5.1.1",
            "reason": "550 5.1.1 user unknown",
        },
        id="hard_bounce_every_field",
    ),
    pytest.param(
        # Kept as reported: only identify's traits.email is trimmed and lower-cased.
        "hard_bounce",
        {"email": " Bob@Mail.Example.COM "},
        id="hard_bounce_email_kept_as_reported",
    ),
    pytest.param("hard_bounce", {"code": "5" * 64, "reason": "x" * 512}, id="hard_bounce_limits"),
    pytest.param("spam_complaint", None, id="spam_complaint_minimal"),
    pytest.param(
        "spam_complaint",
        {
            "email": "carol@example.co.uk",
            "request_id": "3f2a9c",
            "feedback_type": "abuse",
            "reason": "marked as spam",
        },
        id="spam_complaint_every_field",
    ),
    pytest.param(
        "spam_complaint",
        {"email": "a" * 248 + "@b.com", "feedback_type": "f" * 64},
        id="spam_complaint_limits",
    ),
    pytest.param(
        # Keys the schema does not define are allowed (as for every event type).
        "spam_complaint",
        {"code": "5.7.1", "esp": "example"},
        id="spam_complaint_other_keys_kept",
    ),
]


@pytest.mark.parametrize(("event_type", "properties"), GOOD)
def test_accepts_and_normalizes(
    validator: EventValidator, event_type: str, properties: dict[str, Any] | None
) -> None:
    fields = {} if properties is None else {"properties": properties}
    raw = raw_event(event_type, **fields)

    assert validator.validate(raw, NOW) == normalized(event_type, properties)
    assert validator.validate(raw.encode("utf-8"), NOW) == normalized(event_type, properties)


def pattern_message(pattern: str, schema: str) -> str:
    return f"must match the pattern {pattern} ({schema}.json: pattern)"


BAD = [
    pytest.param(
        "unsubscribe",
        {"campaign": "Welcome"},
        "$.properties.campaign",
        pattern_message(CAMPAIGN_PATTERN, "unsubscribe"),
        id="campaign_upper_case",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": "1st_campaign"},
        "$.properties.campaign",
        pattern_message(CAMPAIGN_PATTERN, "unsubscribe"),
        id="campaign_starting_with_digit",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": "abandoned-cart"},
        "$.properties.campaign",
        pattern_message(CAMPAIGN_PATTERN, "unsubscribe"),
        id="campaign_with_dash",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": "a" * 65},
        "$.properties.campaign",
        pattern_message(CAMPAIGN_PATTERN, "unsubscribe"),
        id="campaign_of_65_characters",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": ""},
        "$.properties.campaign",
        pattern_message(CAMPAIGN_PATTERN, "unsubscribe"),
        id="campaign_empty",
    ),
    pytest.param(
        # Rejected, but only the fast (ECMA 262) validator sees why: Python's "$" also
        # matches before a final newline, so the detailed path cannot name the field.
        "unsubscribe",
        {"campaign": "welcome\n"},
        "$",
        "rejected by the event schema",
        id="campaign_with_trailing_newline",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": 7},
        "$.properties.campaign",
        "must be of type string (unsubscribe.json: type)",
        id="campaign_not_a_string",
    ),
    pytest.param(
        "unsubscribe",
        {"campaign": "welcome", "list": "l" * 129},
        "$.properties.list",
        "must have at most 128 characters (unsubscribe.json: maxLength)",
        id="unsubscribe_list_too_long",
    ),
    pytest.param(
        "hard_bounce",
        {"email": "bob.example.com"},
        "$.properties.email",
        pattern_message(EMAIL_PATTERN, "hard_bounce"),
        id="hard_bounce_email_without_at",
    ),
    pytest.param(
        "hard_bounce",
        {"email": "bob@localhost"},
        "$.properties.email",
        pattern_message(EMAIL_PATTERN, "hard_bounce"),
        id="hard_bounce_email_without_dot_in_domain",
    ),
    pytest.param(
        "hard_bounce",
        {"email": "a" * 249 + "@b.com"},
        "$.properties.email",
        "must have at most 254 characters (hard_bounce.json: maxLength)",
        id="hard_bounce_email_too_long",
    ),
    pytest.param(
        "hard_bounce",
        {"code": "5" * 65},
        "$.properties.code",
        "must have at most 64 characters (hard_bounce.json: maxLength)",
        id="hard_bounce_code_too_long",
    ),
    pytest.param(
        "hard_bounce",
        {"code": 511},
        "$.properties.code",
        "must be of type string (hard_bounce.json: type)",
        id="hard_bounce_code_not_a_string",
    ),
    pytest.param(
        "hard_bounce",
        {"request_id": "r" * 129},
        "$.properties.request_id",
        "must have at most 128 characters (hard_bounce.json: maxLength)",
        id="hard_bounce_request_id_too_long",
    ),
    pytest.param(
        "hard_bounce",
        {"reason": "x" * 513},
        "$.properties.reason",
        "must have at most 512 characters (hard_bounce.json: maxLength)",
        id="hard_bounce_reason_too_long",
    ),
    pytest.param(
        # Both schemas reject it; the envelope's message sorts first.
        "hard_bounce",
        "5.1.1",
        "$.properties",
        "must be of type object (envelope.json: type)",
        id="hard_bounce_properties_not_an_object",
    ),
    pytest.param(
        "hard_bounce",
        [],
        "$.properties",
        "must be of type object (envelope.json: type)",
        id="hard_bounce_properties_an_array",
    ),
    pytest.param(
        "spam_complaint",
        {"email": "carol at example.com"},
        "$.properties.email",
        pattern_message(EMAIL_PATTERN, "spam_complaint"),
        id="spam_complaint_email_without_at",
    ),
    pytest.param(
        "spam_complaint",
        {"feedback_type": "f" * 65},
        "$.properties.feedback_type",
        "must have at most 64 characters (spam_complaint.json: maxLength)",
        id="spam_complaint_feedback_type_too_long",
    ),
    pytest.param(
        "spam_complaint",
        {"request_id": ["r-1"]},
        "$.properties.request_id",
        "must be of type string (spam_complaint.json: type)",
        id="spam_complaint_request_id_not_a_string",
    ),
    pytest.param(
        "spam_complaint",
        None,
        "$.properties",
        "must be of type object (envelope.json: type)",
        id="spam_complaint_properties_null",
    ),
]


@pytest.mark.parametrize(("event_type", "properties", "path", "message"), BAD)
def test_rejects_with_reason_and_path(
    validator: EventValidator, event_type: str, properties: Any, path: str, message: str
) -> None:
    raw = raw_event(event_type, properties=properties)
    expected = Invalid("schema_violation", path, message, "e-1", "c-1")

    assert validator.validate(raw, NOW) == expected
    assert validator.validate(raw.encode("utf-8"), NOW) == expected


def test_unsubscribe_campaign_is_not_in_the_other_suppression_events(
    validator: EventValidator,
) -> None:
    # hard_bounce and spam_complaint define no campaign: any value is kept as it is.
    raw = raw_event("hard_bounce", properties={"campaign": "Not A Name"})

    assert validator.validate(raw, NOW) == normalized("hard_bounce", {"campaign": "Not A Name"})
