"""Hostile clients: slow bodies, oversize or unfinished heads, floods of unknown keys.

A collector runs as its own process (``codelift collector``, so with the uvicorn protocol and
settings production uses) with a small in-flight limit and a short header timeout; every
attack here used to starve or bloat it (slots held for the whole body timeout, heads growing
without bound, connections kept forever, a database query per unknown key).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from collector.main import create_app, http_limits
from core.auth.keys import generate_secret
from core.auth.scopes import Scope
from core.auth.verify import AuthError, KeyLookupThrottled, KeyVerifier
from core.db.connection import libpq_conninfo
from core.http_service import running_in_thread
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app as create_gateway
from serving.gateway.server import running
from serving.scripted_backend import ScriptedBackend
from tests import factories
from tests.apikeys import Key, MakeKey
from tests.experiment_factories import DEFAULT_VARIANT
from tests.processes import ServiceProcess, service_process
from tests.servers import collector_settings

MAX_IN_FLIGHT = 4
READERS_PER_KEY = 8
HEADER_TIMEOUT_S = 1.0
BODY_GRACE_S = 3.0
WAIT_S = 10.0
# What four 64 MiB heads may add to the collector's memory; they added 366 MB before.
RSS_GROWTH_LIMIT_KIB = 24 * 1024


@pytest.fixture(scope="module")
def collector(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    env = {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
        "CODELIFT_COLLECTOR_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "CODELIFT_COLLECTOR_DB_POOL_MAX": str(MAX_IN_FLIGHT),
        "CODELIFT_COLLECTOR_MAX_BODY_READERS": str(4 * READERS_PER_KEY),
        "CODELIFT_COLLECTOR_MAX_BODY_READERS_PER_KEY": str(READERS_PER_KEY),
        "CODELIFT_COLLECTOR_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "CODELIFT_COLLECTOR_BODY_GRACE_S": str(BODY_GRACE_S),
        "CODELIFT_COLLECTOR_RETRY_AFTER_S": "1",
    }
    log = tmp_path_factory.mktemp("hostile") / "collector.log"
    with service_process("collector", env, log=log) as service:
        yield service


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def trickler(url: str, path: str, key: Key, *, declared: int = 100_000) -> socket.socket:
    """A request whose headers arrive but whose body then comes a byte at a time."""
    sock = connect(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key.secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{")
    return sock


class Drip:
    """Sends one byte to each socket every ``interval_s`` until stopped (far under the floor)."""

    def __init__(self, socks: list[socket.socket], interval_s: float = 0.5) -> None:
        self.socks = socks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            for sock in list(self.socks):
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)


def answer(sock: socket.socket) -> tuple[int | None, bool]:
    """The status the server answered on ``sock`` (None if none), and whether it then closed
    the connection (rather than leaving it open until the client's timeout)."""
    data = b""
    closed = True
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        closed = False
    except OSError:
        pass  # reset: closed too
    finally:
        sock.close()
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return (int(match.group(1)) if match else None), closed


def post(url: str, key: Key) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events",
        json=factories.batch(factories.suggestion_shown()),
        headers=key.headers,
        timeout=WAIT_S,
    )


def test_clients_trickling_bodies_with_a_valid_key_leave_everyone_else_served(
    collector: ServiceProcess, ingest_key: Key, make_key: MakeKey, clean_events: None
) -> None:
    other = make_key("other-tenant", [Scope.INGEST])
    started = time.monotonic()
    slow = [trickler(collector.url, "/v1/events", ingest_key) for _ in range(6)]
    drip = Drip(slow)
    try:
        time.sleep(0.3)
        # Six slow bodies, four slots: the slots are for work, so the same key is still served.
        statuses = Counter(post(collector.url, ingest_key).status_code for _ in range(10))
        assert statuses == {200: 10}, statuses
        # Two more fill the key's share of body readers: that key waits, other keys do not.
        slow += [trickler(collector.url, "/v1/events", ingest_key) for _ in range(2)]
        time.sleep(0.3)
        refused = post(collector.url, ingest_key)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert post(collector.url, other).status_code == 200
        assert time.monotonic() - started < BODY_GRACE_S, "the check ran too late to mean much"
        # Under the rate floor once the grace is over: 408, and the connection closed.
        answers = [answer(sock) for sock in slow]
    finally:
        drip.stop()
        for sock in slow:
            sock.close()
    elapsed = time.monotonic() - started
    assert answers == [(408, True)] * len(slow), answers
    assert BODY_GRACE_S <= elapsed < BODY_GRACE_S + 3.0, elapsed


def oversize_head(url: str, limit_bytes: int, out: list[tuple[int, float]]) -> None:
    """Send one header of up to ``limit_bytes``, never finished; record bytes sent and time."""
    chunk = b"a" * 65536
    started = time.monotonic()
    sent = 0
    with contextlib.suppress(OSError), connect(url) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: test\r\nX-Padding: ")
        while sent < limit_bytes:
            sock.sendall(chunk)
            sent += len(chunk)
    out.append((sent, time.monotonic() - started))


def test_oversize_heads_are_refused_and_memory_does_not_grow(collector: ServiceProcess) -> None:
    before, _ = collector.rss_kib()
    results: list[tuple[int, float]] = []
    attackers = [
        threading.Thread(target=oversize_head, args=(collector.url, 64 * 1024 * 1024, results))
        for _ in range(4)
    ]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(WAIT_S * 2)
    after, _ = collector.rss_kib()
    # Each was cut off long before its 64 MiB (what it sent sat in kernel buffers), and fast.
    assert len(results) == 4
    assert all(sent < 32 * 1024 * 1024 and seconds < 5.0 for sent, seconds in results), results
    assert after - before < RSS_GROWTH_LIMIT_KIB, (before, after)

    # A head just over the limit, sent at once, and one with too many fields: 431 each.
    with connect(collector.url) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        assert answer(sock) == (431, True)
    with connect(collector.url) as sock:
        fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(150))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + fields + b"\r\n")
        assert answer(sock) == (431, True)
    assert httpx.get(f"{collector.url}/healthz").status_code == 200


def timed_answer(
    sock: socket.socket, out: dict[str, tuple[int | None, bool, float]], name: str
) -> None:
    started = time.monotonic()
    status, closed = answer(sock)
    out[name] = (status, closed, time.monotonic() - started)


def test_unfinished_heads_are_closed_within_the_header_timeout(collector: ServiceProcess) -> None:
    partial = connect(collector.url)
    partial.sendall(b"POST /v1/ev")
    idle = connect(collector.url)
    drip_head = connect(collector.url)
    drip_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    # A byte every 0.2 s: progress, but a head that never ends must still end its connection.
    drip = Drip([drip_head], interval_s=0.2)
    results: dict[str, tuple[int | None, bool, float]] = {}
    threads = [
        threading.Thread(target=timed_answer, args=(sock, results, name))
        for name, sock in (("partial", partial), ("idle", idle), ("drip", drip_head))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    drip.stop()
    assert {name: result[:2] for name, result in results.items()} == {
        "partial": (408, True),
        "idle": (None, True),
        "drip": (408, True),
    }
    assert all(
        HEADER_TIMEOUT_S * 0.8 < seconds < HEADER_TIMEOUT_S + 2.0
        for *_, seconds in results.values()
    ), results


def test_unknown_keys_cost_no_query_per_request_and_evict_no_good_key(
    database_url: str, ingest_key: Key, clean_events: None
) -> None:
    rate, burst = 5.0, 10
    settings = collector_settings(
        database_url,
        auth_cache_ttl_s=60.0,
        # One known key fits: if misses shared its cache, the flood would evict it at once.
        auth_cache_max_keys=1,
        auth_cache_max_misses=50,
        auth_miss_lookups_per_s=rate,
        auth_miss_burst=burst,
    )
    app = create_app(settings)
    with running_in_thread(app, name="collector", limits=http_limits(settings)) as url:
        verifier = app.state.verifier
        assert post(url, ingest_key).status_code == 200
        before = verifier.queries
        statuses: Counter[int] = Counter()
        started = time.monotonic()
        with httpx.Client(base_url=url, timeout=WAIT_S) as client:
            body = factories.batch(factories.suggestion_shown())
            # One unknown key again and again (a client with a deleted key), malformed keys,
            # then well-formed random ones.
            secrets = [generate_secret()] * 50 + ["cl_short", "x" * 46] * 50
            secrets += [generate_secret() for _ in range(300)]
            for secret in secrets:
                response = client.post(
                    "/v1/events", json=body, headers={"Authorization": f"Bearer {secret}"}
                )
                statuses[response.status_code] += 1
        elapsed = time.monotonic() - started
        queries = verifier.queries - before
        # 450 requests: what reached the database is the bucket's burst and refill, no more.
        assert queries <= burst + rate * elapsed + 1, (queries, elapsed, statuses)
        assert set(statuses) <= {401, 503}, statuses
        assert statuses[401] >= 50 + 100, statuses
        # The good key is still cached: served without a query.
        assert post(url, ingest_key).status_code == 200
        assert verifier.queries - before == queries
        # Both are on /metrics, for an operator to see a flood.
        exposition = httpx.get(f"{url}/metrics").text
        assert f'codelift_collector_key_lookups_total{{outcome="query"}} {verifier.queries}.0' in (
            exposition
        )
        throttled = 'codelift_collector_key_lookups_total{outcome="throttled"} '
        assert (throttled + f"{verifier.throttled}.0" in exposition) or verifier.throttled == 0


def test_the_gateway_reads_bodies_before_slots_and_bounds_heads(
    database_url: str, serve_only_key: Key
) -> None:
    settings = GatewaySettings.model_validate(
        {"database_url": database_url, "environment": "test", "experiments": False}
        | {"default_variant": DEFAULT_VARIANT, "max_in_flight": 1}
    )
    with running(create_gateway(settings, {"local": ScriptedBackend("pass")})) as url:
        slow = [trickler(url, "/v1/completions", serve_only_key) for _ in range(3)]
        try:
            time.sleep(0.2)
            served = httpx.post(
                f"{url}/v1/completions",
                json={"prompt": "x", "user": "u"},
                headers=serve_only_key.headers,
                timeout=WAIT_S,
            )
            assert served.status_code == 200, served.text
            with connect(url) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000)
                assert answer(sock) == (431, True)
        finally:
            for sock in slow:
                sock.close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_verifier_keeps_known_and_unknown_keys_apart_and_bounded(
    database_url: str, make_key: MakeKey
) -> None:
    keys = [make_key(f"lru-{i}", [Scope.INGEST]) for i in range(3)]

    async def check(verifier: KeyVerifier, key: Key, *, queried: bool) -> None:
        before = verifier.queries
        principal = await verifier.authenticate(f"Bearer {key.secret}", Scope.INGEST)
        assert principal.key_id == key.id
        assert verifier.queries - before == int(queried)

    async def scenario() -> None:
        clock = FakeClock()
        async with AsyncConnectionPool(
            libpq_conninfo(database_url), min_size=1, max_size=1, open=False
        ) as pool:
            verifier = KeyVerifier(
                pool, ttl_s=3600, max_entries=2, miss_burst=4, miss_rate_per_s=1.0, clock=clock
            )
            # Ten requests at once with a key not seen yet share one query.
            ten = [f"Bearer {keys[0].secret}"] * 10
            await asyncio.gather(*(verifier.authenticate(a, Scope.INGEST) for a in ten))
            assert verifier.queries == 1
            await check(verifier, keys[1], queried=True)
            # Unknown keys take the rest of the bucket, then are refused unasked...
            for _ in range(2):
                with pytest.raises(AuthError):
                    await verifier.authenticate(f"Bearer {generate_secret()}", Scope.INGEST)
            with pytest.raises(KeyLookupThrottled):
                await verifier.authenticate(f"Bearer {generate_secret()}", Scope.INGEST)
            # ...and evicted no known key.
            await check(verifier, keys[0], queried=False)
            await check(verifier, keys[1], queried=False)
            # A third known key evicts the least recently used one.
            clock.now += 1.0
            await check(verifier, keys[2], queried=True)
            await check(verifier, keys[1], queried=False)
            clock.now += 1.0
            await check(verifier, keys[0], queried=True)

    asyncio.run(scenario())
