"""The gateway's events wait on disk through collector outages and gateway restarts, bounded
and counted; a value the collector would reject is a 400 before anything is served.

The HTTP tests run the real gateway (ScriptedBackend) and the real collector on PostgreSQL,
the collector stopped and started again on the same port. The spool's own tests read its
files; the ten-minute outage runs the event logger on a mock collector with a clock a thousand
times faster than the wall's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from collector.config import CollectorSettings
from collector.main import create_app as create_collector
from core.http_service import uvicorn_config
from serving.event_logger import EventLogger
from serving.event_spool import DEFAULT_MAX_BYTES, EventSpool
from serving.gateway.config import GatewaySettings
from serving.scripted_backend import ScriptedBackend
from tests import factories
from tests.apikeys import Key
from tests.database import PgConnection
from tests.processes import free_port
from tests.servers import collector_settings, run_collector, running_gateway
from tests.test_gateway import gateway_settings, metric, wait_for

log = logging.getLogger(__name__)

DELIVERED = "codelift_gateway_events_delivered_total"
DROPPED = "codelift_gateway_events_dropped_total"
SPOOLED = "codelift_gateway_event_spool_events"
SPOOL_BYTES = "codelift_gateway_event_spool_bytes"
FAILED_POSTS = "codelift_gateway_event_posts_failed_total"
# The rate the default spool is sized for: a 10-minute outage at 2,500 completions/s (the
# gateway's measured ceiling with a 20 ms backend is ~1,340/s, README's benchmark).
SIZED_FOR_EVENTS_PER_S = 2_500
SIZED_FOR_OUTAGE_S = 600


def rejected(reason: str) -> str:
    return f'codelift_gateway_events_rejected_total{{reason="{reason}"}}'


@contextlib.contextmanager
def collector_on(port: int, settings: CollectorSettings) -> Iterator[str]:
    """The real collector on ``port``, so that it can stop and start again where the gateway
    sends its events."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    server = uvicorn.Server(uvicorn_config(create_collector(settings), log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"collector-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the collector stopped during start-up"
            assert time.monotonic() < deadline, "the collector did not start in 30 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def spool_settings(
    database_url: str, collector_url: str, ingest_key: str, spool: Path, **overrides: Any
) -> GatewaySettings:
    """A gateway logging to ``collector_url`` with its spool in ``spool``; short back-offs."""
    return gateway_settings(
        database_url,
        collector_url=collector_url,
        ingest_key=ingest_key,
        event_spool_dir=spool,
        event_backoff_s=0.02,
        event_max_backoff_s=0.2,
        event_timeout_s=2.0,
        **overrides,
    )


def serve(client: httpx.Client, n: int, **body: Any) -> list[str]:
    """``n`` completions, each answered 200; their suggestion ids."""
    ids = []
    for i in range(n):
        response = client.post(
            "/v1/completions",
            json={"prompt": "def f():\n", "user": f"spool-dev-{i % 7}", "max_tokens": 8} | body,
        )
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def stored_once(pg: PgConnection, suggestion_ids: list[str]) -> Counter[str]:
    """How many completion_served rows each of ``suggestion_ids`` has."""
    rows = pg.execute(
        "SELECT suggestion_id, count(*) AS n FROM completion_served"
        " WHERE suggestion_id = ANY(%s) GROUP BY suggestion_id",
        (suggestion_ids,),
    ).fetchall()
    return Counter({row["suggestion_id"]: row["n"] for row in rows})


def spooled_lines(spool: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool.rglob("*.jsonl"))


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend("    return 1\n", name="local")


# --- over HTTP, with the real collector ----------------------------------------------------------


def test_a_collector_outage_loses_no_event(
    database_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
) -> None:
    port = free_port()
    collector = collector_settings(database_url)
    settings = spool_settings(database_url, f"http://127.0.0.1:{port}", ingest_key.secret, tmp_path)
    served: list[str] = []
    with (
        running_gateway(settings, {"local": backend}) as url,
        httpx.Client(base_url=url, headers=serve_only_key.headers, timeout=10) as client,
    ):
        with collector_on(port, collector):
            served += serve(client, 20)
            wait_for(lambda: metric(url, DELIVERED) >= 20, "the first events delivered")
        # The collector is down: completions are served as fast as before, events wait on disk.
        started = time.monotonic()
        served += serve(client, 30)
        outage_serving_s = time.monotonic() - started
        wait_for(lambda: metric(url, SPOOLED) == 30, "the outage's events spooled")
        wait_for(lambda: metric(url, FAILED_POSTS) >= 3, "deliveries retried")
        # Every line on disk is one of this gateway's own events (delivered ones included).
        per_event = sum(f.stat().st_size for f in tmp_path.rglob("*.jsonl")) / spooled_lines(
            tmp_path
        )
        assert metric(url, DROPPED) == 0
        with collector_on(port, collector):
            served += serve(client, 10)
            wait_for(
                lambda: metric(url, SPOOLED) == 0 and metric(url, DELIVERED) >= 60,
                "every event delivered after the outage",
            )
        assert metric(url, DROPPED) == 0
        assert metric(url, rejected("invalid")) == metric(url, rejected("refused")) == 0
    # Each completion's event is stored, once (a batch sent twice is recognised by its ids).
    assert stored_once(pg, served) == Counter(dict.fromkeys(served, 1))
    # The bound the default spool has, in outage minutes at the rate it is sized for, measured
    # on this gateway's own events (one arm-less default variant: real ones carry arms too).
    minutes = DEFAULT_MAX_BYTES / per_event / SIZED_FOR_EVENTS_PER_S / 60
    log.info(
        "outage: 30 completions served in %.2f s; %.0f spool bytes per event; the default "
        "%d MiB spool holds %.1f minutes at %d events/s",
        outage_serving_s,
        per_event,
        DEFAULT_MAX_BYTES >> 20,
        minutes,
        SIZED_FOR_EVENTS_PER_S,
    )
    assert minutes * 60 >= SIZED_FOR_OUTAGE_S * 1.1  # with room for arms and adapters


def test_events_in_the_spool_are_delivered_after_a_gateway_restart(
    database_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there until the collector starts
    settings = spool_settings(database_url, f"http://127.0.0.1:{port}", ingest_key.secret, tmp_path)
    with (
        running_gateway(settings, {"local": backend}) as url,
        httpx.Client(base_url=url, headers=serve_only_key.headers, timeout=10) as client,
    ):
        served = serve(client, 15)
        wait_for(lambda: metric(url, FAILED_POSTS) >= 1, "a delivery attempted")
    # The gateway stopped with its events undelivered: they are on disk, not dropped.
    assert spooled_lines(tmp_path) == 15
    with (
        collector_on(port, collector_settings(database_url)),
        running_gateway(settings, {"local": backend}) as url,
    ):
        wait_for(lambda: metric(url, DELIVERED) >= 15, "the spooled events delivered")
        wait_for(lambda: metric(url, SPOOLED) == 0, "the spool emptied")
    assert stored_once(pg, served) == Counter(dict.fromkeys(served, 1))
    # Delivered in full: the spool left no file behind.
    assert list(tmp_path.rglob("*")) == []


def test_a_full_spool_drops_and_counts(
    database_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
) -> None:
    port = free_port()
    capacity = 64 * 1024
    settings = spool_settings(
        database_url,
        f"http://127.0.0.1:{port}",
        ingest_key.secret,
        tmp_path,
        event_spool_max_bytes=capacity,
    )
    with (
        running_gateway(settings, {"local": backend}) as url,
        httpx.Client(base_url=url, headers=serve_only_key.headers, timeout=10) as client,
    ):
        served = serve(client, 200)
        wait_for(
            lambda: metric(url, SPOOLED) + metric(url, DROPPED) == 200,
            "every event spooled or dropped",
        )
        kept, dropped = int(metric(url, SPOOLED)), metric(url, DROPPED)
        assert dropped > 0 and kept > 50
        assert metric(url, SPOOL_BYTES) <= capacity
        assert metric(url, "codelift_gateway_event_spool_capacity_bytes") == capacity
        assert metric(url, "codelift_gateway_event_spool_oldest_age_seconds") > 0
        # The spool kept its oldest events; what came once it was full was dropped.
        with collector_on(port, collector_settings(database_url)):
            wait_for(lambda: metric(url, SPOOLED) == 0, "the spool delivered")
        assert metric(url, DELIVERED) >= kept and metric(url, DROPPED) == dropped
    assert stored_once(pg, served[:kept]) == Counter(dict.fromkeys(served[:kept], 1))
    assert not stored_once(pg, served[kept:])


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("user", "dev\x00one", "must not contain NUL characters"),
        ("user", "u" * 129, "at most 128 characters"),
        ("plugin_version", "   ", "must not be empty or blank"),
        ("plugin_version", "v" * 257, "at most 256 characters"),
        ("session_id", "s\x00", "must not contain NUL characters"),
        ("ide", "vs\x00code", "must not contain NUL characters"),
        ("language", "\t", "must not be empty or blank"),
    ],
)
def test_a_value_the_collector_would_reject_is_a_400_before_serving(
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    tmp_path: Path,
    field: str,
    value: str,
    problem: str,
) -> None:
    settings = spool_settings(database_url, collector_url, ingest_key.secret, tmp_path)
    with running_gateway(settings, {"local": backend}) as url:
        body = {"prompt": "def f():\n", "user": "dev-1", field: value}
        response = httpx.post(f"{url}/v1/completions", json=body, headers=serve_only_key.headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["type"]) == (field, "invalid_request_error")
        assert error["message"].startswith(f"{field}: ") and problem in error["message"]
        assert backend.requests == []
        assert metric(url, SPOOLED) == metric(url, DELIVERED) == 0


def test_events_the_collector_rejects_are_counted_and_logged(
    database_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A collector keeping one day of events behind a gateway told seven (a real misconfiguration:
    # the shared CODELIFT_MAX_EVENT_AGE_DAYS set on one service only): the gateway cannot know.
    strict = collector_settings(database_url, max_event_age_days=1)
    now = dt.datetime.now(dt.UTC)
    with run_collector(strict) as collector_url:
        settings = spool_settings(
            database_url, collector_url, ingest_key.secret, tmp_path, trust_client_time=True
        )
        with (
            running_gateway(settings, {"local": backend}) as url,
            httpx.Client(base_url=url, headers=serve_only_key.headers, timeout=10) as client,
        ):
            [old] = serve(client, 1, client_ts=(now - dt.timedelta(days=3)).isoformat())
            [fresh] = serve(client, 1, client_ts=now.isoformat())
            wait_for(
                lambda: metric(url, rejected("invalid")) == 1 and metric(url, DELIVERED) == 1,
                "the old event rejected, the fresh one delivered",
            )
            assert metric(url, DROPPED) == metric(url, FAILED_POSTS) == 0
            # Outside the window the gateway itself knows (7 days): refused before serving.
            calls = len(backend.requests)
            response = client.post(
                "/v1/completions",
                json={
                    "prompt": "x",
                    "user": "u",
                    "client_ts": (now - dt.timedelta(days=30)).isoformat(),
                },
            )
            assert response.status_code == 400 and response.json()["error"]["param"] == "client_ts"
            # A number is no timestamp (the collector would take it for nothing either).
            for stamp in (int(now.timestamp()), str(int(now.timestamp()))):
                response = client.post(
                    "/v1/completions", json={"prompt": "x", "user": "u", "client_ts": stamp}
                )
                assert response.status_code == 400, response.text
                assert response.json()["error"]["param"] == "client_ts"
            assert len(backend.requests) == calls
    assert "collector rejected 1 of" in caplog.text and "client_ts" in caplog.text
    assert stored_once(pg, [old, fresh]) == Counter({fresh: 1})


def test_a_batch_the_collector_refuses_is_counted_not_retried(
    database_url: str,
    collector_url: str,
    serve_only_key: Key,
    backend: ScriptedBackend,
    tmp_path: Path,
) -> None:
    unknown_key = "cl_" + uuid.uuid4().hex
    settings = spool_settings(database_url, collector_url, unknown_key, tmp_path)
    with (
        running_gateway(settings, {"local": backend}) as url,
        httpx.Client(base_url=url, headers=serve_only_key.headers, timeout=10) as client,
    ):
        serve(client, 3)
        wait_for(lambda: metric(url, rejected("refused")) == 3, "the refused events counted")
        assert metric(url, FAILED_POSTS) == metric(url, DROPPED) == metric(url, SPOOLED) == 0


# --- the spool's files ---------------------------------------------------------------------------


def events(n: int) -> list[dict[str, Any]]:
    """``n`` completion_served events shaped like the gateway's own (ids as it makes them)."""
    return [
        factories.completion_served(
            suggestion_id=f"cmpl-{uuid.uuid4().hex}",
            request_id=uuid.uuid4().hex,
            session_id=uuid.uuid4().hex,
            user_id=f"dev-{i % 97:04d}@example.com",
        )
        for i in range(n)
    ]


def read_all(spool: EventSpool) -> list[dict[str, Any]]:
    """Every event left in ``spool``, acknowledged as read."""
    out: list[dict[str, Any]] = []
    while (batch := spool.read(7, 1 << 20)) is not None:
        out += [json.loads(body) for body in batch.events]
        spool.ack(batch)
    return out


def test_the_spool_replays_after_reopening_and_cuts_a_line_torn_by_a_crash(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    sent = events(10)
    spool = EventSpool(root, max_bytes=1 << 20)
    spool.open()
    assert spool.append(sent).written == 10
    batch = spool.read(4, 1 << 20)
    assert batch is not None and len(batch.events) == 4
    spool.ack(batch)
    spool.close()
    # A crash in the middle of a write: half a line at the end of the segment.
    [segment] = root.rglob("*.jsonl")
    with segment.open("ab") as f:
        f.write(b'1800000000.000\t{"event_id": "torn')

    reopened = EventSpool(root, max_bytes=1 << 20)
    reopened.open()
    assert reopened.events == 6 and reopened.oldest_spooled_at is not None
    assert [e["event_id"] for e in read_all(reopened)] == [e["event_id"] for e in sent[4:]]
    reopened.close()
    assert not root.exists()


def test_the_spool_is_bounded_and_keeps_its_oldest_events(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = EventSpool(root, max_bytes=16 * 1024)
    spool.open()
    sent = events(100)
    result = spool.append(sent)
    assert result.written + result.dropped == 100 and result.dropped > 0
    assert spool.bytes <= 16 * 1024
    assert spool.append(events(1)).dropped == 1
    # Nor does a far smaller event slip into the last bytes: what is kept has no hole.
    assert spool.append([{"event_id": "tiny"}]).dropped == 1
    kept = read_all(spool)
    assert [e["event_id"] for e in kept] == [e["event_id"] for e in sent[: result.written]]
    # Delivered segments are deleted: there is room again.
    assert spool.append(events(5)).written == 5
    spool.close()


def test_the_spool_rotates_segments_and_deletes_delivered_ones(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = EventSpool(root, max_bytes=1 << 20, segment_bytes=4096)
    spool.open()
    spool.append(events(60))
    assert len(list(root.rglob("*.jsonl"))) > 5
    assert len(read_all(spool)) == 60
    # Only the segment being written is left, whatever it held.
    assert len(list(root.rglob("*.jsonl"))) == 1 and spool.events == 0
    spool.close()
    assert not root.exists()


def test_gateways_sharing_a_directory_each_get_a_slot_and_leave_nothing_behind(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    first, second = (EventSpool(root, max_bytes=1 << 20) for _ in range(2))
    first.open()
    second.open()  # while the first runs: a slot of its own, no shared file
    assert first.directory != second.directory
    first.append(events(5))
    second.append(events(3))
    first.close()
    second.close()
    # One gateway where there were two: it replays both slots.
    alone = EventSpool(root, max_bytes=1 << 20)
    alone.open()
    assert alone.events == 8 and len(read_all(alone)) == 8
    alone.close()
    assert not root.exists()


# --- ten minutes of outage on a fast clock ------------------------------------------------------


def test_a_ten_minute_outage_costs_no_event(tmp_path: Path) -> None:
    speed = 500.0  # simulated seconds per second
    rate = 10  # events per simulated second
    outage_s = 600.0
    # Made beforehand: building them as they come would slow the clock's second down.
    made = events(int((outage_s + 40) * rate))
    began, epoch = time.monotonic(), 1_800_000_000.0

    def clock() -> float:
        return epoch + (time.monotonic() - began) * speed

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds / speed)

    received: Counter[str] = Counter()

    def collector(request: httpx.Request) -> httpx.Response:
        if clock() < epoch + outage_s:
            raise httpx.ConnectError("the collector is down")
        batch = json.loads(request.content)["events"]
        received.update(event["event_id"] for event in batch)
        n = len(batch)
        return httpx.Response(
            200, json={"received": n, "stored": n, "duplicates": 0, "rejected": []}
        )

    async def run() -> tuple[EventLogger, list[str], int, float]:
        logger = EventLogger(
            "http://collector",
            "secret",
            spool_root=tmp_path,
            spool_max_bytes=32 * 1024 * 1024,
            batch_size=500,
            flush_interval_s=0.005,
            backoff_s=0.2,
            max_backoff_s=5.0,
            transport=httpx.MockTransport(collector),
            sleep=sleep,
            clock=clock,
        )
        await logger.start()
        offered: list[str] = []
        peak_bytes, peak_age = 0, 0.0
        while clock() < epoch + outage_s + 30:
            for event in made[len(offered) : int((clock() - epoch) * rate)]:
                offered.append(event["event_id"])
                assert logger.offer(event)
            peak_bytes = max(peak_bytes, logger.spool_bytes)
            peak_age = max(peak_age, logger.oldest_age_s())
            await asyncio.sleep(0.002)
        assert await logger.flush(30)
        await logger.aclose()
        return logger, offered, peak_bytes, peak_age

    logger, offered, peak_bytes, peak_age = asyncio.run(run())
    log.info(
        "fast-clock outage: %d events over %.0f s, %d failed posts, peak spool %.2f MiB, "
        "oldest event waited %.0f s",
        len(offered),
        outage_s,
        logger.counts.failed_posts,
        peak_bytes / 2**20,
        peak_age,
    )
    assert len(offered) >= rate * outage_s
    # Retried for the whole outage, never more than the cap apart, never given up.
    assert logger.counts.failed_posts >= outage_s / 5.0 and max(waits) <= 5.0
    assert peak_age >= outage_s - 10
    assert logger.counts.dropped == logger.counts.rejected == 0
    # Every event arrived, once.
    assert received == Counter(dict.fromkeys(offered, 1))
    assert logger.counts.delivered == len(offered)
