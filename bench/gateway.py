"""Gateway benchmark: the gateway's own overhead, and the local engine through the gateway.

Run: ``python bench/gateway.py [--requests 3000] [--skip-engine]``. It

1. starts the gateway in a separate process on a fast in-process backend (``ScriptedBackend``,
   no model: it answers after a fixed delay) with the event logger on (its network replaced by
   an in-process sink) and auth off (the key check is a cached dict lookup);
2. drives it from this process with a minimal keep-alive HTTP/1.1 client (so the client's own
   cost stays small) at 1 and 32 concurrent clients, and reports the overhead per request:
   client-observed latency minus the backend's time, and the gateway's own measurement
   (``codelift.latency_ms - codelift.backend_ms``), p50/p99;
3. if the local engine's checkpoint is there, starts the gateway on it and reports latency of
   a 32-token completion (p50/p95, one client) and throughput with concurrent clients.

Figures are printed and written to ``bench/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gateway.json"
PREFIX = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return "
SUFFIX = "\n\n\ndef median(values):\n    ordered = sorted(values)\n"
REPLY = "total / len(values)\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pin(*, upper: bool) -> set[int] | None:
    """Run this process on one half of the machine's cores; the cores it had before.

    The gateway takes the upper half and the load generator the lower, so the overhead figures
    are the gateway's and not the two processes' contention for the same core.
    """
    count = os.cpu_count() or 1
    if not hasattr(os, "sched_setaffinity") or count < 2:
        return None
    before = os.sched_getaffinity(0)
    half = range(count // 2, count) if upper else range(count // 2)
    try:
        os.sched_setaffinity(0, half)
    except OSError:
        return None
    return before


def serve(port: int, backend: str, delay_ms: float, checkpoint: str | None) -> None:
    """The gateway process: a scripted or the local backend, auth off, events to a sink."""
    import httpx

    from experiments.variants import Decoding, PostProcess, Variant
    from serving.backend import Backend
    from serving.gateway.config import GatewaySettings
    from serving.gateway.main import create_app
    from serving.gateway.server import serve as run

    backends: dict[str, Backend]
    if backend == "scripted":
        from serving.scripted_backend import ScriptedBackend

        backends = {"local": ScriptedBackend(REPLY, name="local", delay_s=delay_ms / 1000)}
        variant = Variant(model="codelift-fim-small")
    else:
        from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine

        engine = LocalEngine.load(
            Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT,
            max_batch=8,
            max_queue=64,
            threads=max(1, os.cpu_count() or 1),
        )
        backends = {"local": engine}
        # 32 tokens, no early stop from post-processing: the engine's cost per completion.
        variant = Variant(
            model=engine.model_name,
            decoding=Decoding(temperature=0.2, max_tokens=32),
            postprocess=PostProcess(trim="none", drop_if_repeats_suffix=False),
            context_tokens=min(1024, engine.context_length // 2),
        )

    if backend == "scripted":
        _pin(upper=True)

    def sink(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["events"])
        return httpx.Response(
            200, json={"received": n, "stored": n, "duplicates": 0, "rejected": []}
        )

    settings = GatewaySettings(
        # Auth off, to time the gateway's own work: only development allows that.
        environment="development",
        require_auth=False,
        experiments=False,
        default_variant=variant,
        collector_url="http://collector.invalid",
        ingest_key="bench",
        rate_limit_per_s=1e9,
        rate_limit_burst=1_000_000_000,
        log_level="warning",
    )
    app = create_app(settings, backends, event_transport=httpx.MockTransport(sink))
    run(app, "127.0.0.1", port, log_level="warning")


class Gateway:
    """A gateway process for the length of a ``with`` block."""

    def __init__(self, backend: str, delay_ms: float = 0.0, checkpoint: str | None = None) -> None:
        self.port = _free_port()
        self.args = [
            sys.executable,
            __file__,
            "--serve",
            str(self.port),
            "--backend",
            backend,
            "--delay-ms",
            str(delay_ms),
            *(["--checkpoint", checkpoint] if checkpoint else []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(self.args, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("the gateway process exited") from None
                time.sleep(0.1)
        raise TimeoutError("the gateway did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)


def _request(port: int, body: bytes) -> bytes:
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (port, len(body))
    ) + body


async def _client(
    port: int, count: int, results: list[tuple[float, float, float, int]], user: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            body = json.dumps(
                {
                    "model": "codelift",
                    "prompt": PREFIX,
                    "suffix": SUFFIX,
                    "user": f"dev-{user}",
                    "max_tokens": 32,
                    "language": "python",
                    "session_id": f"s-{user}-{i}",
                }
            ).encode()
            started = time.perf_counter()
            writer.write(_request(port, body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"gateway answered {head[:40]!r}: {payload[:200]!r}")
            data = json.loads(payload)
            codelift = data["codelift"]
            results.append(
                (
                    elapsed_ms,
                    codelift["latency_ms"],
                    codelift["backend_ms"],
                    data["usage"]["completion_tokens"],
                )
            )
    finally:
        writer.close()


async def _floor_client(port: int, count: int, results: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            results.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()


def floor(port: int, concurrency: int, requests: int) -> dict[str, float]:
    """Round trips of ``GET /healthz`` (no work at all): this machine's HTTP floor."""
    results: list[float] = []

    async def main() -> None:
        per_client = max(1, requests // concurrency)
        await asyncio.gather(
            *(_floor_client(port, per_client, results) for _ in range(concurrency))
        )

    asyncio.run(main())
    return {"p50_ms": round(_pct(results, 0.5), 3), "p99_ms": round(_pct(results, 0.99), 3)}


def drive(port: int, concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` completions from ``concurrency`` keep-alive connections."""
    results: list[tuple[float, float, float, int]] = []
    per_client = max(1, requests // concurrency)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_client(port, per_client, results, u) for u in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    return {"results": results, "elapsed_s": elapsed}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def overhead(requests: int, delay_ms: float) -> dict[str, Any]:
    """Gateway overhead at 1 and 32 concurrent clients with a backend of ``delay_ms``."""
    out: dict[str, Any] = {"backend_delay_ms": delay_ms}
    with Gateway("scripted", delay_ms) as gateway:
        before = _pin(upper=False)
        drive(gateway.port, 32, 2000)  # warm-up
        for concurrency in (1, 32):
            n = requests if concurrency == 32 else max(200, requests // 4)
            run = drive(gateway.port, concurrency, n)
            rows = run["results"]
            client = [r[0] - r[2] for r in rows]
            server = [r[1] - r[2] for r in rows]
            out[f"c{concurrency}"] = {
                "requests": len(rows),
                "requests_per_s": round(len(rows) / run["elapsed_s"], 1),
                "client_overhead_ms": {
                    "p50": round(_pct(client, 0.5), 3),
                    "p99": round(_pct(client, 0.99), 3),
                },
                "gateway_measured_overhead_ms": {
                    "p50": round(_pct(server, 0.5), 3),
                    "p99": round(_pct(server, 0.99), 3),
                },
                "backend_ms_p50": round(_pct([r[2] for r in rows], 0.5), 3),
            }
            if delay_ms == 0:
                out[f"c{concurrency}"]["healthz_round_trip"] = floor(gateway.port, concurrency, n)
            print(f"  backend {delay_ms:g} ms, {concurrency:>2} clients: {out[f'c{concurrency}']}")
        if before is not None:
            os.sched_setaffinity(0, before)
    return out


def engine(requests: int, checkpoint: str | None) -> dict[str, Any]:
    """The local engine through the gateway: 32-token latency and throughput."""
    out: dict[str, Any] = {"checkpoint": checkpoint or "shipped"}
    with Gateway("local", checkpoint=checkpoint) as gateway:
        drive(gateway.port, 1, 5)  # warm-up
        run = drive(gateway.port, 1, max(20, requests // 100))
        rows = run["results"]
        latencies = [r[0] for r in rows]
        out["latency_c1"] = {
            "requests": len(rows),
            "p50_ms": round(_pct(latencies, 0.5), 1),
            "p95_ms": round(_pct(latencies, 0.95), 1),
            "completion_tokens_mean": round(statistics.mean(r[3] for r in rows), 1),
        }
        print(f"  local engine, 1 client: {out['latency_c1']}")
        for concurrency in (8, 32):
            run = drive(gateway.port, concurrency, concurrency * 4)
            rows = run["results"]
            out[f"throughput_c{concurrency}"] = {
                "requests": len(rows),
                "completions_per_s": round(len(rows) / run["elapsed_s"], 2),
                "tokens_per_s": round(sum(r[3] for r in rows) / run["elapsed_s"], 1),
                "p50_ms": round(_pct([r[0] for r in rows], 0.5), 1),
                "p95_ms": round(_pct([r[0] for r in rows], 0.95), 1),
            }
            print(f"  local engine, {concurrency} clients: {out[f'throughput_c{concurrency}']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="scripted", help=argparse.SUPPRESS)
    parser.add_argument("--delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.backend, args.delay_ms, args.checkpoint)
        return
    sys.path.insert(0, str(ROOT))
    # The load generator's own garbage collections would show up as gateway latency.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "overhead": [],
    }
    print("gateway overhead (gateway latency minus backend time):")
    for delay_ms in (20.0, 0.0):
        report["overhead"].append(overhead(args.requests, delay_ms))
    from serving.local.engine import DEFAULT_CHECKPOINT
    from serving.local.model import WEIGHTS_FILE

    if not args.skip_engine:
        print("local engine through the gateway (32-token completions):")
        if (DEFAULT_CHECKPOINT / WEIGHTS_FILE).exists():
            report["local_engine"] = engine(args.requests, None)
        else:
            # No trained checkpoint yet: random weights of the default shape cost the same per
            # token (completions may end early at a sampled end-of-text; see the token mean).
            import tempfile

            import torch

            from serving.local.model import FimTransformer, ModelConfig, save_checkpoint

            with tempfile.TemporaryDirectory() as tmp:
                torch.manual_seed(0)
                save_checkpoint(FimTransformer(ModelConfig()), Path(tmp), name="random-fim")
                print("  (no trained checkpoint: random weights, default ModelConfig shape)")
                report["local_engine"] = engine(args.requests, tmp)
                report["local_engine"]["checkpoint"] = f"random weights, {ModelConfig()}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
