"""Hostile and broken input, case by case, against the collector and the gateway over HTTP.

Oversized bodies, deep JSON, huge strings, invalid UTF-8, SQL-looking strings, negative and NaN
numbers, wrong types, future and ancient timestamps: each gets a 4xx naming the field (or the
body), never a 500, and nothing else in the batch is lost. SQL-looking strings are data: they
are stored verbatim.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from serving.gateway.config import GatewaySettings
from serving.scripted_backend import ScriptedBackend
from tests import factories
from tests.apikeys import Key
from tests.database import PgConnection, count, row_by_id
from tests.experiment_factories import DEFAULT_VARIANT
from tests.factories import Event
from tests.servers import MAX_BODY_BYTES, running_gateway

SQL_LOOKING = [
    "x'); DROP TABLE suggestion_shown; --",
    "1 OR 1=1",
    "\\'; SELECT pg_sleep(10); --",
    "$$; COPY api_keys TO '/tmp/k'; $$",
]


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def set_field(name: str, value: Any) -> Callable[[Event], Event]:
    def apply(event: Event) -> Event:
        return event | {name: value}

    return apply


def days_from_now(days: float) -> str:
    return factories.iso(factories.now_utc() + dt.timedelta(days=days))


# (case id, change to a valid suggestion_shown event, the field the rejection must name)
EVENT_CASES: list[tuple[str, Callable[[Event], Event], str]] = [
    ("huge user_id", set_field("user_id", "u" * 20_000), "user_id"),
    ("huge plugin_version", set_field("plugin_version", "9" * 20_000), "plugin_version"),
    ("negative display_ms", set_field("display_ms", -1.5), "display_ms"),
    ("negative chars", set_field("chars", -5), "chars"),
    ("too many lines", set_field("lines", 10**12), "lines"),
    ("string for a count", set_field("chars", "many"), "chars"),
    ("number for a flag", set_field("multiline", 1), "multiline"),
    ("string for a flag", set_field("multiline", "yes"), "multiline"),
    ("number for an id", set_field("event_id", 12), "event_id"),
    ("not a uuid", set_field("event_id", "' OR 1=1 --"), "event_id"),
    ("number for a time", set_field("client_ts", 1_700_000_000), "client_ts"),
    ("object for a string", set_field("user_id", {"$ne": None}), "user_id"),
    ("list for a string", set_field("language", ["python"]), "language"),
    ("null for a required field", set_field("session_id", None), "session_id"),
    ("unknown trigger", set_field("trigger", "telepathy"), "trigger"),
    ("future timestamp", set_field("client_ts", days_from_now(1)), "client_ts"),
    ("far future timestamp", set_field("client_ts", "9999-12-31T23:59:59Z"), "client_ts"),
    ("ancient timestamp", set_field("client_ts", "1970-01-01T00:00:00Z"), "client_ts"),
    ("year zero", set_field("client_ts", "0000-01-01T00:00:00Z"), "client_ts"),
    ("no time zone", set_field("client_ts", "2026-01-01T00:00:00"), "client_ts"),
    ("deep value", set_field("user_id", json.loads(deep(100))), "user_id"),
]


@pytest.mark.parametrize(
    ("change", "field"), [case[1:] for case in EVENT_CASES], ids=[case[0] for case in EVENT_CASES]
)
def test_a_bad_event_is_rejected_by_field_and_its_neighbours_are_stored(
    client: httpx.Client, pg: PgConnection, change: Callable[[Event], Event], field: str
) -> None:
    good = factories.suggestion_shown()
    bad = change(factories.suggestion_shown())
    response = client.post("/v1/events", json=factories.batch(good, bad))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stored"] == 1
    assert {r["index"] for r in answer["rejected"]} == {1}
    assert field in {r["field"] for r in answer["rejected"]}, answer["rejected"]
    row_by_id(pg, "suggestion_shown", good["event_id"])


def test_nan_and_infinite_numbers_are_rejected_by_field(client: httpx.Client) -> None:
    # JSON has no NaN, but many encoders write it; it must cost only its own event.
    good, bad = factories.suggestion_shown(), factories.suggestion_shown(display_ms=1.0)
    for literal in ("NaN", "-Infinity"):
        bad["event_id"] = factories.suggestion_shown()["event_id"]
        raw = json.dumps(factories.batch(good, bad)).replace(
            '"display_ms": 1.0', f'"display_ms": {literal}'
        )
        response = client.post(
            "/v1/events", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
        assert [r["field"] for r in response.json()["rejected"]] == ["display_ms"]


@pytest.mark.parametrize("text", SQL_LOOKING)
def test_sql_looking_strings_are_stored_verbatim(
    client: httpx.Client, pg: PgConnection, text: str
) -> None:
    event = factories.suggestion_shown(user_id=text[:128], session_id=text[:128])
    feedback = factories.feedback(text=text)
    response = client.post("/v1/events", json=factories.batch(event, feedback))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 2
    row = row_by_id(pg, "suggestion_shown", event["event_id"])
    assert (row["user_id"], row["session_id"]) == (text.strip()[:128], text.strip()[:128])
    assert row_by_id(pg, "feedback", feedback["event_id"])["text"] == text
    assert count(pg, "api_keys") >= 1


# (case id, raw body, expected status, the error's field)
BODY_CASES: list[tuple[str, bytes, int, str | None]] = [
    ("deep array", deep(20_000).encode(), 400, None),
    ("deep events", b'{"events": ' + deep(20_000).encode() + b"}", 400, None),
    ("deep object", b'{"events": [' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}", 400, None),
    ("invalid UTF-8", b'{"events": [{"user_id": "\xff\xfe"}]}', 400, None),
    ("truncated", b'{"events": [{"type": "suggestion_shown"', 400, None),
    ("not an object", b"[1, 2, 3]", 422, "body"),
    ("events not a list", b'{"events": "all of them"}', 422, "events"),
    ("unknown top-level field", b'{"events": [], "drop": "table"}', 422, "drop"),
    ("oversized", b'{"events": ["' + b"x" * (MAX_BODY_BYTES + 1) + b'"]}', 413, "body"),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES]
)
def test_a_broken_body_is_refused_whole_with_a_4xx(
    client: httpx.Client, pg: PgConnection, body: bytes, status: int, field: str | None
) -> None:
    response = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if field is not None:
        assert error["field"] == field
    assert count(pg, "suggestion_shown") == 0


# --- the gateway ---------------------------------------------------------------------------------

GATEWAY_MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def gateway_url(database_url: str) -> Iterator[str]:
    settings = GatewaySettings.model_validate(
        {
            "database_url": database_url,
            "environment": "test",
            "default_variant": DEFAULT_VARIANT,
            "experiments": False,
            "max_body_bytes": GATEWAY_MAX_BODY_BYTES,
            "rate_limit_per_s": 10_000.0,
            "rate_limit_burst": 10_000,
        }
    )
    with running_gateway(settings, {"local": ScriptedBackend("    return 1\n")}) as url:
        yield url


def completion(**changes: Any) -> dict[str, Any]:
    return {"prompt": "def f():\n", "user": "dev-1", "max_tokens": 8} | changes


# (case id, request body, the param the 400 must name)
GATEWAY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("negative max_tokens", completion(max_tokens=-1), "max_tokens"),
    ("huge max_tokens", completion(max_tokens=10**9), "max_tokens"),
    ("string max_tokens", completion(max_tokens="ten"), "max_tokens"),
    ("negative temperature", completion(temperature=-0.5), "temperature"),
    ("number prompt", completion(prompt=123), "prompt"),
    ("object user", completion(user={"$gt": ""}), "user"),
    ("huge user", completion(user="u" * 10_000), "user"),
    ("missing user", {"prompt": "x"}, "user"),
    ("deep stop", completion(stop=json.loads(deep(50))), "stop"),
    ("too many prompts", completion(prompt=["a", "b"]), "prompt"),
]


@pytest.mark.parametrize(
    ("body", "param"), [c[1:] for c in GATEWAY_CASES], ids=[c[0] for c in GATEWAY_CASES]
)
def test_the_gateway_refuses_a_bad_field_by_name(
    gateway_url: str, serve_only_key: Key, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/completions", json=body, headers=serve_only_key.headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"prompt": "x", "user": "u", "temperature": NaN}', 400),
        (b'{"prompt": "x", "user": "u", "max_tokens": Infinity}', 400),
        (b'{"prompt": "\xff\xfe", "user": "u"}', 400),
        (deep(20_000).encode(), 400),
        (b'{"prompt": "' + b"x" * GATEWAY_MAX_BODY_BYTES + b'", "user": "u"}', 413),
    ],
    ids=["NaN", "Infinity", "invalid UTF-8", "deep JSON", "oversized"],
)
def test_the_gateway_refuses_a_broken_body(
    gateway_url: str, serve_only_key: Key, raw: bytes, status: int
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/completions",
        content=raw,
        headers={**serve_only_key.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("text", SQL_LOOKING)
def test_the_gateway_serves_sql_looking_and_huge_code(
    gateway_url: str, serve_only_key: Key, text: str
) -> None:
    # Code is code: quotes, comments and a big file (cut to the arm's budget) are served.
    body = completion(prompt=text + "\n" + "x = 1\n" * 8000, suffix=text, user=text[:100])
    response = httpx.post(
        f"{gateway_url}/v1/completions", json=body, headers=serve_only_key.headers
    )
    assert response.status_code == 200, response.text
