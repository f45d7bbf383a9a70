"""Turning a raw request body into valid events and per-event rejections.

The fast path validates the whole batch in one ``model_validate_json`` call (pydantic-core,
no Python per event), then checks by counting that no object of the body repeats a key (pydantic
silently keeps the last value). Only when either fails does the slow path read the body with the
standard library, which sees repeated keys and reads integers of any length, and validate event
by event, so the valid events of a partly bad batch are kept and each bad one is reported by
index and field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pydantic_core
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from collector.errors import InvalidBatch, InvalidBody, PayloadTooLarge
from collector.schemas import (
    EVENT_TYPES,
    NUL_REASON,
    CompletionServed,
    Event,
    EventBase,
    EventBatch,
    RejectedEvent,
)

_EVENT = TypeAdapter[Any](Event)

# CPython's default limit on the digits int() reads from a string (int_max_str_digits), because
# reading more costs quadratic time; it is fixed here, whatever the interpreter is set to. A
# longer integer is read as a _LongNumber, which the schemas refuse like any wrong value, so it
# costs only its own event.
MAX_INT_DIGITS = 4300
_COLON, _QUOTE, _SPACE = b":"[0], b'"'[0], b" "[0]


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
        batch = EventBatch.model_validate_json(body)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            read = _read(body, exc)
        else:
            read = _read_valid_json(body)
        return _parse_event_by_event(read, window=window, max_events=max_events)
    distinct = _distinct_keys(batch)
    if _most_keys(body) != distinct:
        # A repeated key, or only a string that looks like a key's end (``"\":"``): read the
        # body again, counting every key, to tell.
        read = _read(body, None)
        if read.repeats or read.keys != distinct:
            return _parse_event_by_event(read, window=window, max_events=max_events)
    events = batch.events
    _check_count(len(events), max_events)
    earliest, latest = window.earliest, window.latest
    if all(earliest <= event.client_ts <= latest for event in events):
        # The common case, in one pass without a call per event.
        return ParsedBatch(received=len(events), valid=events, rejected=[])
    sorter = _Sorter(window)
    for index, event in enumerate(events):
        sorter.accept(index, event)
    return sorter.result(len(events))


def _most_keys(body: bytes) -> int:
    # Never fewer than the keys of ``body`` (valid JSON): the colons right after a quote or a
    # byte up to space (whitespace, outside strings), which every key's colon is. Inside a
    # string only a colon after an escaped quote (``\":``), the opening quote or a space counts,
    # so the count can be too high (then the body is read again), never too low. One pass in
    # numpy: ``bytes.count(b'":')`` took three times as long and misses "key" : value.
    data = np.frombuffer(body, dtype=np.uint8)
    before_colon = data[np.flatnonzero(data[1:] == _COLON)]
    return int(np.count_nonzero((before_colon == _QUOTE) | (before_colon <= _SPACE)))


def _distinct_keys(batch: EventBatch) -> int:
    # The keys the validated batch was read from: every field it set (extra fields are
    # refused, and every other value is a scalar) and every arm. Equal to the body's key count
    # only when no object repeats a key and no two arms collided after stripping whitespace.
    # (__pydantic_fields_set__ is model_fields_set without a property call per event.)
    events = batch.events
    return (
        len(batch.__pydantic_fields_set__)
        + sum(len(event.__pydantic_fields_set__) for event in events)
        + sum(len(event.arms) for event in events if type(event) is CompletionServed)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _LongNumber:
    """An integer of the body too long to read."""

    digits: int

    def __repr__(self) -> str:
        return f"<a number of {self.digits} digits>"


class _RepeatedKeys(dict[str, Any]):
    """A JSON object that holds some keys more than once; the last value of each is kept."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]], repeated: list[str]) -> None:
        super().__init__(pairs)
        self.repeated = repeated


@dataclasses.dataclass(slots=True)
class _Read:
    """A body read into Python: its value, how many keys it holds, and whether any repeat."""

    value: Any = None
    keys: int = 0
    repeats: bool = False

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.keys += len(pairs)
        value = dict(pairs)
        if len(value) == len(pairs):
            return value
        self.repeats = True
        counts = Counter(key for key, _ in pairs)
        return _RepeatedKeys(pairs, [key for key, count in counts.items() if count > 1])


def _read_int(text: str) -> int | _LongNumber:
    digits = len(text) - text.startswith("-")
    return _LongNumber(digits) if digits > MAX_INT_DIGITS else int(text)


def _read(body: bytes, exc: ValidationError | None) -> _Read:
    # The standard library also reads what pydantic's parser refuses but JSON allows: escapes of
    # lone surrogates ("\ud800"), which the schemas then refuse as strings, and integers of
    # any length. So each costs only its own event instead of the whole batch. Invalid UTF-8
    # stays a 400.
    read = _Read()
    try:
        read.value = json.loads(
            body.decode("utf-8"), object_pairs_hook=read.object, parse_int=_read_int
        )
    except json.JSONDecodeError as error:
        raise InvalidBody(f"body is not valid JSON: {error}") from None
    except (ValueError, RecursionError):
        # Not UTF-8, or nested deeper than Python's recursion limit: pydantic's parser says where.
        raise InvalidBody(_json_problem(exc)) from None
    return read


def _read_valid_json(body: bytes) -> _Read:
    # Pydantic's parser takes half the standard library's time but silently keeps the last of
    # repeated keys: its reading serves when counting shows that no key repeats.
    value = pydantic_core.from_json(body)
    keys = _counted_keys(value)
    if _most_keys(body) == keys:
        return _Read(value=value, keys=keys)
    return _read(body, None)


def _counted_keys(value: Any) -> int:
    # The keys of the body's object, its events and their arms, after any repeats were merged.
    # Objects elsewhere are not counted, so they make the count fall short of _most_keys.
    if not isinstance(value, dict):
        return 0
    count = len(value)
    events = value.get("events")
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict):
            arms = event.get("arms")
            count += len(event) + (len(arms) if isinstance(arms, dict) else 0)
    return count


def _parse_event_by_event(read: _Read, *, window: TimeWindow, max_events: int) -> ParsedBatch:
    raw = read.value
    if not isinstance(raw, dict):
        raise InvalidBatch('body must be a JSON object: {"events": [...]}', field="body")
    unknown = sorted(set(raw) - {"events"})
    if unknown:
        raise InvalidBatch(f"unknown top-level field {unknown[0]!r}", field=_printable(unknown[0]))
    if isinstance(raw, _RepeatedKeys):
        # Which of the arrays the client meant is anyone's guess.
        raise InvalidBatch("duplicate key 'events': a batch has one events array", field="events")
    events = raw.get("events")
    if not isinstance(events, list):
        problem = "is required" if events is None else "must be an array of events"
        raise InvalidBatch(f"events {problem}", field="events")
    _check_count(len(events), max_events)
    repeated: dict[int, list[tuple[str, str]]] = {}
    if read.repeats:
        for index, item in enumerate(events):
            found = _repeated_keys(item)
            if found:
                repeated[index] = found
    return _validate(events, window=window, repeated=repeated)


def _repeated_keys(event: Any) -> list[tuple[str, str]]:
    # (field, reason) for each key repeated in ``event`` or in an object inside it. Breadth
    # first, without recursion: the standard library reads nesting as deep as its own limit.
    if not isinstance(event, dict):
        return []  # refused anyway, as not an object
    found: list[tuple[str, str]] = []
    pending: deque[tuple[str, Any]] = deque([("", event)])
    while pending:
        path, value = pending.popleft()
        if isinstance(value, dict):
            if isinstance(value, _RepeatedKeys):
                found.extend((path + key, f"duplicate key {key!r}") for key in value.repeated)
            pending.extend((f"{path}{key}.", child) for key, child in value.items())
        elif isinstance(value, list):
            pending.extend((f"{path}{index}.", child) for index, child in enumerate(value))
    return found


def validate_events(events: Sequence[Any], *, window: TimeWindow) -> ParsedBatch:
    """Validate events given as Python objects, one by one, as a partly bad batch's are.

    For writers inside CodeLift (the gateway's exposures) that hold events rather than a body:
    the same schemas, the same time window, the same per-event rejections.
    """
    return _validate(events, window=window, repeated={})


def _validate(
    events: Sequence[Any], *, window: TimeWindow, repeated: Mapping[int, list[tuple[str, str]]]
) -> ParsedBatch:
    sorter = _Sorter(window)
    for index, item in enumerate(events):
        event_type = item.get("type") if isinstance(item, dict) else None
        if index in repeated:
            # Which value the client meant is anyone's guess: the event is refused unvalidated,
            # and counted as "unknown" when its type is the repeated key.
            problems = repeated[index]
            ambiguous = any(field == "type" for field, _ in problems)
            sorter.reject(index, None if ambiguous else event_type, problems)
            continue
        try:
            event = _EVENT.validate_python(item)
        except ValidationError as exc:
            sorter.reject(
                index,
                event_type,
                [
                    (_field_name(error["loc"], error["type"]), _reason(error))
                    for error in exc.errors(include_url=False)
                ],
            )
            continue
        collided = _collided_arms(item, event)
        if collided is None:
            sorter.accept(index, event)
        else:
            sorter.reject(index, event_type, [collided])
    return sorter.result(len(events))


def _collided_arms(item: Any, event: EventBase) -> tuple[str, str] | None:
    # Arm keys are stripped of whitespace, so " ctx" and "ctx" would silently become one arm.
    if not isinstance(event, CompletionServed) or not isinstance(item, dict):
        return None
    sent = item.get("arms")
    if not isinstance(sent, dict) or len(sent) == len(event.arms):
        return None
    by_key: dict[str, list[str]] = {}
    for key in sent:
        by_key.setdefault(key.strip(), []).append(key)
    same = next((keys for keys in by_key.values() if len(keys) > 1), list(sent))
    return "arms", f"keys {', '.join(map(repr, same))} are the same after stripping whitespace"


def _reason(error: ErrorDetails) -> str:
    value = error.get("input")
    if isinstance(value, _LongNumber) and error["type"] != "extra_forbidden":
        return f"is a number too large to read ({value.digits} digits; at most {MAX_INT_DIGITS})"
    if error["type"] == "string_pattern_mismatch":
        # NO_NUL is the only pattern whose error gets here (a timestamp's has its own).
        return NUL_REASON
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


def _json_problem(exc: ValidationError | None) -> str:
    for error in exc.errors(include_url=False) if exc is not None else ():
        if error["type"] == "json_invalid":
            detail = error.get("ctx", {}).get("error", error["msg"])
            return f"body is not valid JSON: {detail}"
    return "body is not valid JSON"
