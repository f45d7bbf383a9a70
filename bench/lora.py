"""LoRA serving benchmark: the local engine on the base model, on an adapter, and on mixed batches.

Run: ``python bench/lora.py [--runs 30] [--threads 2]``. With the committed base and its
``python-lora`` adapter (plus a second, random adapter bound to the same base, so that a batch
can hold two adapters and the base) it reports

1. latency of one 32-token completion at a time (p50/p95): base vs ``python-lora``;
2. throughput with 8 requests in flight, every batch all-base, all-``python-lora``, or mixed
   (base / ``python-lora`` / the second adapter in turn), for both ways of applying per-row
   adapters (``gathered``: batched products of each row's A and B; ``grouped``: one product per
   adapter over its rows).

Figures are printed and written to ``bench/results/lora.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from serving.local.engine import DEFAULT_ADAPTERS, DEFAULT_CHECKPOINT, LocalEngine, LoraMode
from serving.local.lora import LoraAdapter, LoraConfig, base_hash
from serving.local.model import load_checkpoint
from training.measure import measure_latency, measure_throughput

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "lora.json"
ADAPTER = "python-lora"
SECOND = "bench-random-lora"


def _second_adapter(directory: Path) -> Path:
    """A random rank-8 adapter for the committed base (its outputs do not matter here)."""
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    torch.manual_seed(0)
    adapter = LoraAdapter(model, LoraConfig(rank=8, alpha=16.0))
    with torch.no_grad():
        for b in adapter.b.values():
            b.normal_(std=0.01)
    adapter.save(
        directory / SECOND,
        name=SECOND,
        base=base_hash(DEFAULT_CHECKPOINT),
        record={"purpose": "benchmark only"},
    )
    return directory / SECOND


async def _measure(mode: LoraMode, extra: Path, runs: int, threads: int) -> dict[str, Any]:
    engine = LocalEngine.load(
        DEFAULT_CHECKPOINT,
        max_batch=8,
        threads=threads,
        adapter_root=DEFAULT_ADAPTERS,
        adapter_paths=[extra],
        lora_mode=mode,
    )
    try:
        latency = {
            name: dataclasses.asdict(await measure_latency(engine, runs=runs, adapter=adapter))
            for name, adapter in (("base", None), (ADAPTER, ADAPTER))
        }
        throughput = {
            name: dataclasses.asdict(
                await measure_throughput(engine, concurrency=8, requests=96, adapters=adapters)
            )
            for name, adapters in (
                ("all_base", (None,)),
                (f"all_{ADAPTER}", (ADAPTER,)),
                ("mixed_base_and_two_adapters", (None, ADAPTER, SECOND)),
            )
        }
    finally:
        await engine.aclose()
    return {"latency_32_tokens": latency, "throughput_8_in_flight": throughput}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        extra = _second_adapter(Path(tmp))
        report: dict[str, Any] = {
            mode: asyncio.run(_measure(mode, extra, args.runs, args.threads))
            for mode in ("gathered", "grouped")
        }
    report["environment"] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "note": "shared 2-core machine: other processes ran at the same time",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
