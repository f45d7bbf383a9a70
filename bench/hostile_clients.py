"""Hostile clients: a normal client's batch latency, and the collector's memory, under attack.

Run: ``python -m bench.hostile_clients [--seconds 10] [--slow 32] [--heads 4]``. It

1. makes a scratch database on the server named by CODELIFT_DATABASE_URL (default: the local
   PostgreSQL's ``test`` server), migrated by Alembic, with one ingest key;
2. starts the collector (``codelift collector``) with its production settings, one process;
3. from a separate process, a normal client posts 100-event batches one at a time over a
   keep-alive connection (20 ms apart) for ``--seconds``: p50/p99 latency, unloaded;
4. from another process, the attack: ``--slow`` connections with the same valid key each
   sending a 100 kB body at 1 byte/s (reconnecting whenever refused), and ``--heads``
   connections each sending a 64 MiB request header, never finished (reconnecting whenever
   cut off); after a second, the normal client runs again for ``--seconds``;
5. samples the collector's resident memory throughout, and prints the ratios attacked to
   unloaded: p50, p99, and memory before against the most seen during the attack.

The normal client's batches are the synthetic events of ``bench/ingest.py`` (this project's own
data). Figures are printed and written to ``bench/results/hostile_clients.json``.
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
import re
import select
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bench.ingest import make_batches, running_collector, scratch_database
from core.auth.keys import create_api_key
from core.auth.scopes import Scope
from core.db.connection import make_engine

RESULTS = Path(__file__).parent / "results" / "hostile_clients.json"
BATCH = 100
THINK_S = 0.02
SLOW_BODY_BYTES = 100_000
HEAD_BYTES = 64 * 1024 * 1024


# --- the normal client (its own process) --------------------------------------------------------


def _normal_client(port: int, key: str, bodies: list[bytes], seconds: float, queue: Any) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds
    for body in bodies:
        if time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        conn.request("POST", "/v1/events", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        statuses[response.status] += 1
        time.sleep(THINK_S)
    conn.close()
    queue.put((latencies, dict(statuses)))


def normal_client(port: int, key: str, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """The normal client's figures for ``seconds`` of batches, from a process of its own."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_normal_client, args=(port, key, bodies, seconds, queue))
    proc.start()
    latencies, statuses = queue.get(timeout=seconds + 120)
    proc.join(timeout=30)
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "statuses": {str(status): count for status, count in statuses.items()},
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


# --- the attack (its own process) ---------------------------------------------------------------


def _status(data: bytes) -> str:
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return match.group(1).decode() if match else "closed"


def _slow_body(port: int, key: str, stop: Any, answers: Counter[str], lock: threading.Lock) -> None:
    # A valid key and a 100 kB body at 1 byte/s; refused (or cut off), it comes straight back.
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head)
            while not stop.is_set():
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    answer = _status(sock.recv(65536))
                    with lock:
                        answers[answer] += 1
                    break
                sock.sendall(b" ")


def _oversize_head(port: int, stop: Any, cuts: list[int], lock: threading.Lock) -> None:
    # One 64 MiB header, never finished: the connection is kept once it is all sent.
    chunk = b"a" * 65536
    while not stop.is_set():
        sent = 0
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(1.0)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: bench\r\nX-Padding: ")
            while sent < HEAD_BYTES and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    sent += sock.send(chunk)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    if not sock.recv(65536):
                        break
        with lock:
            cuts.append(sent)


def _attack(port: int, key: str, slow: int, heads: int, stop: Any, queue: Any) -> None:
    lock = threading.Lock()
    answers: Counter[str] = Counter()
    cuts: list[int] = []
    threads = [
        threading.Thread(target=_slow_body, args=(port, key, stop, answers, lock), daemon=True)
        for _ in range(slow)
    ] + [
        threading.Thread(target=_oversize_head, args=(port, stop, cuts, lock), daemon=True)
        for _ in range(heads)
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)
    queue.put((dict(answers), cuts))


@contextlib.contextmanager
def attack(port: int, key: str, slow: int, heads: int) -> Iterator[dict[str, Any]]:
    """The attack, from a process of its own, while the block runs; its counts after it."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    queue = ctx.Queue()
    proc = ctx.Process(target=_attack, args=(port, key, slow, heads, stop, queue))
    proc.start()
    counts: dict[str, Any] = {}
    try:
        yield counts
    finally:
        stop.set()
        answers, cuts = queue.get(timeout=60)
        proc.join(timeout=30)
        counts["slow_body_answers"] = answers
        counts["head_connections"] = len(cuts)
        counts["head_bytes_sent_max"] = max(cuts, default=0)


# --- the collector and its memory ---------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """(resident memory now, its peak so far) of ``pid`` in KiB, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class MemorySampler:
    """The most resident memory ``pid`` had, sampled every 0.1 s while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.most_kib = max(self.most_kib, rss_kib(self.pid)[0])

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured phase")
    parser.add_argument("--slow", type=int, default=32, help="slow-body connections")
    parser.add_argument("--heads", type=int, default=4, help="oversize-header connections")
    args = parser.parse_args()

    server = os.environ.get("CODELIFT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    # Enough bodies for both phases at about 50 batches/s, every event_id unique.
    per_phase = int(args.seconds * 60) + 20
    warm, unloaded_bodies, attacked_bodies = (
        make_batches(count, BATCH, seed=seed)
        for count, seed in ((50, 1), (per_phase, 2), (per_phase, 3))
    )

    with scratch_database(server) as url:
        with Session(make_engine(url)) as session:
            _, key = create_api_key(session, name="bench", scopes=[Scope.INGEST])
            session.commit()
        with running_collector(url, 1, log_level="error") as (port, pid):
            normal_client(port, key, warm, 5.0)
            unloaded = normal_client(port, key, unloaded_bodies, args.seconds)
            rss_before, _ = rss_kib(pid)
            with MemorySampler(pid) as memory, attack(port, key, args.slow, args.heads) as counts:
                time.sleep(1.0)  # every slow client has its headers in, every head is growing
                attacked = normal_client(port, key, attacked_bodies, args.seconds)
            _, rss_peak = rss_kib(pid)

    results = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "collector_processes": 1,
        "batch_size": BATCH,
        "attack": {
            "slow_body_connections": args.slow,
            "slow_body_bytes": SLOW_BODY_BYTES,
            "oversize_head_connections": args.heads,
            "oversize_head_bytes": HEAD_BYTES,
            **counts,
        },
        "unloaded": unloaded,
        "attacked": attacked,
        "p50_ratio": attacked["p50_ms"] / unloaded["p50_ms"],
        "p99_ratio": attacked["p99_ms"] / unloaded["p99_ms"],
        "rss_mib": {
            "before": rss_before / 1024,
            "most_during": memory.most_kib / 1024,
            "peak_ever": rss_peak / 1024,
        },
        "rss_ratio": memory.most_kib / rss_before,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"collector: 1 process; normal client: {BATCH}-event batches one at a time; attack: "
        f"{args.slow} valid-key bodies at 1 byte/s + {args.heads} unfinished 64 MiB headers"
    )
    for name, phase in (("unloaded", unloaded), ("attacked", attacked)):
        print(
            f"  {name:9} {phase['requests']:5d} batches {phase['statuses']}: "
            f"p50 {phase['p50_ms']:.1f} ms, p99 {phase['p99_ms']:.1f} ms, "
            f"max {phase['max_ms']:.1f} ms"
        )
    print(
        f"  ratio attacked/unloaded: p50 {results['p50_ratio']:.2f}, p99 {results['p99_ratio']:.2f}"
    )
    print(
        f"  collector RSS: {rss_before / 1024:.0f} MiB before, at most "
        f"{memory.most_kib / 1024:.0f} MiB during (ratio {results['rss_ratio']:.2f})"
    )
    print(
        f"  slow bodies answered {counts['slow_body_answers']}; oversize heads cut off "
        f"{counts['head_connections']} times, at most {counts['head_bytes_sent_max']:,} bytes "
        "sent (kernel buffers included)"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
