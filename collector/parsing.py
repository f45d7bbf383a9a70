"""Turning a raw request body into valid events and per-event rejections.

The fast path validates the whole batch in one ``model_validate_json`` call (pydantic-core,
no Python per event). Only when that fails does the slow path validate event by event, so the
valid events of a partly bad batch are kept and each bad one is reported by index and field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from collector.errors import InvalidBatch, InvalidBody, PayloadTooLarge
from collector.schemas import EVENT_TYPES, Event, EventBase, EventBatch, RejectedEvent, TimeWindow

_EVENT = TypeAdapter[Any](Event)


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedBatch:
    """The events of a batch that passed validation, and why the others did not."""

    received: int
    valid: list[EventBase]
    rejected: list[RejectedEvent]
    # Rejected events per type ("unknown" when the type itself is missing or wrong).
    rejected_types: Counter[str] = dataclasses.field(default_factory=Counter)


def accepted_window(
    now: dt.datetime, *, max_age: dt.timedelta, max_skew: dt.timedelta
) -> TimeWindow:
    """The span of client timestamps accepted at ``now``."""
    return TimeWindow(earliest=now - max_age, latest=now + max_skew)


def parse_batch(body: bytes, *, window: TimeWindow, max_events: int) -> ParsedBatch:
    """Validate a batch body; raise for a body that is not a batch, else sort its events."""
    context = {"window": window}
    try:
        batch = EventBatch.model_validate_json(body, context=context)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raw = _json_with_lone_surrogates(body, exc)
        else:
            raw = pydantic_core.from_json(body)
        return _parse_event_by_event(raw, context=context, max_events=max_events)
    _check_count(len(batch.events), max_events)
    return ParsedBatch(received=len(batch.events), valid=list(batch.events), rejected=[])


def _json_with_lone_surrogates(body: bytes, exc: ValidationError) -> Any:
    # pydantic's JSON parser refuses escapes of lone surrogates ("\ud800"), which JSON allows;
    # the standard library reads them, so such a string costs only its own event (the schema
    # rejects it, naming the field) instead of the whole batch. Invalid UTF-8 stays a 400.
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidBody(_json_problem(exc)) from None


def _parse_event_by_event(raw: Any, *, context: dict[str, Any], max_events: int) -> ParsedBatch:
    if not isinstance(raw, dict):
        raise InvalidBatch('body must be a JSON object: {"events": [...]}', field="body")
    unknown = sorted(set(raw) - {"events"})
    if unknown:
        raise InvalidBatch(f"unknown top-level field {unknown[0]!r}", field=_printable(unknown[0]))
    events = raw.get("events")
    if not isinstance(events, list):
        problem = "is required" if events is None else "must be an array of events"
        raise InvalidBatch(f"events {problem}", field="events")
    _check_count(len(events), max_events)
    valid: list[EventBase] = []
    rejected: list[RejectedEvent] = []
    rejected_types: Counter[str] = Counter()
    for index, item in enumerate(events):
        try:
            valid.append(_EVENT.validate_python(item, context=context))
        except ValidationError as exc:
            event_type = item.get("type") if isinstance(item, dict) else None
            rejected_types[event_type if event_type in EVENT_TYPES else "unknown"] += 1
            rejected.extend(
                RejectedEvent(
                    index=index,
                    field=_printable(_field_name(error["loc"], error["type"])),
                    reason=_printable(error["msg"].removeprefix("Value error, ")),
                )
                for error in exc.errors(include_url=False)
            )
    return ParsedBatch(
        received=len(events), valid=valid, rejected=rejected, rejected_types=rejected_types
    )


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise PayloadTooLarge(
            f"batch has {count} events; at most {max_events} per request", field="events"
        )


def _field_name(loc: tuple[int | str, ...], error_type: str) -> str:
    # A discriminated union puts the event type first in the location; the client wants the
    # field. No field left means a missing or unknown "type", or the event as a whole (not an
    # object, or a rule across several fields).
    parts = list(loc)
    if parts and parts[0] in EVENT_TYPES:
        parts = parts[1:]
    if parts:
        return ".".join(str(part) for part in parts)
    return "type" if error_type.startswith("union_tag") else "(event)"


def _printable(text: str) -> str:
    # Field names and messages can echo the client's strings, and a lone surrogate in them
    # would make the JSON answer itself unencodable (a 500): write it as a visible escape.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_problem(exc: ValidationError) -> str:
    for error in exc.errors(include_url=False):
        if error["type"] == "json_invalid":
            detail = error.get("ctx", {}).get("error", error["msg"])
            return f"body is not valid JSON: {detail}"
    return "body is not valid JSON"
