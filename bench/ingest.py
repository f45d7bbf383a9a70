"""Ingest benchmark: events/s stored through the collector, against the raw COPY ceiling.

Run: ``python bench/ingest.py [--seconds 20] [--workers 0]``. It

1. makes a scratch database on the server named by CODELIFT_DATABASE_URL (default: the local
   PostgreSQL's ``test`` server), migrated by Alembic, with an ingest key;
2. starts the collector with production settings, one process per core, each on its own
   SO_REUSEPORT socket;
3. drives it over HTTP from a separate process with 500-event batches (a realistic mix of event
   types) for a bounded time and reports events/s stored, p50/p99 batch latency;
4. measures single-event POSTs/s the same way;
5. in the same run, COPYs the same kind of rows straight into the same tables (binary COPY in
   10,000-row statements; no HTTP, no validation, no de-duplication): the ceiling, from one
   connection (the figure README.md's Performance table reports) and from as many
   processes as the collector has; and prints the ratio to each.

Figures are printed and written to ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session

from collector.partitions import maintain_for_settings
from core.auth.keys import create_api_key
from core.auth.scopes import Scope
from core.db.connection import libpq_conninfo, make_engine
from core.settings import DatabaseSettings
from migrations.runner import upgrade

RESULTS = Path(__file__).parent / "results" / "ingest.json"
BATCH = 500
LANGUAGES = ("python", "typescript", "java", "go", "rust", "cpp", "kotlin", "ruby")
IDES = ("vscode", "intellij", "neovim")
# Share of each event type in a batch: roughly what one suggestion's life produces.
MIX = (
    ("completion_served", 0.25),
    ("suggestion_shown", 0.25),
    ("suggestion_outcome", 0.25),
    ("persistence_check", 0.2),
    ("typing_volume", 0.05),
)


# --- synthetic events -------------------------------------------------------------------------


def make_event(kind: str, rng: random.Random, now: dt.datetime) -> dict[str, Any]:
    """One valid wire event of type ``kind`` with plausible values."""
    ts = now - dt.timedelta(seconds=rng.uniform(0, 3600))
    event: dict[str, Any] = {
        "type": kind,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "client_ts": ts.isoformat(),
        "user_id": f"user-{rng.randrange(5000)}",
        "session_id": f"session-{rng.randrange(50_000)}",
        "ide": rng.choice(IDES),
        "plugin_version": "1.4.2",
        "language": rng.choice(LANGUAGES),
    }
    suggestion = f"cmpl-{rng.getrandbits(64):016x}"
    if kind == "completion_served":
        event |= {
            "suggestion_id": suggestion,
            "request_id": f"req-{rng.getrandbits(64):016x}",
            "arms": {"fim-lora-rollout": rng.choice(("control", "lora"))},
            "model": "codelift-fim-small",
            "adapter": None,
            "latency_ms": round(rng.lognormvariate(4.5, 0.4), 2),
            "backend_latency_ms": round(rng.lognormvariate(4.3, 0.4), 2),
            "prompt_tokens": rng.randrange(200, 2048),
            "completion_chars": rng.randrange(0, 400),
            "completion_lines": rng.randrange(1, 8),
            "finish_reason": "stop",
        }
    elif kind == "suggestion_shown":
        event |= {
            "suggestion_id": suggestion,
            "display_ms": round(rng.uniform(50, 5000), 1),
            "chars": rng.randrange(1, 400),
            "lines": rng.randrange(1, 8),
            "multiline": rng.random() < 0.3,
            "trigger": rng.choice(("auto", "manual")),
        }
    elif kind == "suggestion_outcome":
        outcome = rng.choice(("accepted", "partially_accepted", "dismissed", "ignored"))
        accepted = outcome in ("accepted", "partially_accepted")
        event |= {
            "suggestion_id": suggestion,
            "outcome": outcome,
            "accepted_chars": rng.randrange(1, 300) if accepted else 0,
            "accepted_lines": rng.randrange(1, 5) if accepted else 0,
        }
    elif kind == "persistence_check":
        event |= {
            "suggestion_id": suggestion,
            "checkpoint_s": rng.choice((30, 120, 300, 600)),
            "status": rng.choice(("present", "removed")),
            "edit_distance_ratio": round(rng.random(), 3),
            "chars_remaining": rng.randrange(0, 300),
        }
    else:
        start = ts - dt.timedelta(minutes=1)
        event |= {
            "window_start": start.isoformat(),
            "window_end": ts.isoformat(),
            "chars_typed_manual": rng.randrange(0, 2000),
            "chars_accepted_ai": rng.randrange(0, 800),
            "chars_deleted": rng.randrange(0, 200),
        }
    return event


def restamped(body: bytes, seconds: float) -> bytes:
    """The batch ``body`` with every event's client_ts moved ``seconds`` later."""
    events = json.loads(body)["events"]
    for event in events:
        stamp = dt.datetime.fromisoformat(event["client_ts"]) + dt.timedelta(seconds=seconds)
        event["client_ts"] = stamp.isoformat()
    return json.dumps({"events": events}).encode()


def make_batches(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` JSON bodies of ``size`` events each, every event_id unique."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    return [
        json.dumps(
            {"events": [make_event(k, rng, now) for k in rng.choices(kinds, weights, k=size)]}
        ).encode()
        for _ in range(count)
    ]


# --- load generator (runs in its own process) ---------------------------------------------------


def _post_loop(
    port: int,
    key: str,
    bodies: list[bytes],
    connections: int,
    deadline: float,
    out: list[tuple[float, int]],
) -> None:
    # One request in flight at a time, rotating over several keep-alive connections: like a
    # fleet of IDEs, each mostly idle, and the kernel's SO_REUSEPORT hash sees many of them.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for number, body in enumerate(bodies):
        if time.perf_counter() >= deadline:
            break
        conn = conns[number % connections]
        started = time.perf_counter()
        conn.request("POST", "/v1/events", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"collector answered {response.status}: {payload[:300]!r}")
        out.append((time.perf_counter() - started, json.loads(payload)["stored"]))
    for conn in conns:
        conn.close()


def drive(
    port: int, key: str, bodies: list[bytes], seconds: float, senders: int, connections: int
) -> dict[str, float]:
    """POST ``bodies`` for at most ``seconds``: ``senders`` requests in flight at a time,
    spread over ``connections`` keep-alive connections."""
    shares = [bodies[i::senders] for i in range(senders)]
    results: list[list[tuple[float, int]]] = [[] for _ in range(senders)]
    per_sender = max(1, connections // senders)
    started = time.perf_counter()
    deadline = started + seconds
    threads = [
        threading.Thread(target=_post_loop, args=(port, key, share, per_sender, deadline, out))
        for share, out in zip(shares, results, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = [sample for out in results for sample in out]
    latencies = sorted(latency for latency, _ in samples)
    stored = sum(count for _, count in samples)
    return {
        "requests": len(samples),
        "events_stored": stored,
        "seconds": elapsed,
        "requests_per_s": len(samples) / elapsed,
        "events_per_s": stored / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def _drive_in_child(args: tuple[int, str, list[bytes], float, int, int], queue: Any) -> None:
    queue.put(drive(*args))


def drive_from_other_process(
    port: int, key: str, bodies: list[bytes], seconds: float, senders: int, connections: int
) -> dict[str, float]:
    """``drive`` in a separate process, so the client's CPU is not the collector's."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_drive_in_child,
        args=((port, key, bodies, seconds, senders, connections), queue),
    )
    proc.start()
    result: dict[str, float] = _result_from(queue, [proc])
    proc.join(timeout=30)
    return result


def _result_from(queue: Any, procs: list[Any], timeout_s: float = 600) -> Any:
    """The next answer on ``queue``; fails fast when a child died without answering."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Empty):
            return queue.get(timeout=1)
        if any(proc.exitcode not in (None, 0) for proc in procs):
            raise RuntimeError(f"benchmark process failed: {[p.exitcode for p in procs]}")
    raise TimeoutError(f"no answer from benchmark processes in {timeout_s:.0f} s")


# --- raw COPY ceiling ---------------------------------------------------------------------------


def _copy_rows(conninfo: str, bodies: list[bytes], queue: Any) -> None:
    from collector.parsing import accepted_window, parse_batch
    from collector.store import build_staging_layout

    tables = build_staging_layout().tables
    now = dt.datetime.now(dt.UTC)
    window = accepted_window(now, max_age=dt.timedelta(days=7), max_skew=dt.timedelta(hours=1))
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for body in bodies:
        for event in parse_batch(body, window=window, max_events=10**6).valid:
            spec = tables[event.type]  # type: ignore[attr-defined]
            grouped.setdefault(spec.event_type, []).append(spec.table_row(event, now))
    rows = sum(len(group) for group in grouped.values())
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        for event_type, group in grouped.items():
            spec = tables[event_type]
            columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
            statement = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)").format(
                table=sql.Identifier(spec.table), columns=columns
            )
            for chunk in range(0, len(group), 10_000):
                with conn.cursor().copy(statement) as copy:
                    copy.set_types(list(spec.copy_types))
                    for row in group[chunk : chunk + 10_000]:
                        copy.write_row(row)
                conn.commit()
        queue.put((rows, time.perf_counter() - started))


def copy_ceiling(conninfo: str, bodies: list[bytes], processes: int) -> dict[str, float]:
    """Rows/s of binary COPY of the same kind of rows into the same tables, in parallel."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_copy_rows, args=(conninfo, bodies[i::processes], queue))
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    # Each process times its own COPY only (not its parsing); the slowest one bounds the run.
    answers = [_result_from(queue, procs) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    rows = sum(count for count, _ in answers)
    seconds = max(elapsed for _, elapsed in answers)
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


# --- set-up -------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, migrated database on ``server_url``'s server, dropped afterwards."""
    name = f"codelift_bench_{uuid.uuid4().hex[:8]}"
    admin = libpq_conninfo(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_engine(server_url).url.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        settings = DatabaseSettings(database_url=url)
        maintain_for_settings(libpq_conninfo(url), settings, today=dt.datetime.now(dt.UTC).date())
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_collector(
    url: str, workers: int, *, log_level: str = "warning"
) -> Iterator[tuple[int, int]]:
    """``codelift collector`` with production settings, ready; yields (port, pid)."""
    port = free_port()
    env = os.environ | {
        "CODELIFT_DATABASE_URL": url,
        "CODELIFT_ENVIRONMENT": "production",
        "CODELIFT_COLLECTOR_LOG_LEVEL": log_level,
        "CODELIFT_COLLECTOR_PORT": str(port),
        "CODELIFT_COLLECTOR_WORKERS": str(workers),
    }
    proc = subprocess.Popen([sys.executable, "-m", "codelift", "collector"], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("collector did not become ready in 60 s")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table_counts(url: str) -> int:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        total = 0
        for table, _ in MIX:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            total += row[0] if row else 0
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the batch phase")
    parser.add_argument("--single-seconds", type=float, default=8.0, help="single-event phase")
    parser.add_argument("--workers", type=int, default=0, help="collector processes (0 = cores)")
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        # SO_REUSEPORT spreads connections by a hash of their addresses: with a handful of
        # connections one process can end up with most of them; a fleet of IDEs has many.
        help="client keep-alive connections, shared by the senders",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=8,
        # Requests in flight: latency grows with it once the collector is saturated.
        help="requests in flight at a time",
    )
    args = parser.parse_args()

    workers = args.workers or os.cpu_count() or 1
    server = os.environ.get("CODELIFT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    # Enough bodies for about 100k events/s; a faster collector ends the phase early.
    batch_bodies = make_batches(int(args.seconds * 200) + 20, BATCH, seed=1)
    single_bodies = make_batches(int(args.single_seconds * 5000), 1, seed=2)
    ceiling_bodies = make_batches(len(batch_bodies) // 3, BATCH, seed=3)

    with scratch_database(server) as url:
        with Session(make_engine(url)) as session:
            _, key = create_api_key(session, name="bench", scopes=[Scope.INGEST])
            session.commit()
        with running_collector(url, workers) as (port, _pid):
            # Warm-up: connections in the pool, code paths, partitions' caches.
            drive_from_other_process(port, key, make_batches(20, BATCH, seed=9), 5, 2, 2)
            batches = drive_from_other_process(
                port, key, batch_bodies, args.seconds, args.senders, args.connections
            )
            # A retried batch must not double, even re-stamped: post the first batches again,
            # every client_ts 30 s later (a client that stamps events when it sends them).
            retry = drive_from_other_process(
                port, key, [restamped(body, 30.0) for body in batch_bodies[:200]], 30, 2, 2
            )
            singles = drive_from_other_process(
                port, key, single_bodies, args.single_seconds, args.senders, args.connections
            )
        stored_rows = table_counts(url)
        ceiling = copy_ceiling(libpq_conninfo(url), ceiling_bodies[::2], 1)
        ceiling_parallel = copy_ceiling(libpq_conninfo(url), ceiling_bodies[1::2], workers)

    expected = 20 * BATCH + batches["events_stored"] + singles["events_stored"]
    retried = retry["requests"] * BATCH
    results = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "collector_processes": workers,
        "senders": args.senders,
        "connections": args.connections,
        "batch_size": BATCH,
        "batches": batches,
        "retried_batches_stored": retry["events_stored"],
        "retried_events_per_s": retried / retry["seconds"],
        "single_event_posts": singles,
        "rows_in_tables_matches_stored": stored_rows == expected,
        "copy_ceiling": ceiling,
        "ratio_to_copy_ceiling": batches["events_per_s"] / ceiling["rows_per_s"],
        "copy_ceiling_parallel": ceiling_parallel,
        "ratio_to_parallel_copy_ceiling": batches["events_per_s"] / ceiling_parallel["rows_per_s"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"collector: {workers} process(es), {BATCH}-event batches, {args.senders} requests "
        f"in flight over {args.connections} connections"
    )
    print(
        f"  stored {batches['events_per_s']:,.0f} events/s "
        f"({batches['requests_per_s']:.0f} batches/s); "
        f"batch latency p50 {batches['p50_ms']:.1f} ms, p99 {batches['p99_ms']:.1f} ms"
    )
    print(
        f"  re-stamped retries: {retried:,} events answered as duplicates at "
        f"{results['retried_events_per_s']:,.0f}/s; stored again: {retry['events_stored']} "
        "(must be 0)"
    )
    print(
        f"  single-event POSTs: {singles['requests_per_s']:,.0f}/s, "
        f"p50 {singles['p50_ms']:.1f} ms, p99 {singles['p99_ms']:.1f} ms"
    )
    print(
        f"raw binary COPY ceiling, one connection: {ceiling['rows_per_s']:,.0f} rows/s "
        f"-> ratio {results['ratio_to_copy_ceiling']:.2f}"
    )
    print(
        f"raw binary COPY ceiling, {workers} processes: "
        f"{ceiling_parallel['rows_per_s']:,.0f} rows/s "
        f"-> ratio {results['ratio_to_parallel_copy_ceiling']:.2f}"
    )
    print(f"rows in tables match events stored: {results['rows_in_tables_matches_stored']}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
