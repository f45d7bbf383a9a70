"""Wire schemas of the events IDE plugins send (pydantic v2, ``extra="forbid"``).

A typo in a field name is a rejected event naming the field, never a silently dropped value.
Field names are the storage column names, so rows are built without a mapping table.

``language`` is the one field folded rather than checked: any string is accepted and stored as
the id it names (``core.languages``: ``py`` and ``Python`` are ``python``), ``unknown`` when
blank, or ``other`` when it names no known language, so the stored values stay a closed set
whatever clients send, and an event is never lost over its language's spelling.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema

from core.languages import normalise_language

# PostgreSQL text cannot hold NUL, which would fail the whole batch's COPY; the pattern rejects
# it per event, in pydantic-core (a Python validator per string cost a tenth of ingest time).
# Lone surrogates need no rule: pydantic rejects them as "not a valid string".
NO_NUL = r"^[^\x00]*$"
NUL_REASON = "must not contain NUL characters"

Id = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=NO_NUL)
]
# IDE names and the like are compared across events, so they are folded to lower case.
Label = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, to_lower=True, pattern=NO_NUL
    ),
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256, pattern=NO_NUL)
]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=NO_NUL)]
# Any string, stored as a known language id, "unknown" (blank) or "other" (anything else: NUL,
# control characters and over-long values included, as none of them names a language), so
# per-language figures never split one language over spellings. The Python call per event was
# not measurable: parse_batch took 4.8-4.9 us per event of bench/ingest.py's batches before and
# after (it replaced the pattern and lower-casing that ran in pydantic-core).
Language = Annotated[
    str,
    AfterValidator(normalise_language),
    WithJsonSchema(
        {
            "type": "string",
            "description": "The editor's language id or a common alias (python, py, "
            "typescriptreact, c++, ...); stored as a known id, 'unknown' when blank or 'other' "
            "when it names no known language.",
            "examples": ["python", "typescript", "cpp"],
        }
    ),
]
# Numbers and booleans are strict: "7" or true where a count belongs is a client bug to report,
# not a value to guess at.
Chars = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
Lines = Annotated[int, Field(strict=True, ge=0, le=100_000)]
Millis = Annotated[float, Field(strict=True, ge=0, le=3_600_000)]
Flag = Annotated[bool, Field(strict=True)]

# A timestamp is an ISO 8601 string with a time zone. AwareDatetime, even strict, also reads a
# number or a string of digits as unix seconds: here only a string that starts like a date
# passes on to the datetime parser. From Python (writers inside CodeLift, and the slow path's
# standard-library reading of a body) a datetime object passes too. All of it runs in
# pydantic-core: a Python validator per event cost a tenth of the collector's CPU.
ISO_DATE_START = r"^[0-9]{4}-"
TIMESTAMP_REASON = "Input should be a valid datetime: an ISO 8601 string with a time zone"


def _timestamp_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    iso_text = core_schema.str_schema(strict=True, pattern=ISO_DATE_START)
    # Lax: after the first step the input is a Python str (or datetime), not JSON.
    parsed = core_schema.datetime_schema(strict=False, tz_constraint="aware")
    # One error for every refused input, so the rejection names the field alone.
    from_json = core_schema.custom_error_schema(
        iso_text, custom_error_type="timestamp_type", custom_error_message=TIMESTAMP_REASON
    )
    from_python = core_schema.union_schema(
        [core_schema.datetime_schema(strict=True), iso_text],
        mode="left_to_right",
        custom_error_type="timestamp_type",
        custom_error_message=TIMESTAMP_REASON,
    )
    return core_schema.json_or_python_schema(
        json_schema=core_schema.chain_schema([from_json, parsed]),
        python_schema=core_schema.chain_schema([from_python, parsed]),
    )


Timestamp = Annotated[
    dt.datetime,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

CHECKPOINTS_S = (30, 120, 300, 600)


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: uuid.UUID
    schema_version: Literal[1] = 1
    client_ts: Timestamp
    user_id: Id
    session_id: Id
    ide: Label
    plugin_version: ShortText
    # Never a reason to reject the event: see ``Language``.
    language: Language


class CompletionServed(EventBase):
    """The gateway served a completion (or failed to)."""

    type: Literal["completion_served"]
    suggestion_id: Id
    request_id: Id
    # experiment key -> arm name, for every experiment the user was in for this request.
    arms: dict[Id, Id] = Field(default_factory=dict, max_length=64)
    model: ShortText
    adapter: ShortText | None = None
    latency_ms: Millis
    backend_latency_ms: Millis | None = None
    prompt_tokens: Annotated[int, Field(strict=True, ge=0, le=10_000_000)]
    completion_chars: Chars
    completion_lines: Lines
    finish_reason: Label
    error: LongText | None = None


class SuggestionShown(EventBase):
    """A suggestion was displayed in the editor."""

    type: Literal["suggestion_shown"]
    suggestion_id: Id
    display_ms: Millis
    chars: Chars
    lines: Lines
    multiline: Flag
    trigger: Literal["auto", "manual"]


class SuggestionOutcome(EventBase):
    """What the developer did with a suggestion."""

    type: Literal["suggestion_outcome"]
    suggestion_id: Id
    outcome: Literal["accepted", "partially_accepted", "dismissed", "ignored"]
    accepted_chars: Chars = 0
    accepted_lines: Lines = 0
    reason: ShortText | None = None

    @model_validator(mode="after")
    def _nothing_accepted_unless_accepted(self) -> SuggestionOutcome:
        if self.outcome in ("dismissed", "ignored") and (
            self.accepted_chars or self.accepted_lines
        ):
            raise ValueError(
                f"accepted_chars and accepted_lines must be 0 when outcome is {self.outcome!r}"
            )
        return self


class PersistenceCheck(EventBase):
    """Whether an accepted suggestion was still in the file ``checkpoint_s`` seconds later."""

    type: Literal["persistence_check"]
    suggestion_id: Id
    checkpoint_s: Literal[30, 120, 300, 600]
    status: Literal["present", "removed"]
    # Levenshtein distance between accepted and current text / the longer length.
    edit_distance_ratio: Annotated[float, Field(strict=True, ge=0, le=1)]
    chars_remaining: Chars


class TypingVolume(EventBase):
    """Characters typed by hand and accepted from the assistant over a time window."""

    type: Literal["typing_volume"]
    window_start: Timestamp
    window_end: Timestamp
    chars_typed_manual: Chars
    chars_accepted_ai: Chars
    chars_deleted: Chars = 0
    # Excluded from "% of code written": pastes, bulk rapid edits, undo/redo.
    chars_excluded_paste: Chars = 0
    chars_excluded_bulk: Chars = 0
    chars_excluded_undo_redo: Chars = 0

    @model_validator(mode="after")
    def _window_is_ordered(self) -> TypingVolume:
        if self.window_end < self.window_start:
            raise ValueError("window_end must not be before window_start")
        if self.window_end - self.window_start > dt.timedelta(days=1):
            raise ValueError("window_end - window_start must be at most one day")
        # The window is checked against client_ts, which is checked against the clock.
        if abs(self.window_end - self.client_ts) > dt.timedelta(days=1):
            raise ValueError("window_end must be within a day of client_ts")
        return self


class Feedback(EventBase):
    """A developer's rating and comment."""

    type: Literal["feedback"]
    feedback_id: uuid.UUID | None = None
    rating_scale: Literal["thumbs", "stars"]
    # thumbs: -1 or +1; stars: 1 to 5.
    rating: Annotated[int, Field(strict=True)] | None = None
    text: LongText | None = None
    target: Literal["suggestion", "session", "product"]
    suggestion_id: Id | None = None

    @model_validator(mode="after")
    def _rating_fits_scale(self) -> Feedback:
        if self.rating is not None:
            allowed = (-1, 1) if self.rating_scale == "thumbs" else (1, 2, 3, 4, 5)
            if self.rating not in allowed:
                raise ValueError(
                    f"rating must be one of {allowed} on the {self.rating_scale!r} scale"
                )
        if self.rating is None and self.text is None:
            raise ValueError("feedback needs a rating, a text or both")
        if self.target == "suggestion" and self.suggestion_id is None:
            raise ValueError("suggestion_id is required when target is 'suggestion'")
        return self


class Exposure(EventBase):
    """The gateway first served this user by an experiment's arm."""

    type: Literal["exposure"]
    experiment: Id
    arm: Id
    suggestion_id: Id | None = None


Event = Annotated[
    CompletionServed
    | SuggestionShown
    | SuggestionOutcome
    | PersistenceCheck
    | TypingVolume
    | Feedback
    | Exposure,
    Field(discriminator="type"),
]

# Event type name (the ``type`` tag, also the table name) -> wire class.
EVENT_TYPES: dict[str, type[EventBase]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(get_args(Event)[0])
}


class EventBatch(BaseModel):
    """The body of ``POST /v1/events``."""

    # Event values are mostly unique ids and timestamps: caching them only costs time.
    model_config = ConfigDict(extra="forbid", cache_strings="keys")

    events: list[Event]


class RejectedEvent(BaseModel):
    """Why one event of a batch was not stored."""

    index: int
    field: str
    reason: str


class ConflictingEvent(BaseModel):
    """An event whose ``event_id`` is stored with another payload: this one was not stored."""

    index: int
    event_id: uuid.UUID
    # What differs from the stored event: field names, or "type" for another event type.
    fields: list[str]


class IngestResult(BaseModel):
    """What happened to a batch: each event is stored, a duplicate, a conflict or rejected."""

    received: int
    stored: int
    # Repeats of stored events (same event_id and payload; client_ts may differ): not stored.
    duplicates: int
    # Repeats of an event_id with another payload: not stored, listed in ``conflicting``.
    conflicts: int = 0
    conflicting: list[ConflictingEvent] = Field(default_factory=list)
    rejected: list[RejectedEvent]


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message for people, and the field at fault."""

    code: str
    message: str
    field: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer of the collector."""

    error: ErrorDetail
