"""The collector while its database is unreachable: 503 with Retry-After, never 500, and
recovery without a restart.

The shared PostgreSQL server is never stopped: one collector points at a port nothing listens
on, another reaches the database through a TCP proxy the test closes and reopens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from core.auth.scopes import Scope
from tests import factories
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection, count, row_by_id
from tests.servers import (
    HTTP_TIMEOUT_S,
    RETRY_AFTER_S,
    TcpProxy,
    collector_settings,
    run_collector,
)

# Port 1 (tcpmux) is privileged and unused: connecting is refused at once.
REFUSING_URL = "postgresql://postgres@127.0.0.1:1/codelift"
# Bounds every wait for the collector to notice the database is back.
RECOVERY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def down_collector_url() -> Iterator[str]:
    """A collector whose database refuses every connection."""
    settings = collector_settings(REFUSING_URL, db_timeout_s=0.5)
    with run_collector(settings) as url:
        yield url


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)


def test_ingest_answers_503_when_the_database_is_down(
    down_collector_url: str, ingest_key: Key
) -> None:
    # Authentication itself needs the database, so it is the key lookup that finds it down.
    with httpx.Client(base_url=down_collector_url, timeout=HTTP_TIMEOUT_S) as client:
        response = client.post(
            "/v1/events",
            json=factories.batch(factories.suggestion_shown()),
            headers=ingest_key.headers,
        )
    assert_unavailable(response)
    assert response.json()["error"]["code"] == "database_unavailable"


def test_readyz_answers_503_when_the_database_is_down(down_collector_url: str) -> None:
    with httpx.Client(base_url=down_collector_url, timeout=HTTP_TIMEOUT_S) as client:
        ready = client.get("/readyz")
        alive = client.get("/healthz")
    assert_unavailable(ready)
    assert ready.json()["status"] == "unavailable"
    # Liveness does not depend on the database: restarting the process would not help.
    assert alive.status_code == 200


def test_requests_that_need_no_database_still_work_while_it_is_down(
    down_collector_url: str,
) -> None:
    with httpx.Client(base_url=down_collector_url, timeout=HTTP_TIMEOUT_S) as client:
        unauthenticated = client.post("/v1/events", json=factories.batch())
        metrics = client.get("/metrics")
    assert unauthenticated.status_code == 401
    assert metrics.status_code == 200


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test database's server."""
    parsed = make_url(database_url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_collector_recovers_when_the_database_comes_back(
    proxy: TcpProxy,
    database_url: str,
    pg: PgConnection,
    clean_events: None,
    ingest_key: Key,
    make_key: MakeKey,
) -> None:
    proxied_url = make_url(database_url).set(port=proxy.port).render_as_string(False)
    # A long auth cache: the first key stays cached through the outage, so the write path is
    # what meets the outage; a second, never-used key meets it in the key lookup.
    settings = collector_settings(proxied_url, db_timeout_s=1.0, auth_cache_ttl_s=300)
    fresh_key = make_key("fresh-plugin", [Scope.INGEST])
    with (
        run_collector(settings) as url,
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as client,
    ):
        before = factories.exposure()
        up = client.post("/v1/events", json=factories.batch(before), headers=ingest_key.headers)
        assert up.status_code == 200, up.text
        assert up.json()["stored"] == 1

        proxy.stop()
        during = factories.exposure()
        cached = client.post("/v1/events", json=factories.batch(during), headers=ingest_key.headers)
        assert_unavailable(cached)
        uncached = client.post(
            "/v1/events", json=factories.batch(during), headers=fresh_key.headers
        )
        assert_unavailable(uncached)
        assert_unavailable(client.get("/readyz"))

        # Back up: the pool reconnects in the background, with back-off; the same collector
        # process answers 200 again, without a restart.
        proxy.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            retried = client.post(
                "/v1/events", json=factories.batch(during), headers=fresh_key.headers
            )
            if retried.status_code == 200 or time.monotonic() > deadline:
                break
            assert_unavailable(retried)
            time.sleep(0.2)
        assert retried.status_code == 200, retried.text
        assert retried.json()["stored"] == 1
        assert client.get("/readyz").status_code == 200
    assert count(pg, "exposure") == 2
    assert row_by_id(pg, "exposure", during["event_id"])["arm"] == during["arm"]
