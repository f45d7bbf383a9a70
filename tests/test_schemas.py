"""Every validation rule of the wire format, through ``collector.parsing.parse_batch``.

Most tests send a batch of three events with the bad one in the middle: the two valid ones must
pass, and the bad one must be reported at index 1 with the field at fault.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from collector.errors import InvalidBatch, InvalidBody, PayloadTooLarge
from collector.parsing import ParsedBatch, TimeWindow, accepted_window, parse_batch
from collector.schemas import (
    CompletionServed,
    Feedback,
    SuggestionOutcome,
    TypingVolume,
)
from tests import factories
from tests.factories import EVENT_TYPES, Event, iso, now_utc, without

MAX_AGE = dt.timedelta(days=7)
MAX_SKEW = dt.timedelta(seconds=600)
MAX_EVENTS = 100
RAW_MARKER = "@@raw@@"

COMMON_REQUIRED = (
    "event_id",
    "client_ts",
    "user_id",
    "session_id",
    "ide",
    "plugin_version",
    "language",
)
REQUIRED: dict[str, tuple[str, ...]] = {
    "completion_served": (
        "suggestion_id",
        "request_id",
        "model",
        "latency_ms",
        "prompt_tokens",
        "completion_chars",
        "completion_lines",
        "finish_reason",
    ),
    "suggestion_shown": ("suggestion_id", "display_ms", "chars", "lines", "multiline", "trigger"),
    "suggestion_outcome": ("suggestion_id", "outcome"),
    "persistence_check": (
        "suggestion_id",
        "checkpoint_s",
        "status",
        "edit_distance_ratio",
        "chars_remaining",
    ),
    "typing_volume": ("window_start", "window_end", "chars_typed_manual", "chars_accepted_ai"),
    "feedback": ("rating_scale", "target"),
    "exposure": ("experiment", "arm"),
}
# Optional fields and the value an event gets without them.
OPTIONAL: dict[str, dict[str, Any]] = {
    "completion_served": {
        "arms": {},
        "adapter": None,
        "backend_latency_ms": None,
        "error": None,
    },
    "suggestion_outcome": {"accepted_chars": 0, "accepted_lines": 0, "reason": None},
    "typing_volume": {
        "chars_deleted": 0,
        "chars_excluded_paste": 0,
        "chars_excluded_bulk": 0,
        "chars_excluded_undo_redo": 0,
    },
    "feedback": {"feedback_id": None, "rating": None, "text": None},
    "exposure": {"suggestion_id": None},
}
# (event type, numeric field, upper bound) for every count, size and duration.
NUMBERS: tuple[tuple[str, str, float], ...] = (
    ("completion_served", "latency_ms", 3_600_000),
    ("completion_served", "backend_latency_ms", 3_600_000),
    ("completion_served", "prompt_tokens", 10_000_000),
    ("completion_served", "completion_chars", 1_000_000),
    ("completion_served", "completion_lines", 100_000),
    ("suggestion_shown", "display_ms", 3_600_000),
    ("suggestion_shown", "chars", 1_000_000),
    ("suggestion_shown", "lines", 100_000),
    ("suggestion_outcome", "accepted_chars", 1_000_000),
    ("suggestion_outcome", "accepted_lines", 100_000),
    ("persistence_check", "chars_remaining", 1_000_000),
    ("typing_volume", "chars_typed_manual", 1_000_000),
    ("typing_volume", "chars_accepted_ai", 1_000_000),
    ("typing_volume", "chars_deleted", 1_000_000),
    ("typing_volume", "chars_excluded_paste", 1_000_000),
    ("typing_volume", "chars_excluded_bulk", 1_000_000),
    ("typing_volume", "chars_excluded_undo_redo", 1_000_000),
)
FLOATS = (
    ("completion_served", "latency_ms"),
    ("completion_served", "backend_latency_ms"),
    ("suggestion_shown", "display_ms"),
    ("persistence_check", "edit_distance_ratio"),
    ("suggestion_shown", "chars"),
)
# (event type, text field, longest accepted length).
TEXTS: tuple[tuple[str, str, int], ...] = (
    ("exposure", "user_id", 128),
    ("exposure", "session_id", 128),
    ("exposure", "experiment", 128),
    ("exposure", "arm", 128),
    ("completion_served", "suggestion_id", 128),
    ("completion_served", "request_id", 128),
    # Not language: it is folded onto a closed set, never rejected for its content.
    ("exposure", "ide", 64),
    ("completion_served", "finish_reason", 64),
    ("exposure", "plugin_version", 256),
    ("completion_served", "model", 256),
    ("completion_served", "adapter", 256),
    ("suggestion_outcome", "reason", 256),
    ("feedback", "text", 4000),
    ("completion_served", "error", 4000),
)


def window_now() -> TimeWindow:
    return accepted_window(now_utc(), max_age=MAX_AGE, max_skew=MAX_SKEW)


def parse_raw(body: bytes, *, max_events: int = MAX_EVENTS) -> ParsedBatch:
    """parse_batch with the collector's default window around the current time."""
    return parse_batch(body, window=window_now(), max_events=max_events)


def parse(*events: Any) -> ParsedBatch:
    return parse_raw(factories.body(*events))


def raw_event(event: Event, field: str, token: bytes) -> bytes:
    """A batch [valid, event, valid] with ``field`` of ``event`` written as raw JSON ``token``."""
    with_marker = event | {field: RAW_MARKER}
    body = factories.body(factories.exposure(), with_marker, factories.exposure())
    assert body.count(RAW_MARKER.encode()) == 1
    return body.replace(json.dumps(RAW_MARKER).encode(), token)


def rejections_of(parsed: ParsedBatch) -> list[tuple[int, str, str]]:
    """(index, field, reason) of each rejection, after checking the two valid neighbours."""
    assert parsed.received == 3
    assert len(parsed.valid) == 2
    return [(r.index, r.field, r.reason) for r in parsed.rejected]


def rejections(bad: Any) -> list[tuple[int, str, str]]:
    """Rejections of a batch [valid, bad, valid]."""
    return rejections_of(parse(factories.exposure(), bad, factories.exposure()))


def assert_rejected(bad: Any, field: str, reason: str) -> None:
    """``bad`` is rejected once, at index 1, for ``field``, with ``reason`` in the message."""
    found = rejections(bad)
    assert [(index, name) for index, name, _ in found] == [(1, field)], found
    assert reason in found[0][2]


def accepted(event: Event) -> Any:
    """The one event of a batch, validated; fails if it was rejected."""
    parsed = parse(event)
    assert parsed.rejected == []
    assert len(parsed.valid) == 1
    return parsed.valid[0]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_factories_make_valid_events(event_type: str) -> None:
    event = accepted(factories.make(event_type))
    assert event.type == event_type


def test_a_valid_batch_of_every_type_passes_whole() -> None:
    events = [factories.make(event_type) for event_type in EVENT_TYPES]
    parsed = parse(*events)
    assert parsed.received == len(events)
    assert [str(e.event_id) for e in parsed.valid] == [e["event_id"] for e in events]
    assert parsed.rejected == []
    assert not parsed.rejected_types


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t in EVENT_TYPES for f in (*COMMON_REQUIRED, *REQUIRED[t])],
)
def test_each_required_field_missing(event_type: str, field: str) -> None:
    assert_rejected(without(factories.make(event_type), field), field, "Field required")


@pytest.mark.parametrize(
    ("event_type", "field", "default"),
    [(t, f, d) for t, fields in OPTIONAL.items() for f, d in fields.items()],
)
def test_optional_fields_may_be_left_out(event_type: str, field: str, default: Any) -> None:
    event = accepted(without(factories.make(event_type), field))
    assert getattr(event, field) == default


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_version_defaults_to_1_and_other_versions_are_rejected(event_type: str) -> None:
    assert accepted(without(factories.make(event_type), "schema_version")).schema_version == 1
    assert_rejected(factories.make(event_type, schema_version=2), "schema_version", "1")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_extra_field_is_rejected_naming_it(event_type: str) -> None:
    bad = factories.make(event_type, sugestion_id="typo")
    assert_rejected(bad, "sugestion_id", "Extra inputs are not permitted")


@pytest.mark.parametrize(
    ("event_type", "field", "value", "reason"),
    [
        ("exposure", "event_id", "not-a-uuid", "valid UUID"),
        ("exposure", "event_id", 12345, "UUID input should be"),
        ("exposure", "client_ts", "yesterday", "valid datetime"),
        ("exposure", "client_ts", None, "valid datetime"),
        ("exposure", "user_id", 42, "valid string"),
        ("exposure", "session_id", None, "valid string"),
        ("exposure", "language", ["python"], "valid string"),
        ("exposure", "ide", {"name": "vscode"}, "valid string"),
        ("suggestion_shown", "chars", "many", "valid integer"),
        ("suggestion_shown", "chars", 1.5, "valid integer"),
        # Strict numbers and booleans: no guessing from strings or from the other type.
        ("suggestion_shown", "chars", "7", "valid integer"),
        ("suggestion_shown", "multiline", 1, "valid boolean"),
        ("suggestion_shown", "multiline", "true", "valid boolean"),
        ("feedback", "rating", True, "valid integer"),
        ("completion_served", "latency_ms", "12.5", "valid number"),
        ("suggestion_shown", "lines", [2], "valid integer"),
        ("suggestion_shown", "multiline", "maybe", "valid boolean"),
        ("suggestion_shown", "display_ms", "slow", "valid number"),
        ("suggestion_shown", "trigger", 1, "'auto' or 'manual'"),
        ("completion_served", "arms", ["ctx-window"], "valid dictionary"),
        ("completion_served", "latency_ms", None, "valid number"),
        ("persistence_check", "edit_distance_ratio", "low", "valid number"),
        ("persistence_check", "checkpoint_s", "30", "30, 120, 300 or 600"),
        ("typing_volume", "window_start", "noon", "valid datetime"),
        ("feedback", "rating", "five", "valid integer"),
        ("feedback", "feedback_id", "nope", "valid UUID"),
        ("feedback", "text", 5, "valid string"),
    ],
)
def test_wrong_types_are_rejected(event_type: str, field: str, value: Any, reason: str) -> None:
    assert_rejected(factories.make(event_type, **{field: value}), field, reason)


def test_arms_values_must_be_strings_and_the_field_names_the_key() -> None:
    bad = factories.completion_served(arms={"ctx-window": 1})
    assert_rejected(bad, "arms.ctx-window", "valid string")


def test_at_most_64_arms() -> None:
    arms = {f"experiment-{i}": "control" for i in range(65)}
    assert_rejected(factories.completion_served(arms=arms), "arms", "at most 64 items")
    assert len(accepted(factories.completion_served(arms=dict(list(arms.items())[:64]))).arms) == 64


@pytest.mark.parametrize(("event_type", "field", "upper"), NUMBERS)
def test_negative_numbers_are_rejected(event_type: str, field: str, upper: float) -> None:
    assert_rejected(factories.make(event_type, **{field: -1}), field, "greater than or equal to 0")


@pytest.mark.parametrize(("event_type", "field", "upper"), NUMBERS)
def test_numbers_have_an_upper_bound(event_type: str, field: str, upper: float) -> None:
    assert getattr(accepted(factories.make(event_type, **{field: upper})), field) == upper
    assert accepted(factories.make(event_type, **{field: 0})) is not None
    assert_rejected(
        factories.make(event_type, **{field: upper + 1}), field, "less than or equal to"
    )


@pytest.mark.parametrize(
    ("event_type", "field"),
    [("suggestion_shown", "display_ms"), ("completion_served", "latency_ms")],
)
def test_negative_fractional_milliseconds_are_rejected(event_type: str, field: str) -> None:
    bad = factories.make(event_type, **{field: -0.001})
    assert_rejected(bad, field, "greater than or equal to 0")


@pytest.mark.parametrize(("event_type", "field"), FLOATS)
@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_infinity_tokens_are_rejected(event_type: str, field: str, token: bytes) -> None:
    # JSON has no NaN or Infinity, but pydantic's parser reads these tokens (and 1e400
    # overflows to infinity): the schema must still refuse them, event by event.
    body = raw_event(factories.make(event_type), field, token)
    found = rejections_of(parse_raw(body))
    # A strict integer field refuses any float, finite or not.
    expected = (
        "Input should be a valid integer" if field == "chars" else "Input should be a finite number"
    )
    assert found == [(1, field, expected)]


@pytest.mark.parametrize("checkpoint", [30, 120, 300, 600])
def test_known_checkpoints_are_accepted(checkpoint: int) -> None:
    assert accepted(factories.persistence_check(checkpoint_s=checkpoint)).checkpoint_s == checkpoint


@pytest.mark.parametrize("checkpoint", [0, 29, 31, 60, 599, 601, -30, 3600])
def test_other_checkpoints_are_rejected(checkpoint: int) -> None:
    bad = factories.persistence_check(checkpoint_s=checkpoint)
    assert_rejected(bad, "checkpoint_s", "Input should be 30, 120, 300 or 600")


@pytest.mark.parametrize(
    ("event_type", "field", "value", "allowed"),
    [
        ("suggestion_outcome", "outcome", "maybe", "'accepted', 'partially_accepted'"),
        ("suggestion_outcome", "outcome", "Accepted", "'accepted', 'partially_accepted'"),
        ("suggestion_outcome", "outcome", "", "'accepted', 'partially_accepted'"),
        ("persistence_check", "status", "gone", "'present' or 'removed'"),
        ("suggestion_shown", "trigger", "hover", "'auto' or 'manual'"),
        ("suggestion_shown", "trigger", "AUTO", "'auto' or 'manual'"),
        ("feedback", "target", "file", "'suggestion', 'session' or 'product'"),
        ("feedback", "rating_scale", "emoji", "'thumbs' or 'stars'"),
    ],
)
def test_values_outside_their_sets_are_rejected(
    event_type: str, field: str, value: str, allowed: str
) -> None:
    assert_rejected(factories.make(event_type, **{field: value}), field, allowed)


@pytest.mark.parametrize(
    ("event_type", "field", "values"),
    [
        ("suggestion_outcome", "outcome", ("accepted", "partially_accepted")),
        ("persistence_check", "status", ("present", "removed")),
        ("suggestion_shown", "trigger", ("auto", "manual")),
        ("feedback", "target", ("suggestion", "session", "product")),
    ],
)
def test_every_value_of_a_set_is_accepted(
    event_type: str, field: str, values: tuple[str, ...]
) -> None:
    for value in values:
        assert getattr(accepted(factories.make(event_type, **{field: value})), field) == value


@pytest.mark.parametrize("ratio", [-0.01, 1.01, -1, 2])
def test_edit_distance_ratio_outside_the_unit_interval_is_rejected(ratio: float) -> None:
    bad = factories.persistence_check(edit_distance_ratio=ratio)
    assert_rejected(bad, "edit_distance_ratio", "than or equal to")


@pytest.mark.parametrize("ratio", [0, 0.33, 1])
def test_edit_distance_ratio_bounds_are_accepted(ratio: float) -> None:
    assert (
        accepted(factories.persistence_check(edit_distance_ratio=ratio)).edit_distance_ratio
        == ratio
    )


@pytest.mark.parametrize("outcome", ["dismissed", "ignored"])
@pytest.mark.parametrize(("chars", "lines"), [(1, 0), (0, 1), (10, 2)])
def test_dismissed_or_ignored_suggestions_accept_nothing(
    outcome: str, chars: int, lines: int
) -> None:
    bad = factories.suggestion_outcome(outcome=outcome, accepted_chars=chars, accepted_lines=lines)
    assert_rejected(bad, "(event)", f"must be 0 when outcome is '{outcome}'")
    ok = factories.suggestion_outcome(outcome=outcome, accepted_chars=0, accepted_lines=0)
    assert isinstance(accepted(ok), SuggestionOutcome)


@pytest.mark.parametrize(
    ("scale", "rating", "valid"),
    [
        ("thumbs", -1, True),
        ("thumbs", 1, True),
        ("thumbs", 0, False),
        ("thumbs", 2, False),
        ("thumbs", 5, False),
        ("thumbs", -2, False),
        *(("stars", n, True) for n in range(1, 6)),
        ("stars", 0, False),
        ("stars", 6, False),
        ("stars", -1, False),
    ],
)
def test_rating_must_fit_its_scale(scale: str, rating: int, valid: bool) -> None:
    event = factories.feedback(rating_scale=scale, rating=rating)
    if valid:
        assert accepted(event).rating == rating
    else:
        assert_rejected(event, "(event)", f"on the '{scale}' scale")


def test_feedback_needs_a_rating_or_a_text() -> None:
    bad = factories.feedback(rating=None, text=None)
    assert_rejected(bad, "(event)", "feedback needs a rating, a text or both")
    assert_rejected(without(bad, "rating", "text"), "(event)", "needs a rating, a text or both")
    assert isinstance(accepted(factories.feedback(rating=None)), Feedback)
    assert isinstance(accepted(factories.feedback(text=None)), Feedback)


def test_feedback_on_a_suggestion_needs_its_id() -> None:
    bad = factories.feedback(target="suggestion", suggestion_id=None)
    assert_rejected(bad, "(event)", "suggestion_id is required when target is 'suggestion'")
    for target in ("session", "product"):
        assert accepted(factories.feedback(target=target, suggestion_id=None)).target == target


def test_typing_window_must_not_end_before_it_starts() -> None:
    end = now_utc()
    bad = factories.typing_volume(
        window_start=iso(end), window_end=iso(end - dt.timedelta(microseconds=1))
    )
    assert_rejected(bad, "(event)", "window_end must not be before window_start")
    same = factories.typing_volume(window_start=iso(end), window_end=iso(end))
    assert isinstance(accepted(same), TypingVolume)


def test_typing_window_is_at_most_a_day() -> None:
    end = now_utc()
    day = dt.timedelta(days=1)
    bad = factories.typing_volume(
        window_start=iso(end - day - dt.timedelta(seconds=1)), window_end=iso(end)
    )
    assert_rejected(bad, "(event)", "at most one day")
    whole_day = factories.typing_volume(window_start=iso(end - day), window_end=iso(end))
    assert isinstance(accepted(whole_day), TypingVolume)


@pytest.mark.parametrize("offset_days", [-2, 2, 365 * 7000])
def test_typing_window_must_lie_within_a_day_of_client_ts(offset_days: int) -> None:
    # Otherwise a window in year 9999 with a negative offset would reach the database as year
    # 10000, which no client library can read back.
    end = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    if offset_days < 365:
        end = now_utc() + dt.timedelta(days=offset_days)
    bad = factories.typing_volume(
        window_start=iso(end - dt.timedelta(minutes=1)), window_end=iso(end)
    )
    assert_rejected(bad, "(event)", "window_end must be within a day of client_ts")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_client_ts_older_than_the_accepted_window_is_rejected(event_type: str) -> None:
    old = now_utc() - MAX_AGE - dt.timedelta(minutes=1)
    bad = factories.make(event_type, client_ts=iso(old))
    assert_rejected(bad, "client_ts", "is older than the accepted window")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_client_ts_too_far_in_the_future_is_rejected(event_type: str) -> None:
    future = now_utc() + MAX_SKEW + dt.timedelta(minutes=1)
    assert_rejected(factories.make(event_type, client_ts=iso(future)), "client_ts", "in the future")


def test_client_ts_inside_the_window_is_accepted() -> None:
    now = now_utc()
    nearly_too_old = now - MAX_AGE + dt.timedelta(minutes=5)
    skewed = now + MAX_SKEW - dt.timedelta(minutes=1)
    for moment in (nearly_too_old, skewed):
        assert accepted(factories.exposure(client_ts=iso(moment))).client_ts == moment


def test_client_ts_keeps_its_instant_whatever_the_offset() -> None:
    # Stored as timestamptz, so the offset only has to denote the right instant; reading back
    # in UTC is checked through the API (test_ingest_api).
    moment = now_utc().replace(microsecond=123456)
    plus_two = moment.astimezone(dt.timezone(dt.timedelta(hours=2)))
    event = accepted(factories.exposure(client_ts=plus_two.isoformat()))
    assert event.client_ts == moment


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        *((t, "client_ts") for t in EVENT_TYPES),
        ("typing_volume", "window_start"),
        ("typing_volume", "window_end"),
    ],
)
def test_naive_timestamps_are_rejected(event_type: str, field: str) -> None:
    event = factories.make(event_type)
    naive = dt.datetime.fromisoformat(event[field]).replace(tzinfo=None).isoformat()
    assert_rejected(event | {field: naive}, field, "timezone info")


@pytest.mark.parametrize(("event_type", "field", "longest"), TEXTS)
def test_text_containing_nul_is_rejected(event_type: str, field: str, longest: int) -> None:
    bad = factories.make(event_type, **{field: "ab\x00cd"})
    assert_rejected(bad, field, "must not contain NUL characters")


def test_nul_in_an_arms_entry_is_rejected() -> None:
    bad = factories.completion_served(arms={"ctx-window": "treat\x00ment"})
    assert_rejected(bad, "arms.ctx-window", "must not contain NUL characters")


@pytest.mark.parametrize(("event_type", "field", "longest"), TEXTS)
@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udfff", b"ab\\ud83dcd", b"\\ud800\\u0041"])
def test_text_with_lone_surrogates_is_rejected(
    event_type: str, field: str, longest: int, escape: bytes
) -> None:
    # A lone surrogate is legal in JSON's \u escapes but cannot be stored as UTF-8: the event is
    # rejected, its neighbours are kept.
    body = raw_event(factories.make(event_type), field, b'"' + escape + b'"')
    found = rejections_of(parse_raw(body))
    assert [(index, name) for index, name, _ in found] == [(1, field)]
    assert "valid string" in found[0][2] or "lone surrogates" in found[0][2]


def test_a_valid_surrogate_pair_is_accepted() -> None:
    body = raw_event(factories.exposure(), "user_id", b'"dev-\\ud83d\\ude00"')
    parsed = parse_raw(body)
    assert parsed.rejected == []
    assert parsed.valid[1].user_id == "dev-\U0001f600"


def test_lone_surrogate_in_a_field_name_rejects_the_event_printably() -> None:
    event = factories.exposure() | {RAW_MARKER: 1}
    body = factories.body(factories.exposure(), event, factories.exposure())
    body = body.replace(json.dumps(RAW_MARKER).encode(), b'"\\ud800"')
    found = rejections_of(parse_raw(body))
    assert [(index, field) for index, field, _ in found] == [(1, "(event)")]
    # The answer must stay encodable as UTF-8.
    found[0][2].encode("utf-8")


def test_lone_surrogate_in_a_top_level_field_name_is_reported_printably() -> None:
    with pytest.raises(InvalidBatch) as raised:
        parse_raw(b'{"events": [], "\\ud800": 1}')
    assert raised.value.field == "\\ud800"


@pytest.mark.parametrize(("event_type", "field", "longest"), TEXTS)
def test_over_long_text_is_rejected(event_type: str, field: str, longest: int) -> None:
    at_limit = accepted(factories.make(event_type, **{field: "x" * longest}))
    assert len(getattr(at_limit, field)) == longest
    bad = factories.make(event_type, **{field: "x" * (longest + 1)})
    assert_rejected(bad, field, f"at most {longest} characters")


@pytest.mark.parametrize(("event_type", "field", "longest"), TEXTS)
def test_empty_text_is_rejected(event_type: str, field: str, longest: int) -> None:
    assert_rejected(factories.make(event_type, **{field: ""}), field, "at least 1 character")


@pytest.mark.parametrize("field", ["user_id", "session_id", "ide", "plugin_version", "experiment"])
def test_whitespace_only_identifiers_are_rejected(field: str) -> None:
    assert_rejected(factories.exposure(**{field: "   "}), field, "at least 1 character")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("py", "python"),
        ("TypeScriptReact", "typescript"),
        (" C++ ", "cpp"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("__main__", "other"),
        ("0", "other"),
        ("ab\x00cd", "other"),
        ("\x1fpython", "other"),
        ("x" * 5000, "other"),
    ],
)
def test_language_is_folded_onto_known_ids_never_rejected(sent: str, stored: str) -> None:
    assert accepted(factories.exposure(language=sent)).language == stored


@pytest.mark.parametrize("sent", [5, None, ["python"], {"id": "python"}])
def test_a_language_that_is_not_a_string_is_rejected(sent: Any) -> None:
    assert_rejected(factories.exposure(language=sent), "language", "valid string")


def test_language_ide_and_finish_reason_are_lower_cased_and_stripped() -> None:
    event = accepted(
        factories.completion_served(ide=" VSCode ", language="TypeScript", finish_reason="STOP")
    )
    assert isinstance(event, CompletionServed)
    assert (event.ide, event.language, event.finish_reason) == ("vscode", "typescript", "stop")
    assert accepted(factories.exposure(user_id="  Dev-42 ")).user_id == "Dev-42"


@pytest.mark.parametrize("tag", ["nope", "Exposure", "suggestion-shown", "", 5, None])
def test_unknown_type_is_rejected(tag: Any) -> None:
    found = rejections(factories.exposure(type=tag))
    assert [(index, field) for index, field, _ in found] == [(1, "type")]


def test_missing_type_is_rejected() -> None:
    found = rejections(without(factories.exposure(), "type"))
    assert found == [(1, "type", "Unable to extract tag using discriminator 'type'")]


@pytest.mark.parametrize("item", [1, 1.5, "exposure", None, True, [], [{"type": "exposure"}]])
def test_an_event_that_is_not_an_object_is_rejected(item: Any) -> None:
    found = rejections(item)
    assert [(index, field) for index, field, _ in found] == [(1, "(event)")]
    assert "valid dictionary or object" in found[0][2]


def test_rejected_types_are_counted_by_type_or_as_unknown() -> None:
    parsed = parse(
        factories.suggestion_shown(chars=-1),
        factories.suggestion_shown(lines=-1),
        factories.feedback(rating=None, text=None),
        {"type": "nope"},
        without(factories.exposure(), "type"),
        42,
        factories.exposure(),
    )
    assert parsed.rejected_types == {"suggestion_shown": 2, "feedback": 1, "unknown": 3}
    assert len(parsed.valid) == 1


def test_each_rejection_reports_its_own_index() -> None:
    parsed = parse(
        factories.exposure(),
        factories.suggestion_shown(trigger="hover"),
        factories.exposure(),
        factories.persistence_check(checkpoint_s=31),
        without(factories.feedback(), "target"),
    )
    assert [(r.index, r.field) for r in parsed.rejected] == [
        (1, "trigger"),
        (3, "checkpoint_s"),
        (4, "target"),
    ]
    assert len(parsed.valid) == 2


def test_every_problem_of_one_event_is_reported() -> None:
    bad = without(factories.suggestion_shown(chars=-1, trigger="hover"), "lines")
    found = rejections(bad)
    assert {(index, field) for index, field, _ in found} == {
        (1, "chars"),
        (1, "trigger"),
        (1, "lines"),
    }


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"events": [}', b'{"events": [1,]}'])
def test_a_body_that_is_not_json_is_invalid_as_a_whole(body: bytes) -> None:
    with pytest.raises(InvalidBody, match="not valid JSON"):
        parse_raw(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",
        b'{"events": [{"type": "exposure", "user_id": "\xff"}]}',
        # A surrogate encoded straight into the bytes (CESU-8) is invalid UTF-8, unlike the
        # \ud800 escape.
        b'{"events": [{"type": "exposure", "user_id": "\xed\xa0\x80"}]}',
    ],
)
def test_invalid_utf8_is_invalid_as_a_whole(body: bytes) -> None:
    with pytest.raises(InvalidBody):
        parse_raw(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "body"),
        (b'[{"events": []}]', "body"),
        (b'"events"', "body"),
        (b"null", "body"),
        (b"{}", "events"),
        (b'{"event": []}', "event"),
        (b'{"events": {}}', "events"),
        (b'{"events": "exposure"}', "events"),
        (b'{"events": null}', "events"),
        (b'{"events": [], "user_id": "u"}', "user_id"),
    ],
)
def test_json_of_the_wrong_shape_is_an_invalid_batch_naming_the_field(
    body: bytes, field: str
) -> None:
    with pytest.raises(InvalidBatch) as raised:
        parse_raw(body)
    assert raised.value.field == field
    assert raised.value.status == 422


def test_an_empty_batch_is_valid() -> None:
    parsed = parse()
    assert (parsed.received, parsed.valid, parsed.rejected) == (0, [], [])


@pytest.mark.parametrize("valid", [True, False])
def test_too_many_events_is_too_large(valid: bool) -> None:
    events = [factories.exposure() for _ in range(MAX_EVENTS + 1)]
    if not valid:
        events[0] = {"type": "nope"}
    with pytest.raises(PayloadTooLarge) as raised:
        parse(*events)
    assert raised.value.field == "events"
    assert len(parse(*events[:MAX_EVENTS]).valid) == MAX_EVENTS - (0 if valid else 1)
