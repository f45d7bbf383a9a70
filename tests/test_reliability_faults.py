"""Faults while IDE-like clients keep sending: every acknowledged event is stored exactly once.

- PostgreSQL stopped cleanly, and crashed (immediate stop), then restarted, under a stream of
  batches (a private cluster: the shared server is never stopped);
- the collector SIGKILLed while a batch is in flight (held at the database by a table lock, so
  the kill lands mid-batch every time), and again at arbitrary moments under a stream;
- the gateway with its collector down (completions served, events delivered after recovery);
- the gateway with its inference backend down (503 + Retry-After, then recovery).

Each test logs the counts of events sent, acknowledged and stored (``-o log_cli=true``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from collector.partitions import maintain_for_settings
from core.auth.scopes import Scope
from core.db.connection import libpq_conninfo, make_engine
from experiments.variants import Variant
from migrations.runner import upgrade
from serving.gateway.assembly import make_backends
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app
from serving.gateway.server import running
from tests.apikeys import Key, commit_key
from tests.database import PgConnection, connect, count, database_settings, utc_today
from tests.event_client import (
    EventSender,
    SenderCounts,
    SenderFleet,
    exposure_events,
    shown_events,
)
from tests.fake_vllm import fake_vllm
from tests.processes import PrivateCluster, ServiceProcess, free_port, private_cluster
from tests.servers import TcpProxy, collector_settings, run_collector

log = logging.getLogger(__name__)

WAIT_S = 20.0


def wait_for(condition: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stored_ids(pg: PgConnection, table: str = "suggestion_shown") -> list[str]:
    return [str(row["event_id"]) for row in pg.execute(f"SELECT event_id FROM {table}")]


def assert_exactly_once(counts: SenderCounts, stored: list[str], fault: str) -> None:
    log.info(
        "%s: sent %d, acknowledged %d, stored %d events; %d attempts, answers %s",
        fault,
        counts.sent_events,
        counts.acked_events,
        len(stored),
        counts.attempts,
        dict(counts.statuses),
    )
    # Every batch was retried until acknowledged: nothing is left unacknowledged...
    assert not counts.unacked_ids
    assert counts.acked_events == counts.sent_events
    # ...and every acknowledged event is stored, exactly once, with nothing else stored.
    assert len(stored) == len(set(stored)) == counts.acked_events
    assert set(stored) == counts.acked_ids


# --- PostgreSQL stopped and restarted -----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL cluster, migrated, with partitions."""
    with private_cluster() as cluster:
        upgrade(cluster.url)
        maintain_for_settings(
            libpq_conninfo(cluster.url), database_settings(cluster.url), today=utc_today()
        )
        yield cluster


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_and_restarted_under_load_loses_no_acknowledged_event(
    cluster: PrivateCluster, mode: str
) -> None:
    engine = make_engine(cluster.url, pool_size=1)
    key = commit_key(engine, "fault-test", [Scope.INGEST])
    engine.dispose()
    settings = collector_settings(cluster.url, db_timeout_s=1.0, retry_after_s=1)
    with run_collector(settings) as url:
        fleet = SenderFleet(lambda: EventSender(url, key.secret), threads=3, batch_size=20)
        fleet.start()
        time.sleep(0.7)
        # "fast" is a clean shutdown; "immediate" is a crash, recovered from the WAL at start.
        cluster.stop(mode)
        time.sleep(1.0)
        cluster.start()
        time.sleep(0.8)
        counts = fleet.stop()
    with connect(cluster.url) as pg:
        stored = stored_ids(pg)
        pg.execute("TRUNCATE suggestion_shown")
    assert counts.statuses["503"] > 0, "the outage was never seen"
    assert_exactly_once(counts, stored, f"PostgreSQL {mode} stop + restart")


# --- the collector killed mid-batch -------------------------------------------------------------


def collector_env(database_url: str) -> dict[str, str]:
    return {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
        "CODELIFT_COLLECTOR_RETRY_AFTER_S": "1",
        "CODELIFT_COLLECTOR_DB_POOL_MIN": "1",
        "CODELIFT_COLLECTOR_DB_POOL_MAX": "4",
    }


def waiting_backends(pg: PgConnection) -> list[int]:
    """Backends of this database waiting for a lock (the collector's blocked INSERT)."""
    found = pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchall()
    return [row["pid"] for row in found]


def test_collector_killed_mid_batch_then_the_retry_stores_the_batch_once(
    database_url: str, ingest_key: Key, pg: PgConnection, clean_events: None, tmp_path: Path
) -> None:
    service = ServiceProcess(
        "collector", collector_env(database_url), port=free_port(), log=tmp_path / "collector.log"
    )
    service.start()
    try:
        batch = shown_events(50)
        sender = EventSender(service.url, ingest_key.secret, timeout_s=30.0)
        acked: list[bool] = []
        # Beside it, a stream of exposure batches (a table the lock below leaves alone): the
        # kill lands on those at an arbitrary moment, before or after a commit.
        stream = SenderFleet(
            lambda: EventSender(service.url, ingest_key.secret),
            threads=2,
            batch_size=50,
            make_events=exposure_events,
        )
        with psycopg.connect(libpq_conninfo(database_url)) as blocker:
            # The lock holds the collector's INSERT at the database: the batch is in flight
            # (parsed, copied to staging, not committed) when the process dies.
            blocker.execute("LOCK TABLE suggestion_shown IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(
                target=lambda: acked.append(sender.send(batch, deadline=time.monotonic() + 60))
            )
            thread.start()
            stream.start()
            blocked = wait_for(lambda: waiting_backends(pg), "the batch to reach the database")
            time.sleep(0.3)
            service.kill()
            blocker.rollback()
        # The killed collector's transaction never commits: its backend finds the client gone.
        wait_for(
            lambda: (
                not pg.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (blocked,)
                ).fetchall()
            ),
            "the orphan backend to exit",
        )
        assert stored_ids(pg) == []
        # The clients keep retrying; a new collector on the same port takes the batches.
        service.start()
        thread.join(WAIT_S * 2)
        time.sleep(0.3)
        counts = stream.stop()
        sender.close()
        assert acked == [True]
        failures = {"ReadError", "RemoteProtocolError", "ConnectError"}
        assert failures & set(sender.counts.statuses), sender.counts.statuses
        assert_exactly_once(sender.counts, stored_ids(pg), "collector SIGKILL mid-batch")
        assert_exactly_once(counts, stored_ids(pg, "exposure"), "collector SIGKILL under a stream")
    finally:
        service.stop()


# --- the gateway with its collector or its backend down ------------------------------------------


def gateway_settings(database_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "experiments": False,
        "auth_cache_ttl_s": 5.0,
        "rate_limit_per_s": 1000.0,
        "rate_limit_burst": 1000,
        "local": {"enabled": False},
        "default_variant": Variant(backend="vllm", model="fault-model"),
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


@pytest.fixture
def vllm_proxy() -> Iterator[TcpProxy]:
    """A stand-in vLLM server behind a proxy the test can cut."""
    app, _ = fake_vllm()
    with running(app) as url:
        proxy = TcpProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()


def complete(client: httpx.Client, key: Key, *, stream: bool = False) -> httpx.Response:
    return client.post(
        "/v1/completions",
        json={"prompt": "def f():\n", "user": "dev-7", "max_tokens": 8, "stream": stream},
        headers=key.headers,
    )


def test_gateway_serves_while_the_collector_is_down_and_delivers_after(
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    vllm_proxy: TcpProxy,
    pg: PgConnection,
    clean_events: None,
) -> None:
    collector_port = int(collector_url.rsplit(":", 1)[1])
    collector_proxy = TcpProxy(("127.0.0.1", collector_port))
    collector_proxy.start()
    settings = gateway_settings(
        database_url,
        collector_url=f"http://127.0.0.1:{collector_proxy.port}",
        ingest_key=ingest_key.secret,
        event_batch_size=5,
        event_flush_interval_s=0.05,
        event_backoff_s=0.1,
        event_timeout_s=1.0,
        vllm=[{"url": f"http://127.0.0.1:{vllm_proxy.port}"}],
    )
    served: list[str] = []
    try:
        with (
            running(create_app(settings, make_backends(settings), close_backends=True)) as url,
            httpx.Client(base_url=url, timeout=10) as client,
        ):
            for phase in ("up", "down", "back"):
                if phase == "down":
                    collector_proxy.stop()
                elif phase == "back":
                    collector_proxy.start()
                for _ in range(10):
                    response = complete(client, serve_only_key)
                    assert response.status_code == 200, (phase, response.text)
                    served.append(response.json()["id"])
            wait_for(
                lambda: count(pg, "completion_served") >= len(served),
                "completion_served rows for every completion",
            )
            dropped = client.get("/metrics").text
    finally:
        collector_proxy.stop()
    ids = {r["suggestion_id"] for r in pg.execute("SELECT suggestion_id FROM completion_served")}
    log.info(
        "collector down for 10 of %d completions: %d served, %d completion_served stored",
        len(served),
        len(served),
        len(ids),
    )
    assert ids == set(served)
    assert "codelift_gateway_events_dropped_total 0.0" in dropped


def test_gateway_answers_503_while_the_backend_is_down_and_recovers(
    database_url: str, serve_only_key: Key, vllm_proxy: TcpProxy
) -> None:
    settings = gateway_settings(database_url, vllm=[{"url": f"http://127.0.0.1:{vllm_proxy.port}"}])
    with (
        running(create_app(settings, make_backends(settings), close_backends=True)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert complete(client, serve_only_key).status_code == 200
        vllm_proxy.stop()
        for stream in (False, True):
            down = complete(client, serve_only_key, stream=stream)
            assert down.status_code == 503, down.text
            assert int(down.headers["retry-after"]) >= 1
            assert down.json()["error"]["code"] == "backend_unavailable"
        vllm_proxy.start()
        # The next request after the backend returns is served: no restart, no stuck state.
        started = dt.datetime.now(dt.UTC)
        for stream in (False, True):
            back = complete(client, serve_only_key, stream=stream)
            assert back.status_code == 200, back.text
        log.info("backend recovery seen %s after restart", dt.datetime.now(dt.UTC) - started)
