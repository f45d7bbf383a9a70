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
from collections.abc import Sequence
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from collector.errors import InvalidBatch, InvalidBody, PayloadTooLarge
from collector.schemas import (
    EVENT_TYPES,
    NUL_REASON,
    Event,
    EventBase,
    EventBatch,
    RejectedEvent,
)

_EVENT = TypeAdapter[Any](Event)


@dataclasses.dataclass(frozen=True, slots=True)
class TimeWindow:
    """The span of ``client_ts`` the collector accepts right now."""

    earliest: dt.datetime
    latest: dt.datetime

    def problem(self, moment: dt.datetime) -> str | None:
        """Why ``moment`` is outside the window, or None when it is inside."""
        if moment < self.earliest:
            return (
                f"is older than the accepted window (earliest {self.earliest:%Y-%m-%dT%H:%M:%SZ})"
            )
        if moment > self.latest:
            return f"is in the future (latest accepted {self.latest:%Y-%m-%dT%H:%M:%SZ})"
        return None


def accepted_window(
    now: dt.datetime, *, max_age: dt.timedelta, max_skew: dt.timedelta
) -> TimeWindow:
    """The span of client timestamps accepted at ``now``."""
    return TimeWindow(earliest=now - max_age, latest=now + max_skew)


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedBatch:
    """The events of a batch that passed validation, and why the others did not."""

    received: int
    valid: Sequence[EventBase]
    rejected: list[RejectedEvent]
    # Rejected events per type ("unknown" when the type itself is missing or wrong).
    rejected_types: Counter[str] = dataclasses.field(default_factory=Counter)


class _Sorter:
    """Collects a batch's events into valid ones and rejections, in index order."""

    def __init__(self, window: TimeWindow) -> None:
        self.window = window
        self.valid: list[EventBase] = []
        self.rejected: list[RejectedEvent] = []
        self.rejected_types: Counter[str] = Counter()

    def accept(self, index: int, event: EventBase) -> None:
        # The time window is checked here, in a plain loop, not by a pydantic validator: a
        # Python validator per event cost a tenth of the collector's CPU.
        problem = self.window.problem(event.client_ts)
        if problem is None:
            self.valid.append(event)
        else:
            self.reject(index, event.type, [("client_ts", problem)])  # type: ignore[attr-defined]

    def reject(self, index: int, event_type: object, errors: list[tuple[str, str]]) -> None:
        self.rejected_types[
            event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else "unknown"
        ] += 1
        self.rejected.extend(
            RejectedEvent(index=index, field=_printable(field), reason=_printable(reason))
            for field, reason in errors
        )

    def result(self, received: int) -> ParsedBatch:
        return ParsedBatch(
            received=received,
            valid=self.valid,
            rejected=self.rejected,
            rejected_types=self.rejected_types,
        )


def parse_batch(body: bytes, *, window: TimeWindow, max_events: int) -> ParsedBatch:
    """Validate a batch body; raise for a body that is not a batch, else sort its events."""
    try:
        events = EventBatch.model_validate_json(body).events
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raw = _json_with_lone_surrogates(body, exc)
        else:
            raw = pydantic_core.from_json(body)
        return _parse_event_by_event(raw, window=window, max_events=max_events)
    _check_count(len(events), max_events)
    earliest, latest = window.earliest, window.latest
    if all(earliest <= event.client_ts <= latest for event in events):
        # The common case, in one pass without a call per event.
        return ParsedBatch(received=len(events), valid=events, rejected=[])
    sorter = _Sorter(window)
    for index, event in enumerate(events):
        sorter.accept(index, event)
    return sorter.result(len(events))


def _json_with_lone_surrogates(body: bytes, exc: ValidationError) -> Any:
    # pydantic's JSON parser refuses escapes of lone surrogates ("\ud800"), which JSON allows;
    # the standard library reads them, so such a string costs only its own event (the schema
    # rejects it, naming the field) instead of the whole batch. Invalid UTF-8 stays a 400.
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidBody(_json_problem(exc)) from None


def _parse_event_by_event(raw: Any, *, window: TimeWindow, max_events: int) -> ParsedBatch:
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
    return validate_events(events, window=window)


def validate_events(events: Sequence[Any], *, window: TimeWindow) -> ParsedBatch:
    """Validate events given as Python objects, one by one, as a partly bad batch's are.

    For writers inside CodeLift (the gateway's exposures) that hold events rather than a body:
    the same schemas, the same time window, the same per-event rejections.
    """
    sorter = _Sorter(window)
    for index, item in enumerate(events):
        try:
            event = _EVENT.validate_python(item)
        except ValidationError as exc:
            sorter.reject(
                index,
                item.get("type") if isinstance(item, dict) else None,
                [
                    (_field_name(error["loc"], error["type"]), _reason(error))
                    for error in exc.errors(include_url=False)
                ],
            )
        else:
            sorter.accept(index, event)
    return sorter.result(len(events))


def _reason(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch":
        return NUL_REASON  # NO_NUL is the only pattern the schemas use
    return error["msg"].removeprefix("Value error, ")


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
