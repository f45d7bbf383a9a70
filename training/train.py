"""Train the local FIM model on source files already on this machine, within a wall-clock budget.

Usage: ``python -m training.train --minutes 25 --out serving/local/checkpoints/fim-small``.
Writes ``model.pt`` (fp16 weights + config) and ``training.json`` (config, data, evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backtest import source_files
from serving.local.lora import Deltas
from serving.local.model import (
    FimTransformer,
    ModelConfig,
    load_checkpoint,
    save_checkpoint,
)
from serving.local.tokenizer import (
    FIM_MIDDLE_ID,
    PAD_ID,
    Tokenizer,
    learn_merges,
)
from training import data as data_mod
from training.evaluate import EvalConfig, bits_per_byte, masked_line

log = logging.getLogger("training.train")

MODEL_NAME = "codelift-fim-small"


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimisation settings (the learning-rate schedule is a function of elapsed time)."""

    minutes: float = 25.0
    batch: int = 16
    peak_lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 150
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    fim_rate: float = 0.6
    middle_loss_weight: float = 1.0
    # Byte-pair merges learned before training (0: plain bytes), from this many corpus bytes.
    merges: int = 0
    merge_sample_bytes: int = 3_000_000
    threads: int = 2
    seed: int = 0
    bf16_autocast: bool = True


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.peak_lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def _optimizer(model: FimTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=(0.9, 0.95))


def fim_loss(
    model: FimTransformer,
    rows: torch.Tensor,
    autocast: bool,
    middle_weight: float = 1.0,
    lora: Deltas | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``rows``, the FIM middles weighted, padding unscored."""
    inputs, targets = rows[:, :-1], rows[:, 1:]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(inputs, lora)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    # The middle of a FIM sample (what follows <fim_middle>) is the skill the product uses but a
    # small share of the bytes; weighting it up speeds up learning to infill. Padding is unscored.
    in_middle = (inputs == FIM_MIDDLE_ID).cumsum(dim=1) > 0
    weights = (1.0 + (middle_weight - 1.0) * in_middle.float()) * (targets != PAD_ID).float()
    return (nll * weights).sum() / weights.sum()


def train(
    model: FimTransformer,
    sampler: data_mod.Sampler,
    cfg: TrainConfig,
    *,
    out: Path,
    val_sampler: data_mod.Sampler,
    budget_s: float,
) -> dict[str, Any]:
    """Run AdamW until ``budget_s`` is spent; checkpoints every few minutes."""
    rng = np.random.default_rng(cfg.seed)
    opt = _optimizer(model, cfg)
    start = time.monotonic()
    last_save = start
    step, tokens, ema = 0, 0, 0.0
    history: list[dict[str, float]] = []
    model.train()
    while (elapsed := time.monotonic() - start) < budget_s:
        lr = lr_at(step, elapsed / budget_s, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = torch.from_numpy(sampler.batch(rng, cfg.batch))
        loss = fim_loss(model, rows, cfg.bf16_autocast, cfg.middle_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        tokens += rows[:, 1:].numel()
        ema = loss.item() if step == 1 else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0:
            val = _quick_val(model, val_sampler, cfg)
            history.append({"step": step, "minutes": elapsed / 60, "train": ema, "val": val})
            log.info(
                "step %d %.1f min lr %.2e loss %.3f val %.3f", step, elapsed / 60, lr, ema, val
            )
        if time.monotonic() - last_save > 300:
            save_checkpoint(model, out, name=MODEL_NAME, tok=sampler.tok)
            last_save = time.monotonic()
    model.eval()
    return {
        "steps": step,
        "tokens_seen": tokens,
        "wall_minutes": (time.monotonic() - start) / 60,
        "final_train_loss_nats_ema": ema,
        "history": history,
    }


@torch.no_grad()
def _quick_val(model: FimTransformer, val_sampler: data_mod.Sampler, cfg: TrainConfig) -> float:
    model.eval()
    rows = torch.from_numpy(val_sampler.batch(np.random.default_rng(7), 8))
    loss = fim_loss(model, rows, cfg.bf16_autocast).item()
    model.train()
    return loss


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=Path("serving/local/checkpoints/fim-small"))
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--masked-lines", type=int, default=300)
    parser.add_argument("--fim-rate", type=float, default=0.6)
    parser.add_argument("--middle-loss-weight", type=float, default=1.0)
    parser.add_argument("--peak-lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--merges", type=int, default=0, help="byte-pair merges (0: bytes)")
    parser.add_argument(
        "--init-from", type=Path, help="continue from this checkpoint directory (a later phase)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = TrainConfig(
        minutes=args.minutes,
        fim_rate=args.fim_rate,
        middle_loss_weight=args.middle_loss_weight,
        peak_lr=args.peak_lr,
        warmup_steps=args.warmup_steps,
        batch=args.batch,
        merges=args.merges,
        threads=args.threads,
    )
    ecfg = EvalConfig(masked_lines=args.masked_lines)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model_cfg = ModelConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.d_model // 64,
        d_ff=4 * args.d_model,
        context=args.context,
    )

    started = time.monotonic()
    languages = source_files.default_languages()
    files = list(source_files.collect(languages))
    train_files = [f for f in files if not f.held_out]
    held_out = [f for f in files if f.held_out]
    corpus = data_mod.corpus_bytes(train_files)
    data_desc = _describe(languages, files, time.monotonic() - started)
    log.info("data: %s", json.dumps(data_desc["per_language"]))

    previous: list[dict[str, Any]] = []
    tokenizer_record: dict[str, Any]
    learn_s = 0.0  # learning the tokenizer is part of the training budget
    if args.init_from:
        model, _ = load_checkpoint(args.init_from)
        tok = Tokenizer.for_checkpoint(args.init_from)
        model_cfg = model.config
        earlier = json.loads((args.init_from / "training.json").read_text())
        # Checkpoints from before the byte-pair tokenizer describe it in a sentence.
        described = earlier["tokenizer"]
        tokenizer_record = described if isinstance(described, dict) else {"kind": "bytes"}
        previous = [
            *earlier.get("previous_phases", []),
            earlier["training"]
            | {
                "train_config": earlier["train_config"],
                "evaluation": earlier["evaluation"],
            },
        ]
    else:
        t0 = time.monotonic()
        tok = Tokenizer(learn_merges(_merge_sample(train_files, cfg), cfg.merges))
        learn_s = time.monotonic() - t0
        tokenizer_record = {
            "kind": "byte-bpe" if cfg.merges else "bytes",
            "description": "bytes 0-255, <fim_prefix> <fim_suffix> <fim_middle> <file_sep> "
            "<|endoftext|> (256-260), padding (261), learned byte-pair merges from 264; merges "
            "stay within pieces (a newline, a word with its leading space, a punctuation run, "
            "indentation)",
            "merges": len(tok.merges),
            "vocab_size": tok.vocab_size,
            "sample_bytes": cfg.merge_sample_bytes if cfg.merges else 0,
            "learn_seconds": learn_s,
        }
        model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
        model = FimTransformer(model_cfg)
    bytes_per_token = _bytes_per_token(tok, held_out)
    tokenizer_record["held_out_bytes_per_token"] = bytes_per_token
    log.info("tokenizer: %s", json.dumps(tokenizer_record))
    # A little more text than the context holds, so that a row is rarely padded.
    width = 1.0 if not tok.merges else 1.2 * bytes_per_token
    sampler = data_mod.Sampler(corpus, tok, model_cfg.context, cfg.fim_rate, width)
    val_sampler = data_mod.Sampler(
        data_mod.corpus_bytes(held_out), tok, model_cfg.context, 0.0, width
    )
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %d parameters", n_params)
    budget_s = cfg.minutes * 60.0 - learn_s
    run = train(model, sampler, cfg, out=args.out, val_sampler=val_sampler, budget_s=budget_s)
    run["wall_minutes"] += learn_s / 60.0
    path = save_checkpoint(model, args.out, name=MODEL_NAME, tok=tok)

    t1 = time.monotonic()
    evaluation = {
        "bits_per_byte_left_to_right": bits_per_byte(model, tok, held_out, ecfg, width),
        "masked_line": masked_line(model, tok, held_out, ecfg),
        "method": dataclasses.asdict(ecfg)
        | {
            "bits_per_byte": "summed cross-entropy of the text tokens / their bytes / ln 2 over "
            "random context-long windows of held-out files (file separators not scored), fp32",
            "masked_line": "a random non-blank line of a random held-out file is removed; the "
            "model gets up to prefix_bytes before and suffix_bytes after it in the PSM template "
            "and decodes greedily until a newline or sentinel; exact = identical line incl. "
            "indentation; edit similarity = 1 - Levenshtein / longer length; "
            "python_file_still_parses = ast.parse of the whole file with the predicted line "
            "(files that parse originally), against the same with the line left empty",
        },
        "eval_seconds": time.monotonic() - t1,
    }
    record = {
        "model_name": MODEL_NAME,
        "model_config": dataclasses.asdict(model_cfg),
        "parameters": n_params,
        "train_config": dataclasses.asdict(cfg),
        "tokenizer": tokenizer_record,
        "fim": "PSM, StarCoder sentinels; span chosen on bytes = 1-3 whole lines without the "
        "last newline (50%), cursor to end of line (30%) or uniform random bytes (20%); prefix, "
        "suffix and middle encoded separately; FIM rate as in train_config, else left-to-right",
        "data": data_desc,
        "training": run,
        "previous_phases": previous,
        "total_training_minutes": run["wall_minutes"] + sum(p["wall_minutes"] for p in previous),
        "evaluation": evaluation,
        "checkpoint": {
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "dtype": "float16",
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(),
            "threads": cfg.threads,
        },
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("evaluation: %s", json.dumps(evaluation, indent=2))


def _merge_sample(files: list[source_files.SourceFile], cfg: TrainConfig) -> list[bytes]:
    """About ``merge_sample_bytes`` of training files, every language in its corpus share."""
    total = sum(len(f.data) for f in files)
    keep = max(1, round(total / max(1, cfg.merge_sample_bytes)))
    return [f.data for f in files if int(hashlib.sha1(f.data).hexdigest()[8:16], 16) % keep == 0]


def _bytes_per_token(tok: Tokenizer, files: list[source_files.SourceFile]) -> float:
    data = data_mod.corpus_bytes(files)
    return len(data) / max(1, len(data_mod.encode_window(tok, data)))


def _describe(
    languages: list[source_files.Language], files: list[source_files.SourceFile], seconds: float
) -> dict[str, Any]:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    held: Counter[str] = Counter()
    held_bytes: Counter[str] = Counter()
    for f in files:
        count[f.language] += 1
        size[f.language] += len(f.data)
        held[f.language] += f.held_out
        held_bytes[f.language] += len(f.data) if f.held_out else 0
    return {
        "sources": {
            lang.name: {"suffixes": lang.suffixes, "roots": lang.roots} for lang in languages
        },
        "per_language": {
            lang: {
                "files": count[lang],
                "bytes": size[lang],
                "held_out_files": held[lang],
                "held_out_bytes": held_bytes[lang],
                "byte_cap": next(x.max_bytes for x in languages if x.name == lang),
            }
            for lang in sorted(count)
        },
        "held_out_rule": "file held out iff int(sha1(file bytes)[:8], 16) % "
        f"{source_files.HELD_OUT_MODULUS} == 0 (files deduplicated by content first)",
        "filters": f"files <= {source_files.MAX_FILE_BYTES} bytes, no NUL, no line longer than "
        f"{source_files.MAX_LINE_BYTES} bytes; directories named test/tests skipped; files sampled "
        "in md5(path) order until the language's byte cap",
        "collect_seconds": seconds,
    }


if __name__ == "__main__":
    main()
