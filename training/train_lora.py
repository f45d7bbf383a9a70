"""Train a LoRA adapter of the local model on one language of the corpus, within a time budget.

Usage: ``python -m training.train_lora --language python --minutes 6
--out serving/local/checkpoints/adapters/python-lora``. The base stays frozen; only the adapter's
A and B matrices on the attention projections learn. Writes ``adapter.pt`` and ``adapter.json``
(rank, alpha, targets, base hash, training config, data, and the held-out figures of the base
and of base + adapter for every language, measured the same way as the base's training.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backtest import source_files
from serving.local.engine import DEFAULT_CHECKPOINT
from serving.local.lora import LoraAdapter, LoraConfig, base_hash
from serving.local.model import FimTransformer, load_checkpoint
from serving.local.tokenizer import Tokenizer
from training import data as data_mod
from training.evaluate import EvalConfig, bits_per_byte, masked_line
from training.train import TrainConfig as BaseTrainConfig
from training.train import fim_loss, lr_at

log = logging.getLogger("training.train_lora")


@dataclasses.dataclass(frozen=True, slots=True)
class LoraTrainConfig:
    """The adapter's optimisation settings."""

    language: str = "python"
    minutes: float = 6.0
    batch: int = 32
    peak_lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0
    fim_rate: float = 0.7
    middle_loss_weight: float = 2.0
    threads: int = 2
    seed: int = 1
    bf16_autocast: bool = True


def train_adapter(
    adapter: LoraAdapter,
    model: FimTransformer,
    sampler: data_mod.Sampler,
    cfg: LoraTrainConfig,
) -> dict[str, Any]:
    """AdamW on the adapter only until the budget is spent."""
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.peak_lr, betas=(0.9, 0.95))
    # The schedule of the base recipe, with this run's settings.
    schedule = BaseTrainConfig(
        peak_lr=cfg.peak_lr, min_lr_ratio=cfg.min_lr_ratio, warmup_steps=cfg.warmup_steps
    )
    budget_s = cfg.minutes * 60.0
    start = time.monotonic()
    step, ema = 0, 0.0
    history: list[dict[str, float]] = []
    adapter.train()
    while (elapsed := time.monotonic() - start) < budget_s:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, elapsed / budget_s, schedule)
        rows = torch.from_numpy(sampler.batch(rng, cfg.batch))
        loss = fim_loss(model, rows, cfg.bf16_autocast, cfg.middle_loss_weight, adapter)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        ema = loss.item() if step == 1 else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            history.append({"step": step, "minutes": elapsed / 60, "train": ema})
            log.info("step %d %.1f min loss %.3f", step, elapsed / 60, ema)
    adapter.eval()
    return {
        "steps": step,
        "wall_minutes": (time.monotonic() - start) / 60,
        "final_train_loss_ema": ema,
        "history": history,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--language", default="python")
    parser.add_argument("--name", default="python-lora")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="qkv,proj")
    parser.add_argument("--peak-lr", type=float, default=3e-3)
    parser.add_argument("--masked-lines", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = LoraTrainConfig(
        language=args.language, minutes=args.minutes, peak_lr=args.peak_lr, threads=args.threads
    )
    lora_cfg = LoraConfig(rank=args.rank, alpha=args.alpha, targets=tuple(args.targets.split(",")))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, _ = load_checkpoint(args.base)
    model.requires_grad_(False)
    tok = Tokenizer.for_checkpoint(args.base)
    base_record = json.loads((args.base / "training.json").read_text())
    width = 1.0 if not tok.merges else 1.2 * base_record["tokenizer"]["held_out_bytes_per_token"]

    files = list(source_files.collect(source_files.default_languages()))
    train_files = [f for f in files if not f.held_out and f.language == cfg.language]
    held_out = [f for f in files if f.held_out]
    if not train_files:
        parser.error(f"no training files of language {cfg.language!r}")
    corpus = data_mod.corpus_bytes(train_files)
    sampler = data_mod.Sampler(corpus, tok, model.config.context, cfg.fim_rate, width)
    adapter = LoraAdapter(model, lora_cfg)
    n_params = sum(p.numel() for p in adapter.parameters())
    log.info("adapter: %d parameters, %d bytes fp16", n_params, adapter.size_bytes())
    run = train_adapter(adapter, model, sampler, cfg)

    ecfg = EvalConfig(masked_lines=args.masked_lines)
    t0 = time.monotonic()
    with torch.no_grad():
        figures = {
            "base": {
                "bits_per_byte_left_to_right": bits_per_byte(model, tok, held_out, ecfg, width),
                "masked_line": masked_line(model, tok, held_out, ecfg),
            },
            "adapter": {
                "bits_per_byte_left_to_right": bits_per_byte(
                    model, tok, held_out, ecfg, width, adapter
                ),
                "masked_line": masked_line(model, tok, held_out, ecfg, adapter),
            },
            "method": "as in the base's training.json (same held-out files, windows, masked "
            "lines and seeds), the base without and with the adapter",
            "eval_seconds": 0.0,
        }
    figures["eval_seconds"] = time.monotonic() - t0
    record = {
        "base_checkpoint": str(args.base),
        "base_model_name": base_record["model_name"],
        "train_config": dataclasses.asdict(cfg),
        "data": {
            "language": cfg.language,
            "files": len(train_files),
            "bytes": len(corpus) - len(train_files),
            "held_out": "the base's held-out files (all languages), never trained on",
        },
        "training": run,
        "evaluation": figures,
    }
    path = adapter.save(args.out, name=args.name, base=base_hash(args.base), record=record)
    log.info("saved %s (%d bytes)", path, path.stat().st_size)
    log.info("evaluation: %s", json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
