"""Evaluation of the local FIM model on held-out files: bits per byte and masked-line infill.

Shared by base-model training (``training.train``) and LoRA training (``training.train_lora``),
so both report the same figures on the same held-out split.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backtest import source_files
from backtest.metrics import edit_similarity
from serving.local.lora import Deltas
from serving.local.model import FimTransformer, KVCache
from serving.local.tokenizer import (
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    StreamDecoder,
    Tokenizer,
    is_special,
)
from training import data as data_mod


@dataclasses.dataclass(frozen=True, slots=True)
class EvalConfig:
    """How the held-out files are scored."""

    bpb_windows: int = 256
    masked_lines: int = 300
    prefix_bytes: int = 320
    suffix_bytes: int = 120
    max_new_tokens: int = 120
    seed: int = 1234


@torch.no_grad()
def bits_per_byte(
    model: FimTransformer,
    tok: Tokenizer,
    files: list[source_files.SourceFile],
    ecfg: EvalConfig,
    bytes_per_token: float,
    lora: Deltas | None = None,
) -> dict[str, float]:
    """Left-to-right bits per byte on windows of held-out files, per language and overall.

    The summed cross-entropy of the text tokens of a window (file separators not scored) over
    the bytes those tokens stand for, so that tokenizers compare.
    """
    rng = np.random.default_rng(ecfg.seed)
    by_lang: dict[str, float] = {}
    per_lang = max(1, ecfg.bpb_windows // max(1, len({f.language for f in files})))
    byte_len = torch.tensor([len(tok.token_bytes(i)) for i in range(model.config.vocab_size)])
    for language in sorted({f.language for f in files}):
        corpus = data_mod.corpus_bytes([f for f in files if f.language == language])
        sampler = data_mod.Sampler(
            corpus, tok, model.config.context, 0.0, bytes_per_token=bytes_per_token
        )
        if len(corpus) <= model.config.context * bytes_per_token + 2:
            continue
        nats = scored_bytes = 0.0
        for _ in range(per_lang // 8):
            rows = torch.from_numpy(sampler.batch(rng, 8))
            logits = model(rows[:, :-1], lora).float()
            targets = rows[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            text = byte_len[targets] > 0
            nats += float(nll[text].sum())
            scored_bytes += float(byte_len[targets][text].sum())
        by_lang[language] = nats / scored_bytes / math.log(2)
    by_lang["all"] = float(np.mean(list(by_lang.values())))
    return by_lang


@torch.no_grad()
def greedy_infill(
    model: FimTransformer,
    tok: Tokenizer,
    prefix: str,
    suffix: str,
    *,
    max_new_tokens: int,
    lora: Deltas | None = None,
) -> str:
    """Greedy middle for (prefix, suffix), stopping at a newline or a sentinel (single-line)."""
    ids = torch.tensor(tok.encode(f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"))
    ids = ids[-(model.config.context - 32) :]  # room for a line in a short context
    cache = KVCache(model.config, 1)
    logits = model.prefill(ids, cache, 0, lora)
    decoder = StreamDecoder(tok)
    text = ""
    position = len(ids)
    for _ in range(max_new_tokens):
        token = int(logits.argmax())
        if is_special(token) or position >= model.config.context:
            break
        text += decoder.push(token)
        if "\n" in text:
            return text[: text.index("\n")]
        logits = model.decode(torch.tensor([token]), cache, torch.tensor([position]), lora)[0]
        position += 1
    return text + decoder.flush()


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


@torch.no_grad()
def masked_line(
    model: FimTransformer,
    tok: Tokenizer,
    files: list[source_files.SourceFile],
    ecfg: EvalConfig,
    lora: Deltas | None = None,
) -> dict[str, Any]:
    """Infill one whole non-blank line of a held-out file from its prefix and suffix (greedy)."""
    rng = np.random.default_rng(ecfg.seed)
    candidates: list[tuple[source_files.SourceFile, list[str], int]] = []
    for f in files:
        text = f.data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        if nonblank:
            candidates.append((f, lines, int(rng.choice(nonblank))))
    # Several lines per file when there are fewer files than wanted samples.
    picks = [candidates[int(i)] for i in rng.integers(0, len(candidates), ecfg.masked_lines)]
    rows: list[dict[str, Any]] = []
    for f, lines, _ in picks:
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        k = int(rng.choice(nonblank))
        prefix = "\n".join(lines[:k]) + ("\n" if k else "")
        suffix = "\n" + "\n".join(lines[k + 1 :])
        prefix = prefix.encode()[-ecfg.prefix_bytes :].decode(errors="ignore")
        suffix = suffix.encode()[: ecfg.suffix_bytes].decode(errors="ignore")
        prediction = greedy_infill(
            model, tok, prefix, suffix, max_new_tokens=ecfg.max_new_tokens, lora=lora
        )
        target = lines[k]
        previous = next((lines[j] for j in range(k - 1, -1, -1) if lines[j].strip()), "")
        row: dict[str, Any] = {
            "language": f.language,
            "exact": prediction == target,
            "exact_stripped": prediction.strip() == target.strip(),
            "edit_similarity": edit_similarity(prediction, target),
            "baseline_exact": previous == target,
        }
        if f.language == "python":
            original = "\n".join(lines)
            if _parses(original):
                row["parses"] = _parses("\n".join([*lines[:k], prediction, *lines[k + 1 :]]))
                # What an empty completion scores: the parse rate is only meaningful against it.
                row["parses_empty"] = _parses("\n".join([*lines[:k], "", *lines[k + 1 :]]))
        rows.append(row)
    return _summarize(rows)


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(subset: list[dict[str, Any]]) -> dict[str, Any]:
        parsed = [r["parses"] for r in subset if "parses" in r]
        parsed_empty = [r["parses_empty"] for r in subset if "parses_empty" in r]
        return {
            "n": len(subset),
            "exact_match": float(np.mean([r["exact"] for r in subset])),
            "exact_match_whitespace_stripped": float(
                np.mean([r["exact_stripped"] for r in subset])
            ),
            "edit_similarity": float(np.mean([r["edit_similarity"] for r in subset])),
            "baseline_repeat_previous_line_exact_match": float(
                np.mean([r["baseline_exact"] for r in subset])
            ),
            **(
                {
                    "python_file_still_parses": float(np.mean(parsed)),
                    "baseline_empty_completion_parses": float(np.mean(parsed_empty)),
                    "n_parse_checked": len(parsed),
                }
                if parsed
                else {}
            ),
        }

    result: dict[str, Any] = {"all": stats(rows)}
    for language in sorted({r["language"] for r in rows}):
        result[language] = stats([r for r in rows if r["language"] == language])
    return result
