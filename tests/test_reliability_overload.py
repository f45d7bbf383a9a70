"""Overload: the collector and the gateway, each in its own process with a small in-flight
limit, driven at several times their capacity for a few seconds.

They must shed load explicitly (503 with Retry-After, answered fast) rather than queue until
clients time out; their memory must stay bounded; and no acknowledged event may be lost. The
clients here are the worst case: they ignore Retry-After and retry at once. Each test logs the
offered and held rates and the peak resident memory (``-o log_cli=true``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.http_service import running_in_thread
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app as create_gateway
from serving.gateway.server import running
from serving.scripted_backend import ScriptedBackend
from tests import factories
from tests.apikeys import Key
from tests.database import PgConnection, count
from tests.event_client import EventSender, SenderFleet, shown_events
from tests.experiment_factories import DEFAULT_VARIANT
from tests.fake_vllm import fake_vllm
from tests.processes import ServiceProcess, service_process
from tests.servers import collector_settings, run_collector

log = logging.getLogger(__name__)

LOAD_S = 2.0
MAX_IN_FLIGHT = 4
# Resident memory the overload may add to a warmed-up process. Unbounded queueing of the
# offered batches (about 30 KB each, hundreds per second) would pass this within seconds.
RSS_GROWTH_LIMIT_KIB = 80 * 1024
WAIT_S = 20.0


def warm_rss(service: ServiceProcess) -> int:
    rss, _ = service.rss_kib()
    return rss


@pytest.fixture
def collector_process(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
        "CODELIFT_COLLECTOR_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "CODELIFT_COLLECTOR_DB_POOL_MAX": str(MAX_IN_FLIGHT),
        "CODELIFT_COLLECTOR_RETRY_AFTER_S": "1",
    }
    with service_process("collector", env, log=tmp_path / "collector.log") as service:
        yield service


def test_collector_sheds_overload_keeps_memory_bounded_and_loses_nothing(
    collector_process: ServiceProcess, ingest_key: Key, pg: PgConnection, clean_events: None
) -> None:
    warm = EventSender(collector_process.url, ingest_key.secret)
    for _ in range(5):
        assert warm.send(shown_events(100), deadline=time.monotonic() + WAIT_S)
    warm.close()
    baseline = warm_rss(collector_process)

    fleet = SenderFleet(
        lambda: EventSender(
            collector_process.url,
            ingest_key.secret,
            backoff_s=0.005,
            max_wait_s=0.02,
            honour_retry_after=False,
        ),
        threads=16,
        batch_size=100,
    )
    fleet.start()
    time.sleep(LOAD_S)
    counts = fleet.stop()
    rss, peak = collector_process.rss_kib()

    stored = count(pg, "suggestion_shown") - warm.counts.acked_events
    log.info(
        "collector, in-flight limit %d: offered %.0f batches/s, held %.0f batches/s "
        "(%.0f events/s); answers %s; slowest answer %.2f s; RSS %d MiB warm, peak %d MiB; "
        "events sent %d, acknowledged %d, stored %d",
        MAX_IN_FLIGHT,
        counts.attempts / LOAD_S,
        counts.statuses["200"] / LOAD_S,
        counts.acked_events / LOAD_S,
        dict(counts.statuses),
        counts.slowest_answer_s,
        baseline // 1024,
        peak // 1024,
        counts.sent_events,
        counts.acked_events,
        stored,
    )
    # Shed explicitly, and only that way: no timeouts, no dropped connections, no 500s.
    assert counts.statuses["503"] > 0
    assert set(counts.statuses) <= {"200", "503", "429"}, counts.statuses
    assert counts.slowest_answer_s < 5.0
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    # Every batch was retried until acknowledged, and each acknowledged event is stored once.
    assert not counts.unacked_ids
    assert counts.acked_events == counts.sent_events == stored
    ids = {str(r["event_id"]) for r in pg.execute("SELECT event_id FROM suggestion_shown")}
    assert counts.acked_ids <= ids


def dropped_events(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("codelift_gateway_events_dropped_total "):
            return float(line.split()[1])
    raise AssertionError("codelift_gateway_events_dropped_total missing from /metrics")


class CompletionLoad:
    """Threads posting completions back to back, ignoring Retry-After, until stopped."""

    def __init__(self, url: str, key: Key, *, threads: int) -> None:
        self.url = url
        self.key = key
        self.statuses: Counter[str] = Counter()
        self.missing_retry_after = 0
        self.slowest_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def run_for(self, seconds: float) -> None:
        for thread in self._threads:
            thread.start()
        time.sleep(seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT_S)
            assert not thread.is_alive()

    def _run(self) -> None:
        body = {"prompt": "def f():\n", "user": "load", "max_tokens": 8}
        with httpx.Client(base_url=self.url, timeout=10.0, headers=self.key.headers) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/completions", json=body)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                else:
                    status = str(response.status_code)
                    if response.status_code == 503 and "retry-after" not in response.headers:
                        with self._lock:
                            self.missing_retry_after += 1
                with self._lock:
                    self.statuses[status] += 1
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)


def test_gateway_sheds_overload_keeps_memory_bounded_and_accounts_for_every_event(
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
) -> None:
    backend_delay_s = 0.05
    app, _ = fake_vllm(delay_s=backend_delay_s)
    with running_in_thread(app, name="fake-vllm") as vllm_url:
        env = {
            "CODELIFT_DATABASE_URL": database_url,
            "CODELIFT_ENVIRONMENT": "test",
            "CODELIFT_GATEWAY_LOG_LEVEL": "warning",
            "CODELIFT_GATEWAY_EXPERIMENTS": "false",
            "CODELIFT_GATEWAY_LOCAL": '{"enabled": false}',
            "CODELIFT_GATEWAY_VLLM": f'[{{"url": "{vllm_url}"}}]',
            "CODELIFT_GATEWAY_DEFAULT_VARIANT": '{"backend": "vllm", "model": "load-model"}',
            "CODELIFT_GATEWAY_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
            "CODELIFT_GATEWAY_RATE_LIMIT_PER_S": "100000",
            "CODELIFT_GATEWAY_RATE_LIMIT_BURST": "100000",
            "CODELIFT_GATEWAY_COLLECTOR_URL": collector_url,
            "CODELIFT_GATEWAY_INGEST_KEY": ingest_key.secret,
        }
        with service_process("gateway", env, log=tmp_path / "gateway.log") as gateway:
            warm = CompletionLoad(gateway.url, serve_only_key, threads=1)
            warm.run_for(0.5)
            baseline = warm_rss(gateway)
            load = CompletionLoad(gateway.url, serve_only_key, threads=16)
            load.run_for(LOAD_S)
            rss, peak = gateway.rss_kib()
            served = warm.statuses["200"] + load.statuses["200"]
            # Every served completion is either stored as completion_served or counted as
            # dropped on /metrics: the event log is best-effort, never silently lossy.
            deadline = time.monotonic() + WAIT_S
            while True:
                stored = count(pg, "completion_served")
                dropped = dropped_events(gateway.url)
                if stored + dropped >= served or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    capacity = MAX_IN_FLIGHT / backend_delay_s
    offered = sum(load.statuses.values()) / LOAD_S
    log.info(
        "gateway, in-flight limit %d (capacity about %.0f/s): offered %.0f requests/s, held "
        "%.0f/s; answers %s; slowest %.2f s; RSS %d MiB warm, peak %d MiB; completions served "
        "%d, completion_served stored %d, dropped %d",
        MAX_IN_FLIGHT,
        capacity,
        offered,
        load.statuses["200"] / LOAD_S,
        dict(load.statuses),
        load.slowest_s,
        baseline // 1024,
        peak // 1024,
        served,
        stored,
        dropped,
    )
    assert load.statuses["503"] > 0
    assert set(load.statuses) <= {"200", "503"}, load.statuses
    assert load.missing_retry_after == 0
    assert load.slowest_s < 5.0
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    assert stored + dropped == served


def trickle(base_url: str, path: str, key: Key) -> socket.socket:
    """A request whose headers arrive but whose body stops after ten bytes."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    body = json.dumps({"events": []} if path == "/v1/events" else {"prompt": "x", "user": "u"})
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key.secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body.encode()[:10])
    return sock


def status_of(sock: socket.socket) -> int:
    with sock:
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize("service", ["collector", "gateway"])
def test_clients_trickling_their_bodies_cannot_hold_the_slots(
    service: str, database_url: str, ingest_key: Key, serve_only_key: Key, clean_events: None
) -> None:
    limits = {"max_in_flight": 2, "body_timeout_s": 0.5}
    if service == "collector":
        server = run_collector(collector_settings(database_url, **limits))
        path, key, body = "/v1/events", ingest_key, factories.batch(factories.suggestion_shown())
    else:
        settings = GatewaySettings.model_validate(
            {"database_url": database_url, "environment": "test", "experiments": False}
            | {"default_variant": DEFAULT_VARIANT, **limits}
        )
        server = running(create_gateway(settings, {"local": ScriptedBackend("pass")}))
        path, key, body = "/v1/completions", serve_only_key, {"prompt": "x", "user": "u"}
    with server as url:
        slow = [trickle(url, path, key) for _ in range(2)]
        time.sleep(0.2)
        # The trickling clients hold body readers, not the 2 processing slots: a third request
        # is served at once...
        other = httpx.post(f"{url}{path}", json=body, headers=key.headers, timeout=WAIT_S)
        assert other.status_code == 200, other.text
        # ...and the body timeout ends the trickles with a 408.
        started = time.monotonic()
        assert [status_of(sock) for sock in slow] == [408, 408]
        assert time.monotonic() - started < 2.0
        served = httpx.post(f"{url}{path}", json=body, headers=key.headers, timeout=WAIT_S)
        assert served.status_code == 200, served.text
