"""POST /v1/events over real HTTP: storage, partial batches, idempotency, and bad bodies."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import factories
from tests.database import EVENT_TABLES, PgConnection, count, counts, row_by_id, rows
from tests.factories import EVENT_TYPES, Event, iso, now_utc, without
from tests.servers import MAX_BATCH_EVENTS, MAX_BODY_BYTES

DATETIME_FIELDS = frozenset({"client_ts", "window_start", "window_end"})
UUID_FIELDS = frozenset({"event_id", "feedback_id"})
NOTHING_STORED = dict.fromkeys(EVENT_TABLES, 0)


def answer(received: int, *, stored: int, duplicates: int) -> dict[str, object]:
    """The collector's answer to a batch with nothing rejected and no conflicts."""
    return {
        "received": received,
        "stored": stored,
        "duplicates": duplicates,
        "conflicts": 0,
        "conflicting": [],
        "rejected": [],
    }


def expected_columns(event: Event) -> dict[str, Any]:
    """The row an event must become: every wire field but ``type``, in Python types."""
    columns: dict[str, Any] = {}
    for field, value in event.items():
        if field == "type":
            continue
        if field in DATETIME_FIELDS:
            value = dt.datetime.fromisoformat(value)
        elif field in UUID_FIELDS and value is not None:
            value = uuid.UUID(value)
        columns[field] = value
    return columns


def assert_stored(row: dict[str, Any], event: Event, *, after: dt.datetime) -> None:
    """Every column of ``row`` holds what ``event`` sent; received_at is the server's."""
    expected = expected_columns(event)
    assert set(row) == {*expected, "received_at"}
    for field, value in expected.items():
        assert row[field] == value, field
        assert type(row[field]) is type(value), field
    for field in DATETIME_FIELDS & set(row):
        assert row[field].utcoffset() == dt.timedelta(0), field
    assert row["received_at"].utcoffset() == dt.timedelta(0)
    assert after <= row["received_at"] <= now_utc()


def post(client: httpx.Client, *events: Any) -> httpx.Response:
    return client.post("/v1/events", json=factories.batch(*events))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_event_type_round_trips_into_its_table(
    client: httpx.Client, pg: PgConnection, event_type: str
) -> None:
    event = factories.make(event_type)
    before = now_utc()
    response = post(client, event)
    assert response.status_code == 200, response.text
    assert response.json() == answer(1, stored=1, duplicates=0)
    assert_stored(row_by_id(pg, event_type, event["event_id"]), event, after=before)
    assert counts(pg) == NOTHING_STORED | {event_type: 1}


def test_a_mixed_batch_lands_in_each_table_with_every_column(
    client: httpx.Client, pg: PgConnection
) -> None:
    events = [factories.make(t) for t in EVENT_TYPES for _ in range(2)]
    events.reverse()
    before = now_utc()
    response = post(client, *events)
    assert response.status_code == 200, response.text
    assert response.json() == answer(14, stored=14, duplicates=0)
    assert counts(pg) == dict.fromkeys(EVENT_TABLES, 2)
    received_at = set()
    for event in events:
        row = row_by_id(pg, event["type"], event["event_id"])
        assert_stored(row, event, after=before)
        received_at.add(row["received_at"])
    # One batch, one arrival time.
    assert len(received_at) == 1


def test_optional_fields_left_out_are_stored_as_defaults(
    client: httpx.Client, pg: PgConnection
) -> None:
    served = without(
        factories.completion_served(), "arms", "adapter", "backend_latency_ms", "error"
    )
    outcome = without(factories.suggestion_outcome(outcome="ignored"), "accepted_chars")
    outcome = without(outcome, "accepted_lines", "reason", "schema_version")
    response = post(client, served, outcome)
    assert response.json()["stored"] == 2
    row = row_by_id(pg, "completion_served", served["event_id"])
    assert (row["arms"], row["adapter"], row["backend_latency_ms"], row["error"]) == (
        {},
        None,
        None,
        None,
    )
    row = row_by_id(pg, "suggestion_outcome", outcome["event_id"])
    assert (row["accepted_chars"], row["accepted_lines"], row["reason"]) == (0, 0, None)
    assert row["schema_version"] == 1


def test_labels_are_stored_lower_case_and_timestamps_as_utc(
    client: httpx.Client, pg: PgConnection
) -> None:
    moment = now_utc().replace(microsecond=250000) - dt.timedelta(hours=1)
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    event = factories.suggestion_shown(ide="JetBrains", language=" Rust ", client_ts=iso(local))
    assert post(client, event).json()["stored"] == 1
    row = row_by_id(pg, "suggestion_shown", event["event_id"])
    assert (row["ide"], row["language"]) == ("jetbrains", "rust")
    assert row["client_ts"] == moment
    assert row["client_ts"].utcoffset() == dt.timedelta(0)


def test_a_partly_invalid_batch_stores_the_valid_events(
    client: httpx.Client, pg: PgConnection
) -> None:
    good = [factories.suggestion_shown(), factories.persistence_check(), factories.feedback()]
    bad_ratio = factories.persistence_check(edit_distance_ratio=1.5)
    bad_type = {"type": "suggestion_typed"}
    response = post(client, good[0], bad_ratio, good[1], bad_type, good[2])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["received"], body["stored"], body["duplicates"]) == (5, 3, 0)
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "edit_distance_ratio"),
        (3, "type"),
    ]
    assert all(r["reason"] for r in body["rejected"])
    assert counts(pg) == NOTHING_STORED | {
        "suggestion_shown": 1,
        "persistence_check": 1,
        "feedback": 1,
    }
    stored_checks = [row["event_id"] for row in rows(pg, "persistence_check")]
    assert stored_checks == [uuid.UUID(good[1]["event_id"])]


def test_a_batch_with_only_invalid_events_is_422_and_stores_nothing(
    client: httpx.Client, pg: PgConnection
) -> None:
    response = post(
        client,
        factories.suggestion_shown(chars=-5),
        without(factories.exposure(), "arm"),
        "not an event",
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["received"], body["stored"], body["duplicates"]) == (3, 0, 0)
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (0, "chars"),
        (1, "arm"),
        (2, "(event)"),
    ]
    assert counts(pg) == NOTHING_STORED


def test_an_event_with_several_problems_counts_once_towards_the_422(
    client: httpx.Client, pg: PgConnection
) -> None:
    # Two rejections of one event out of two events: one event is still valid, so 200.
    response = post(
        client, factories.suggestion_shown(chars=-1, lines=-1), factories.suggestion_shown()
    )
    assert response.status_code == 200
    assert [r["index"] for r in response.json()["rejected"]] == [0, 0]
    assert count(pg, "suggestion_shown") == 1


def test_an_empty_batch_is_accepted(client: httpx.Client) -> None:
    response = post(client)
    assert response.status_code == 200
    assert response.json() == answer(0, stored=0, duplicates=0)


def test_the_same_batch_twice_is_stored_once(client: httpx.Client, pg: PgConnection) -> None:
    events = [factories.make(t) for t in EVENT_TYPES]
    first = post(client, *events)
    assert first.json() == answer(7, stored=7, duplicates=0)
    second = post(client, *events)
    assert second.status_code == 200
    assert second.json() == answer(7, stored=0, duplicates=7)
    assert counts(pg) == dict.fromkeys(EVENT_TABLES, 1)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_duplicate_inside_one_batch_is_stored_once(
    client: httpx.Client, pg: PgConnection, event_type: str
) -> None:
    event = factories.make(event_type)
    response = post(client, event, event, event)
    assert response.json() == answer(3, stored=1, duplicates=2)
    assert count(pg, event_type) == 1


def test_a_retried_partly_invalid_batch_reports_duplicates_and_rejections(
    client: httpx.Client, pg: PgConnection
) -> None:
    events = [factories.exposure(), factories.exposure(arm=""), factories.typing_volume()]
    assert post(client, *events).json()["stored"] == 2
    retry = post(client, *events).json()
    assert (retry["stored"], retry["duplicates"]) == (0, 2)
    assert [(r["index"], r["field"]) for r in retry["rejected"]] == [(1, "arm")]
    assert counts(pg) == NOTHING_STORED | {"exposure": 1, "typing_volume": 1}


def test_duplicates_and_new_events_in_one_batch(client: httpx.Client, pg: PgConnection) -> None:
    old = [factories.suggestion_outcome() for _ in range(3)]
    post(client, *old)
    new = [factories.suggestion_outcome() for _ in range(2)]
    response = post(client, *new, *old)
    assert response.json() == answer(5, stored=2, duplicates=3)
    assert count(pg, "suggestion_outcome") == 5


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00"])
def test_a_lone_surrogate_rejects_only_its_event(
    client: httpx.Client, pg: PgConnection, escape: bytes
) -> None:
    good = factories.feedback()
    bad = factories.feedback(text="@@")
    body = factories.body(good, bad).replace(b'"@@"', b'"before ' + escape + b' after"')
    response = client.post("/v1/events", content=body)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, "text")]
    assert [row["event_id"] for row in rows(pg, "feedback")] == [uuid.UUID(good["event_id"])]


def test_a_lone_surrogate_in_a_field_name_is_no_server_error(client: httpx.Client) -> None:
    body = factories.body(factories.exposure(), {"type": "exposure", "\\ud800": 1})
    response = client.post("/v1/events", content=body.replace(b"\\\\ud800", b"\\ud800"))
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["rejected"]] == [1]
    top_level = b'{"events": [], "\\ud800": 1}'
    response = client.post("/v1/events", content=top_level)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "\\ud800"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_in_the_body_reject_only_their_event(
    client: httpx.Client, pg: PgConnection, token: bytes
) -> None:
    good = factories.completion_served()
    bad = factories.completion_served(latency_ms="@@")
    body = factories.body(good, bad).replace(b'"@@"', token)
    response = client.post("/v1/events", content=body)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, "latency_ms")]
    assert count(pg, "completion_served") == 1


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"events",
        b'{"events": [',
        b'{"events": [{"type": "exposure"},]}',
        b'{"events": [] } trailing',
    ],
)
def test_a_body_that_is_not_json_is_400_and_nothing_is_stored(
    client: httpx.Client, pg: PgConnection, body: bytes
) -> None:
    assert_error(client.post("/v1/events", content=body), 400, "invalid_body", None)
    assert counts(pg) == NOTHING_STORED


@pytest.mark.parametrize(
    "body",
    [
        b"\xff" + factories.body(factories.exposure()),
        factories.body(factories.exposure(user_id="@@")).replace(b"@@", b"\xc3\x28"),
        factories.body(factories.exposure(), factories.exposure(arm="@@")).replace(
            b"@@", b"\xed\xa0\x80"
        ),
    ],
    ids=["leading-ff", "bad-continuation", "encoded-surrogate"],
)
def test_invalid_utf8_is_400_and_nothing_is_stored(
    client: httpx.Client, pg: PgConnection, body: bytes
) -> None:
    assert_error(client.post("/v1/events", content=body), 400, "invalid_body", None)
    assert counts(pg) == NOTHING_STORED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "body"),
        (json.dumps([factories.exposure()]).encode(), "body"),
        (b"42", "body"),
        (b"{}", "events"),
        (json.dumps({"event": [factories.exposure()]}).encode(), "event"),
        (json.dumps({"events": factories.exposure()}).encode(), "events"),
        (b'{"events": "none"}', "events"),
        (json.dumps({"events": [factories.exposure()], "batch_id": "b1"}).encode(), "batch_id"),
    ],
)
def test_json_of_the_wrong_shape_is_422_naming_the_field(
    client: httpx.Client, pg: PgConnection, body: bytes, field: str
) -> None:
    assert_error(client.post("/v1/events", content=body), 422, "invalid_batch", field)
    assert counts(pg) == NOTHING_STORED


def padded_body(size: int) -> bytes:
    """A valid, empty batch of exactly ``size`` bytes (padded with JSON whitespace)."""
    head, tail = b'{"events": [', b"]}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def in_chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_body_at_the_size_limit_is_accepted(client: httpx.Client) -> None:
    body = padded_body(MAX_BODY_BYTES)
    assert client.post("/v1/events", content=body).status_code == 200
    assert client.post("/v1/events", content=in_chunks(body)).status_code == 200


def test_a_body_over_the_size_limit_is_413(client: httpx.Client, pg: PgConnection) -> None:
    body = padded_body(MAX_BODY_BYTES + 1)
    assert_error(client.post("/v1/events", content=body), 413, "payload_too_large", "body")
    assert counts(pg) == NOTHING_STORED


def test_a_chunked_body_over_the_size_limit_is_413(client: httpx.Client, pg: PgConnection) -> None:
    # No Content-Length: the limit must be enforced while reading the stream.
    big = [factories.exposure() for _ in range(MAX_BATCH_EVENTS)]
    body = factories.body(*big)
    body = body[:-2] + b" " * (MAX_BODY_BYTES + 1 - len(body)) + b"]}"
    request = client.build_request("POST", "/v1/events", content=in_chunks(body))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert_error(client.send(request), 413, "payload_too_large", "body")
    assert counts(pg) == NOTHING_STORED


def test_more_events_than_allowed_is_413(client: httpx.Client, pg: PgConnection) -> None:
    events = [factories.exposure() for _ in range(MAX_BATCH_EVENTS + 1)]
    assert_error(post(client, *events), 413, "payload_too_large", "events")
    assert counts(pg) == NOTHING_STORED
    assert post(client, *events[:MAX_BATCH_EVENTS]).json()["stored"] == MAX_BATCH_EVENTS


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"],
)
def test_a_body_that_is_not_declared_json_is_415(
    client: httpx.Client, pg: PgConnection, content_type: str
) -> None:
    response = client.post(
        "/v1/events",
        content=factories.body(factories.exposure()),
        headers={"Content-Type": content_type},
    )
    assert_error(response, 415, "unsupported_media_type", "Content-Type")
    assert counts(pg) == NOTHING_STORED


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_with_parameters_are_accepted(
    client: httpx.Client, content_type: str
) -> None:
    response = client.post(
        "/v1/events",
        content=factories.body(factories.exposure()),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_is_415(client: httpx.Client, pg: PgConnection, encoding: str) -> None:
    body = gzip.compress(factories.body(factories.exposure()))
    response = client.post(
        "/v1/events",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert_error(response, 415, "unsupported_media_type", "Content-Encoding")
    assert counts(pg) == NOTHING_STORED


def test_other_methods_and_paths_are_not_found_or_not_allowed(client: httpx.Client) -> None:
    assert client.get("/v1/events").status_code == 405
    assert client.post("/v1/event", json=factories.batch()).status_code == 404


def test_the_openapi_schema_describes_the_batch(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventBatch"
    }
    assert "SuggestionShown" in schema["components"]["schemas"]
