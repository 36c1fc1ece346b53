"""``inboxflow preview``: one campaign step rendered for one customer by the job's own code,
written to files to look at (README "Preview an email").

The customer is a JSON file of their events, exactly as they would be produced to Kafka (a
list, or an object ``{"events": [...]}``). Each event goes through the job's validator
(:class:`udfs.core.validation.EventValidator`, the settings of ``conf/job.yaml``); the events
are then applied in event-time order by the job's customer core
(:class:`udfs.core.customer.CustomerCore`, which runs the journey engine
:class:`udfs.core.journey.CustomerLogic`), and the state they leave gives the step's trigger
(:func:`udfs.core.journey.preview_trigger`, guards aside) at the newest event's time. The
job's renderer (:class:`udfs.core.render.Renderer`) turns it into the email request the job
would emit: ``DIR/<campaign>-<step>-<locale>.html``, ``.txt`` and ``.json`` (the whole
request).

Exit codes: 0 done; 2 the input is wrong (a missing or unreadable file, invalid JSON, an
event the job would reject, an unknown campaign, a step out of range, a customer without an
email address, a bad config), with one line on stderr; 1 the templates could not render it.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from job.config import DEFAULT_CONFIG, ConfigError, JobConfig, load_config

if TYPE_CHECKING:
    from udfs.core.customer import CustomerCore

EXIT_OK = 0
EXIT_RENDER_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_OUT = Path("var/preview")
# The watermark before the first event: nothing is late (events are applied in order).
_NO_WATERMARK = -(2**63)


class PreviewError(Exception):
    """The input cannot be previewed; the message is one line for stderr (exit 2)."""


class RenderFailed(Exception):
    """The templates failed on this trigger (exit 1); the message is one line."""


@dataclass(frozen=True)
class Preview:
    """What :func:`preview` wrote: the request (as the job would emit it) and its files."""

    request: dict[str, Any]
    trigger: dict[str, Any]
    html: Path
    text: Path
    json: Path
    notes: tuple[str, ...] = ()


def register(subparsers: Any) -> None:
    """Add ``preview`` to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "preview",
        help="render one campaign step for a customer (a JSON file of their events) to files",
        description="Render one campaign step for one customer with the job's own code "
        "(validator, journey engine, renderer) and write DIR/<campaign>-<step>-<locale>.html, "
        ".txt and .json (the email request as the job would emit it).",
    )
    parser.add_argument("--campaign", required=True, metavar="NAME", help="e.g. abandoned_cart")
    parser.add_argument(
        "--step", type=int, default=1, metavar="N", help="the step, 1-based (default 1)"
    )
    parser.add_argument(
        "--customer",
        required=True,
        type=Path,
        metavar="FILE.json",
        help='the customer\'s events as produced to Kafka: a JSON list or {"events": [...]}',
    )
    parser.add_argument(
        "--locale",
        metavar="LOCALE",
        help="write the email in this locale instead of the customer's (e.g. de, de-AT); "
        "an unsupported one falls back as in the job",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where the files go (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--open", action="store_true", help="open the HTML file in a browser when there is one"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="job config (default conf/job.yaml)",
    )
    parser.set_defaults(func=cmd_preview)


def cmd_preview(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        done = preview(cfg, args.campaign, args.step, args.customer, args.locale, args.out)
    except (PreviewError, ConfigError) as exc:
        print(f"inboxflow preview: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RenderFailed as exc:
        print(f"inboxflow preview: {exc}", file=sys.stderr)
        return EXIT_RENDER_FAILED
    for note in done.notes:
        print(f"inboxflow preview: {note}", file=sys.stderr)
    print(f"subject: {done.request['subject']}")
    print(f"html:    {done.html}")
    print(f"text:    {done.text}")
    print(f"request: {done.json}")
    if args.open:
        open_in_browser(done.html)
    return EXIT_OK


def open_in_browser(path: Path) -> None:
    """Open ``path`` in the system's browser, or say there is none (not an error)."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        print(f"no browser found; open {path} yourself")
        return
    if not browser.open(path.resolve().as_uri()):
        print(f"the browser did not open it; open {path} yourself")


def preview(
    cfg: JobConfig,
    campaign: str,
    step: int,
    customer_file: Path,
    locale: str | None = None,
    out_dir: Path = DEFAULT_OUT,
) -> Preview:
    """Render ``campaign`` step ``step`` for the customer of ``customer_file`` (the job's
    code path, see the module docstring) and write the files into ``out_dir``."""
    from udfs.core.render import TemplateError

    core = _core(cfg)
    trigger, now_ms = build_trigger(cfg, campaign, step, read_events(customer_file), core)
    notes = []
    if locale is not None:
        trigger["locale"] = locale
    chosen = trigger.get("locale")
    note = locale_note(cfg, chosen, given=locale is not None)
    if note:
        notes.append(note)
    try:
        request = core.renderer.render(trigger, now_ms)
    except TemplateError as exc:
        raise RenderFailed(_one_line(str(exc))) from None
    from udfs.core.customer import MAX_REQUEST_BYTES

    size = len(orjson.dumps(request))  # what the job measures
    if size > MAX_REQUEST_BYTES:
        notes.append(
            f"the job would not send this email: the request is {size} bytes, above "
            f"{MAX_REQUEST_BYTES} (reason request_too_large)"
        )
    base = out_dir / f"{campaign}-{step}-{request['locale']}"
    paths = base.with_suffix(".html"), base.with_suffix(".txt"), base.with_suffix(".json")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(request["html"], encoding="utf-8")
        paths[1].write_text(request["text"], encoding="utf-8")
        paths[2].write_text(
            json.dumps(request, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise PreviewError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    return Preview(request, trigger, *paths, notes=tuple(notes))


def locale_note(cfg: JobConfig, value: object, given: bool) -> str | None:
    """A note when the email cannot be written in the locale asked for (``--locale``, or the
    customer's own locale): which one the job uses instead."""
    from udfs.core.l10n import normalize_locale, resolve_locale

    if not isinstance(value, str) or not value.strip():
        return None
    supported = cfg.locales.supported
    if normalize_locale(value) in supported:
        return None
    used = resolve_locale(value, supported, cfg.locales.default)
    whose = "--locale" if given else "the customer's locale"
    return (
        f"{whose} {value!r} is not supported (locales.supported: {', '.join(supported)}); "
        f"the email is written in {used!r}, as the job would write it"
    )


def read_events(path: Path) -> list[Any]:
    """The events of a customer file: a JSON list, or an object with the list under
    ``events``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PreviewError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise PreviewError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PreviewError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise PreviewError(f"{path}: not valid JSON: nested too deeply") from None
    if isinstance(data, dict) and "events" in data:
        data = data["events"]
    if not isinstance(data, list):
        raise PreviewError(
            f'{path}: expected a JSON list of events or an object {{"events": [...]}}'
        )
    if not data:
        raise PreviewError(f"{path}: holds no events")
    return data


def _core(cfg: JobConfig) -> CustomerCore:
    """The customer core the job's customer function builds (no profile store): its
    validator, journey engine and renderer (``Renderer(render_settings(cfg))``)."""
    from job.pipeline import core_settings
    from udfs.core.customer import CustomerCore

    return CustomerCore(core_settings(cfg, False))


def build_trigger(
    cfg: JobConfig,
    campaign: str,
    step: int,
    docs: list[Any],
    core: CustomerCore | None = None,
) -> tuple[dict[str, Any], int]:
    """The trigger of the step for the customer of ``docs`` (their events, any order) and the
    time it is built at (the newest event's). Each event is validated as the job validates
    it and applied in event-time order by the job's customer core."""
    from job.pipeline import journey_settings
    from udfs.clock import wall_ms
    from udfs.core.contract import Kind, decode_dlq
    from udfs.core.customer import Slot
    from udfs.core.journey import preview_trigger
    from udfs.core.validation import Invalid

    core = core or _core(cfg)
    seen_at = wall_ms()
    events: list[tuple[int, dict[str, Any], str]] = []
    for index, doc in enumerate(docs):
        text = _record_value(doc)
        result = core.validator.validate(text, seen_at)
        if isinstance(result, Invalid):
            event_id = result.event_id or _id_of(doc)
            raise PreviewError(
                f"event {index} (event_id {event_id or 'unknown'}): the job rejects it: "
                f"{result.reason} at {result.path}: {result.message}"
            )
        if events and result["customer_id"] != events[0][1]["customer_id"]:
            raise PreviewError(
                f"event {index} (event_id {result['event_id']}): customer_id differs from "
                f"event {events[0][0]}'s: a customer file holds one customer's events"
            )
        events.append((index, result, text))
    events.sort(key=lambda e: (e[1]["timestamp"], e[0]))
    slot = Slot(None)
    watermark = _NO_WATERMARK
    for index, event, text in events:
        outcome = core.on_event(event, text, slot, watermark, event["timestamp"], seen_at)
        for routed in outcome.outputs:
            if routed[0] == Kind.DLQ.value:
                record = decode_dlq(routed).value
                raise PreviewError(
                    f"event {index} (event_id {event['event_id']}): the job could not apply "
                    f"it: {record.get('reason')}: {record.get('message')}"
                )
        watermark = event["timestamp"]
    now_ms = events[-1][1]["timestamp"]
    try:
        trigger = preview_trigger(journey_settings(cfg), slot.load(), campaign, step, now_ms)
    except ValueError as exc:
        raise PreviewError(_one_line(str(exc))) from None
    return trigger, now_ms


def _record_value(doc: Any) -> str:
    """The event as a producer writes it to Kafka: UTF-8 JSON (NaN stays NaN: the validator
    says not_json); a string holding an unpaired surrogate, which UTF-8 cannot carry, as the
    JSON escape a producer would send (the validator says unpaired_surrogate)."""
    text = json.dumps(doc, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(doc, ensure_ascii=True)
    return text


def _id_of(doc: Any) -> str | None:
    """The event's id when it is a string that can be printed (no unpaired surrogate)."""
    value = doc.get("event_id") if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())
