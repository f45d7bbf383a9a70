"""Hostile bodies that used to sink or silently change a batch: a number too long to read, keys
written twice, timestamps sent as numbers.

Each must cost only its own event (named by field, the rest of the batch stored), except a
second ``events`` array, which makes the whole body ambiguous (422).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collector.errors import InvalidBatch, InvalidBody
from collector.parsing import (
    MAX_INT_DIGITS,
    ParsedBatch,
    _distinct_keys,
    _most_keys,
    accepted_window,
    parse_batch,
    validate_events,
)
from collector.schemas import EventBatch
from tests import factories
from tests.apikeys import Key
from tests.database import EVENT_TABLES, PgConnection, count, counts, row_by_id, rows
from tests.factories import EVENT_TYPES, Event, now_utc
from tests.servers import HTTP_TIMEOUT_S, collector_settings, run_collector

BIG_BATCH = 1000
LONG_NUMBER = b"9" * (MAX_INT_DIGITS + 1)  # 4,301 digits: valid JSON
NOTHING_STORED = dict.fromkeys(EVENT_TABLES, 0)


def marked(event: Event, field: str) -> Event:
    """``event`` with ``field`` set to a marker that ``with_raw`` replaces by raw JSON."""
    return event | {field: f"@@{field}@@"}


def with_raw(body: bytes, field: str, token: bytes) -> bytes:
    """``body`` with the marker of ``field`` replaced by the JSON text ``token``."""
    marker = json.dumps(f"@@{field}@@").encode()
    assert body.count(marker) == 1
    return body.replace(marker, token)


def repeated(event: Event, key: str, value: Any, *, colon: bytes = b": ") -> bytes:
    """``event`` as JSON with ``key`` written once more at the end, with ``value``."""
    text = json.dumps(event).encode()
    return text[:-1] + b", " + json.dumps(key).encode() + colon + json.dumps(value).encode() + b"}"


def batch_of(*events: bytes) -> bytes:
    """A body from events already written as JSON."""
    return b'{"events": [' + b", ".join(events) + b"]}"


def as_json(event: Event) -> bytes:
    return json.dumps(event).encode()


def mixed(n: int, seed: int = 4) -> list[Event]:
    """``n`` valid events of types drawn by a seeded generator."""
    rng = random.Random(seed)
    return [factories.make(rng.choice(EVENT_TYPES)) for _ in range(n)]


def parse(body: bytes) -> ParsedBatch:
    window = accepted_window(
        now_utc(), max_age=dt.timedelta(days=7), max_skew=dt.timedelta(minutes=10)
    )
    return parse_batch(body, window=window, max_events=BIG_BATCH)


def rejected(parsed: ParsedBatch) -> list[tuple[int, str]]:
    return [(r.index, r.field) for r in parsed.rejected]


# --- over HTTP, with PostgreSQL --------------------------------------------------------------


@pytest.fixture(scope="module")
def big_collector_url(database_url: str) -> Iterator[str]:
    """A collector that takes batches of 1,000 events, as deployed."""
    settings = collector_settings(
        database_url, max_batch_events=BIG_BATCH, max_body_bytes=1024 * 1024
    )
    with run_collector(settings) as url:
        yield url


@pytest.fixture
def big_client(
    big_collector_url: str, clean_events: None, ingest_key: Key
) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=big_collector_url, timeout=HTTP_TIMEOUT_S, headers=ingest_key.headers
    ) as client:
        yield client


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})


def test_a_number_of_4301_digits_costs_only_its_event(
    big_client: httpx.Client, pg: PgConnection
) -> None:
    good = mixed(BIG_BATCH - 1)
    bad = marked(factories.suggestion_shown(), "chars")
    body = with_raw(factories.body(*good[:400], bad, *good[400:]), "chars", LONG_NUMBER)
    response = post(big_client, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["received"], answer["stored"]) == (BIG_BATCH, BIG_BATCH - 1)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(400, "chars")]
    assert "too large" in answer["rejected"][0]["reason"]
    stored = {row["event_id"] for table in EVENT_TABLES for row in rows(pg, table)}
    assert stored == {uuid.UUID(event["event_id"]) for event in good}


def test_a_long_number_and_a_lone_surrogate_are_each_named(
    big_client: httpx.Client, pg: PgConnection
) -> None:
    # pydantic's parser refuses both; the answer used to be one 400 about the hex escape.
    good = [factories.exposure(), factories.exposure()]
    number = marked(factories.suggestion_shown(), "chars")
    surrogate = marked(factories.feedback(), "text")
    body = factories.body(good[0], number, surrogate, good[1])
    body = with_raw(with_raw(body, "chars", LONG_NUMBER), "text", b'"\\ud800"')
    response = post(big_client, body)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [
        (1, "chars"),
        (2, "text"),
    ]
    assert counts(pg) == NOTHING_STORED | {"exposure": 2}


def test_a_second_events_array_is_422_naming_events(
    big_client: httpx.Client, pg: PgConnection
) -> None:
    first, second = as_json(factories.exposure()), as_json(factories.exposure())
    body = b'{"events": [' + first + b'], "events": [' + second + b"]}"
    response = post(big_client, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_batch", "events")
    assert "duplicate key 'events'" in error["message"]
    assert counts(pg) == NOTHING_STORED


@pytest.mark.parametrize(
    ("event", "key", "value", "field"),
    [
        (factories.exposure(), "client_ts", "2026-01-01T00:00:00Z", "client_ts"),
        (factories.exposure(), "type", "feedback", "type"),
        (factories.suggestion_shown(), "chars", 64, "chars"),
    ],
    ids=["client_ts", "type", "same value"],
)
def test_a_key_twice_in_an_event_rejects_that_event(
    big_client: httpx.Client, pg: PgConnection, event: Event, key: str, value: Any, field: str
) -> None:
    good = factories.exposure()
    response = post(big_client, batch_of(as_json(good), repeated(event, key, value)))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stored"] == 1
    assert answer["rejected"] == [{"index": 1, "field": field, "reason": f"duplicate key {key!r}"}]
    row_by_id(pg, "exposure", good["event_id"])
    assert sum(counts(pg).values()) == 1


def test_an_arm_twice_rejects_its_event(big_client: httpx.Client, pg: PgConnection) -> None:
    served = as_json(factories.completion_served()).replace(
        b'"arms": {', b'"arms": {"ctx-window": "control", '
    )
    response = post(big_client, batch_of(as_json(factories.exposure()), served))
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [
        (1, "arms.ctx-window")
    ]
    assert count(pg, "completion_served") == 0


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("exposure", "client_ts", 1_800_000_000),
        ("exposure", "client_ts", 1_800_000_000.5),
        ("exposure", "client_ts", "1800000000"),
        ("typing_volume", "window_start", 1_800_000_000),
        ("typing_volume", "window_end", 1.8e9),
    ],
    ids=["int", "float", "digit string", "int window_start", "float window_end"],
)
def test_a_timestamp_that_is_not_an_iso_string_is_rejected_by_field(
    big_client: httpx.Client, pg: PgConnection, event_type: str, field: str, value: Any
) -> None:
    # Unix seconds were read as a time (2027): now the contract's ISO 8601 string is required.
    bad = factories.make(event_type, **{field: value})
    good = factories.make(event_type)
    response = post(big_client, factories.body(good, bad))
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, field)]
    assert "ISO 8601" in response.json()["rejected"][0]["reason"]
    assert count(pg, event_type) == 1


# --- the parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "token", "reason"),
    [
        ("chars", LONG_NUMBER, "is a number too large to read (4301 digits"),
        ("chars", b"-" + LONG_NUMBER, "is a number too large to read (4301 digits"),
        ("chars", LONG_NUMBER[:-1], "less than or equal to 1000000"),
        ("user_id", LONG_NUMBER, "is a number too large to read"),
        ("schema_version", LONG_NUMBER, "is a number too large to read"),
        ("display_ms", LONG_NUMBER + b".5", "finite number"),
        ("unknown_field", LONG_NUMBER, "Extra inputs are not permitted"),
    ],
)
def test_a_long_number_is_rejected_by_field(field: str, token: bytes, reason: str) -> None:
    bad = marked(factories.suggestion_shown(), field)
    body = factories.body(factories.exposure(), bad, factories.exposure())
    parsed = parse(with_raw(body, field, token))
    assert len(parsed.valid) == 2
    assert rejected(parsed) == [(1, field)]
    assert reason in parsed.rejected[0].reason


def test_invalid_utf8_is_still_a_bad_body_beside_a_long_number() -> None:
    bad = marked(factories.suggestion_shown(), "chars")
    body = with_raw(factories.body(factories.exposure(user_id="@@"), bad), "chars", LONG_NUMBER)
    with pytest.raises(InvalidBody):
        parse(body.replace(b"@@", b"\xff"))


@pytest.mark.parametrize(
    ("key", "colon"),
    [
        ("user_id", b": "),
        ("user_id", b":"),
        ("user_id", b" : "),
        ("user_id", b"\n:\t"),
        ("user_id", b"\r\n  :"),
        ("user\\u005fid", b": "),
    ],
    ids=["default", "compact", "space", "newline-tab", "crlf", "escaped key"],
)
def test_a_repeated_key_is_found_however_it_is_written(key: str, colon: bytes) -> None:
    # The same valid value twice: pydantic alone accepts the whole batch.
    event = factories.exposure()
    twice = repeated(event, "@key@", event["user_id"], colon=colon).replace(
        b'"@key@"', b'"' + key.encode() + b'"'
    )
    body = batch_of(as_json(factories.exposure()), twice, as_json(factories.exposure()))
    parsed = parse(body)
    assert rejected(parsed) == [(1, "user_id")]
    assert len(parsed.valid) == 2
    assert parsed.rejected_types == {"exposure": 1}


def test_a_repeated_key_is_found_in_a_batch_that_fails_for_another_reason() -> None:
    twice = repeated(factories.exposure(), "arm", "control")
    body = batch_of(as_json(factories.suggestion_shown(chars=-1)), twice)
    assert rejected(parse(body)) == [(0, "chars"), (1, "arm")]


def test_a_repeated_key_deep_inside_a_value_is_named_by_its_path() -> None:
    depth = 300  # beyond pydantic's parser (200 levels), within the standard library's
    value = b'{"a": ' * depth + b'{"x": 1, "x": 2}' + b"}" * depth
    bad = with_raw(as_json(marked(factories.exposure(), "user_id")), "user_id", value)
    parsed = parse(batch_of(bad, as_json(factories.exposure())))
    assert rejected(parsed) == [(0, "user_id." + "a." * depth + "x")]


def test_arms_that_are_the_same_after_stripping_are_rejected() -> None:
    served = factories.completion_served(arms={"ctx-window": "control", " ctx-window ": "lora"})
    parsed = parse(factories.body(factories.exposure(), served))
    assert rejected(parsed) == [(1, "arms")]
    assert "' ctx-window '" in parsed.rejected[0].reason


def test_random_repeats_are_always_found() -> None:
    rng = random.Random(7)
    spacings = [b": ", b":", b" :", b"\n: ", b"\t:\t"]
    for _ in range(200):
        events = mixed(3, seed=rng.randrange(10**6))
        target = rng.randrange(3)
        event = events[target]
        key = rng.choice(sorted(event))
        written = [as_json(e) for e in events]
        written[target] = repeated(event, key, event[key], colon=rng.choice(spacings))
        parsed = parse(batch_of(*written))
        assert rejected(parsed) == [(target, key)], (key, parsed.rejected)


@pytest.mark.parametrize(
    "dumps",
    [
        json.dumps,
        lambda batch: json.dumps(batch, separators=(",", ":")),
        lambda batch: json.dumps(batch, indent=2),
        lambda batch: json.dumps(batch, ensure_ascii=False),
    ],
    ids=["default", "compact", "indented", "utf-8"],
)
def test_client_bodies_need_no_second_reading(dumps: Any) -> None:
    # The fast path reads a valid batch once: the key count must match for what clients send.
    events = mixed(200) + [factories.feedback(text="Très bien, merci — ça marche")]
    body = dumps(factories.batch(*events)).encode()
    assert _most_keys(body) == _distinct_keys(EventBatch.model_validate_json(body))
    assert len(parse(body).valid) == len(events)


@pytest.mark.parametrize("text", ['{"a": 1}', ":-)", "note : this", 'a \\": b'])
def test_strings_that_look_like_keys_are_kept(text: str) -> None:
    # They make the count too high, so the body is read again: and nothing is refused.
    event = factories.feedback(text=text)
    body = factories.body(factories.exposure(), event)
    assert _most_keys(body) > _distinct_keys(EventBatch.model_validate_json(body))
    parsed = parse(body)
    assert parsed.rejected == []
    assert parsed.valid[1].text == text  # type: ignore[attr-defined]


def test_events_twice_is_an_invalid_batch_even_when_one_is_empty() -> None:
    with pytest.raises(InvalidBatch) as raised:
        parse(b'{"events": [], "events": []}')
    assert raised.value.field == "events"


def test_writers_inside_codelift_may_pass_datetimes() -> None:
    window = accepted_window(now_utc(), max_age=dt.timedelta(days=7), max_skew=dt.timedelta(0))
    moment = now_utc() - dt.timedelta(minutes=1)
    parsed = validate_events(
        [
            factories.exposure(client_ts=moment),
            factories.exposure(client_ts=moment.isoformat()),
            factories.exposure(client_ts=moment.timestamp()),
            factories.exposure(client_ts=moment.replace(tzinfo=None)),
            factories.exposure(client_ts=moment.date()),
        ],
        window=window,
    )
    assert [event.client_ts for event in parsed.valid] == [moment, moment]
    assert [(r.index, r.field) for r in parsed.rejected] == [
        (2, "client_ts"),
        (3, "client_ts"),
        (4, "client_ts"),
    ]
    assert "timezone info" in parsed.rejected[1].reason


def test_timestamps_are_described_as_date_time_strings() -> None:
    schema = EventBatch.model_json_schema()["$defs"]
    for model, field in [("Exposure", "client_ts"), ("TypingVolume", "window_start")]:
        described = schema[model]["properties"][field]
        assert (described["type"], described["format"]) == ("string", "date-time")
