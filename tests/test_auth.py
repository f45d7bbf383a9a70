"""API keys on POST /v1/events: who may send events, and how fast a revocation bites."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.auth.keys import generate_secret, hash_key
from core.auth.scopes import Scope
from core.auth.verify import AuthError, KeyVerifier, Principal
from core.db.connection import libpq_conninfo
from tests import factories
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection, counts
from tests.servers import AUTH_CACHE_TTL_S


def post(http: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return http.post(
        "/v1/events", json=factories.batch(factories.suggestion_shown()), headers=headers
    )


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("unauthenticated", "Authorization")


def assert_forbidden(response: httpx.Response, message: str) -> None:
    assert response.status_code == 403, response.text
    assert "www-authenticate" not in response.headers
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("forbidden", "Authorization")
    assert message in error["message"]


def test_no_authorization_header_is_401(http: httpx.Client, pg: PgConnection) -> None:
    assert_unauthenticated(post(http, {}))
    assert sum(counts(pg).values()) == 0


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNzd29yZA==", "Bearer", "Token cl_abc", "cl_abc", "Bearer\tcl_abc"]
)
def test_a_malformed_authorization_header_is_401(http: httpx.Client, header: str) -> None:
    assert_unauthenticated(post(http, {"Authorization": header}))


@pytest.mark.parametrize("header", [b"Bearer ", b"Bearer    ", b"Bearer \t "])
def test_bearer_with_an_empty_key_is_401(collector_url: str, header: bytes) -> None:
    # httpx refuses to send a header value ending in whitespace, so this one is written by hand.
    url = httpx.URL(collector_url)
    assert url.port is not None
    body = factories.body(factories.exposure())
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: " + header + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (h.split(": ", 1) for h in header_lines)}
    assert status_line.split()[1] == "401", answer
    assert headers["www-authenticate"] == "Bearer"
    assert json.loads(payload)["error"]["field"] == "Authorization"


def test_an_unknown_key_is_401(http: httpx.Client) -> None:
    assert_unauthenticated(post(http, {"Authorization": f"Bearer {generate_secret()}"}))


def test_a_key_is_not_accepted_by_its_prefix_or_hash(http: httpx.Client, ingest_key: Key) -> None:
    for wrong in (ingest_key.secret[:10], hash_key(ingest_key.secret), ingest_key.secret + "x"):
        assert_unauthenticated(post(http, {"Authorization": f"Bearer {wrong}"}))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_ingest_key_is_accepted_with_any_scheme_case(
    http: httpx.Client, ingest_key: Key, scheme: str
) -> None:
    response = post(http, {"Authorization": f"{scheme} {ingest_key.secret}"})
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1


def test_a_revoked_key_is_403(http: httpx.Client, revoked_key: Key) -> None:
    assert_forbidden(post(http, revoked_key.headers), "has been revoked")


def test_a_key_without_the_ingest_scope_is_403(http: httpx.Client, serve_only_key: Key) -> None:
    assert_forbidden(post(http, serve_only_key.headers), "lacks the 'ingest' scope")


def test_the_admin_scope_does_not_imply_ingest(http: httpx.Client, make_key: MakeKey) -> None:
    key = make_key("admin-console", [Scope.ADMIN, Scope.SERVE])
    assert_forbidden(post(http, key.headers), "lacks the 'ingest' scope")


def test_a_key_with_several_scopes_including_ingest_is_accepted(
    http: httpx.Client, make_key: MakeKey
) -> None:
    key = make_key("all-in-one", [Scope.SERVE, Scope.INGEST, Scope.ADMIN])
    assert post(http, key.headers).status_code == 200


def test_authentication_comes_before_reading_the_body(http: httpx.Client) -> None:
    response = http.post("/v1/events", content=b"not json", headers={"Content-Type": "text/plain"})
    assert_unauthenticated(response)


@pytest.fixture
def temporary_key(make_key: MakeKey) -> Key:
    """An ingest key deleted after the test."""
    return make_key("short-lived", [Scope.INGEST])


def test_revocation_takes_effect_after_the_cache_ttl(
    http: httpx.Client, pg: PgConnection, temporary_key: Key
) -> None:
    assert post(http, temporary_key.headers).status_code == 200
    pg.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (temporary_key.id,))
    # The collector may keep trusting its cached answer for up to the TTL, never longer.
    time.sleep(AUTH_CACHE_TTL_S + 0.2)
    assert_forbidden(post(http, temporary_key.headers), "has been revoked")


def test_a_deleted_key_stops_working_after_the_cache_ttl(
    http: httpx.Client, pg: PgConnection, temporary_key: Key
) -> None:
    assert post(http, temporary_key.headers).status_code == 200
    pg.execute("DELETE FROM api_keys WHERE id = %s", (temporary_key.id,))
    time.sleep(AUTH_CACHE_TTL_S + 0.2)
    assert_unauthenticated(post(http, temporary_key.headers))


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def authenticate(verifier: KeyVerifier, secret: str) -> Principal:
    return await verifier.authenticate(f"Bearer {secret}", Scope.INGEST)


def test_the_verifier_caches_answers_for_exactly_the_ttl(
    database_url: str, pg: PgConnection, temporary_key: Key
) -> None:
    # The cache, made deterministic with a hand-moved clock, against the real database.
    unknown = generate_secret()

    async def scenario() -> None:
        clock = FakeClock()
        async with AsyncConnectionPool(
            libpq_conninfo(database_url), min_size=1, max_size=1, open=False
        ) as pool:
            verifier = KeyVerifier(pool, ttl_s=5.0, clock=clock)
            principal = await authenticate(verifier, temporary_key.secret)
            assert principal.key_id == temporary_key.id
            assert principal.scopes == frozenset({"ingest"})
            with pytest.raises(AuthError) as raised:
                await authenticate(verifier, unknown)
            assert raised.value.status == 401

            pg.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (temporary_key.id,))
            pg.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, scopes) "
                "VALUES ('late', %s, %s, ARRAY['ingest'])",
                (unknown[:10], hash_key(unknown)),
            )
            clock.now += 4.9
            # Within the TTL both answers come from the cache.
            assert (await authenticate(verifier, temporary_key.secret)).revoked is False
            with pytest.raises(AuthError):
                await authenticate(verifier, unknown)

            clock.now += 0.2
            with pytest.raises(AuthError) as raised:
                await authenticate(verifier, temporary_key.secret)
            assert raised.value.status == 403
            assert (await authenticate(verifier, unknown)).name == "late"

    try:
        asyncio.run(scenario())
    finally:
        pg.execute("DELETE FROM api_keys WHERE key_hash = %s", (hash_key(unknown),))


def test_the_verifier_cache_is_bounded(
    database_url: str, pg: PgConnection, make_key: MakeKey
) -> None:
    key = make_key("bounded", [Scope.INGEST])

    async def scenario() -> None:
        async with AsyncConnectionPool(
            libpq_conninfo(database_url), min_size=1, max_size=1, open=False
        ) as pool:
            verifier = KeyVerifier(pool, ttl_s=3600, max_entries=3, clock=FakeClock())
            await authenticate(verifier, key.secret)
            pg.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key.id,))
            # A flood of unknown keys fills the cache of misses, never the one of known keys:
            # the good key is still answered from the cache (a revocation shows after the TTL).
            for _ in range(3):
                with pytest.raises(AuthError):
                    await authenticate(verifier, generate_secret())
            assert (await authenticate(verifier, key.secret)).revoked is False

    asyncio.run(scenario())
