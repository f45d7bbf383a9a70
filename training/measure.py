"""Latency and throughput of the local engine, measured in-process.

``python -m training.measure`` prints both; ``bench/`` imports ``measure_latency`` and
``measure_throughput``. A "32-token completion" is forced by a left-to-right prompt (plain code,
no FIM sentinels), after which the model practically never ends the text early; the reports
carry the mean completion length so that this can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from serving.backend import GenerationRequest
from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine

# 470 bytes of ordinary Python (about 170 tokens of the byte-pair tokenizer, 470 of the bytes one).
LTR_PROMPT = """import os
import sys
from pathlib import Path


def read_config(path: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def main() -> int:
    config = read_config(Path(sys.argv[1]))
    for key in sorted(config):
"""


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyReport:
    """Sequential requests, one at a time."""

    runs: int
    max_tokens: int
    prompt_tokens: int
    mean_completion_tokens: float
    p50_ms: float
    p95_ms: float
    mean_ms: float


@dataclasses.dataclass(frozen=True, slots=True)
class ThroughputReport:
    """``requests`` requests with ``concurrency`` in flight at once."""

    concurrency: int
    requests: int
    max_tokens: int
    wall_s: float
    requests_per_s: float
    completion_tokens_per_s: float
    p50_ms: float
    p95_ms: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _request(
    engine: LocalEngine, prompt: str, max_tokens: int, adapter: str | None = None
) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        model=engine.model_name,
        adapter=adapter,
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        stop=(),
    )


async def measure_latency(
    engine: LocalEngine,
    *,
    runs: int = 30,
    max_tokens: int = 32,
    prompt: str = LTR_PROMPT,
    adapter: str | None = None,
) -> LatencyReport:
    """Wall time of ``runs`` sequential completions (after two warm-up requests)."""
    request = _request(engine, prompt, max_tokens, adapter)
    for _ in range(2):
        await engine.generate(request)
    times: list[float] = []
    tokens: list[int] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await engine.generate(request)
        times.append((time.perf_counter() - started) * 1000.0)
        tokens.append(result.completion_tokens)
    return LatencyReport(
        runs=runs,
        max_tokens=max_tokens,
        prompt_tokens=engine.count_tokens(prompt),
        mean_completion_tokens=statistics.fmean(tokens),
        p50_ms=_percentile(times, 0.5),
        p95_ms=_percentile(times, 0.95),
        mean_ms=statistics.fmean(times),
    )


async def measure_throughput(
    engine: LocalEngine,
    *,
    concurrency: int = 8,
    requests: int = 32,
    max_tokens: int = 32,
    prompt: str = LTR_PROMPT,
    adapters: Sequence[str | None] = (None,),
) -> ThroughputReport:
    """Completions per second with ``concurrency`` requests in flight.

    Request ``i`` uses ``adapters[i % len(adapters)]`` (None: the base model), so a list of
    several makes every batch a mix of adapters.
    """
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []
    tokens: list[int] = []

    async def one(i: int) -> None:
        request = _request(engine, prompt, max_tokens, adapters[i % len(adapters)])
        async with gate:
            started = time.perf_counter()
            result = await engine.generate(request)
            times.append((time.perf_counter() - started) * 1000.0)
            tokens.append(result.completion_tokens)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - started
    return ThroughputReport(
        concurrency=concurrency,
        requests=requests,
        max_tokens=max_tokens,
        wall_s=wall,
        requests_per_s=requests / wall,
        completion_tokens_per_s=sum(tokens) / wall,
        p50_ms=_percentile(times, 0.5),
        p95_ms=_percentile(times, 0.95),
    )


async def _main(checkpoint: Path, runs: int, concurrency: list[int], threads: int) -> None:
    engine = LocalEngine.load(checkpoint, max_batch=max(concurrency), threads=threads)
    try:
        report: dict[str, object] = {
            "latency": dataclasses.asdict(await measure_latency(engine, runs=runs))
        }
        report["throughput"] = [
            dataclasses.asdict(
                await measure_throughput(engine, concurrency=c, requests=max(4 * c, 8))
            )
            for c in concurrency
        ]
    finally:
        await engine.aclose()
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.checkpoint, args.runs, args.concurrency, args.threads))


if __name__ == "__main__":
    main()
