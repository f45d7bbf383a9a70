"""Low-rank adapters (LoRA) on the attention projections of the local model, served many at once.

An adapter adds ``(alpha / rank) · B·A·x`` to the output of a frozen projection (``qkv`` and/or
``proj`` of each block); A is [rank, d_in], B is [d_out, rank] and starts at zero, so a fresh
adapter leaves the base model unchanged. Adapters are saved apart from the base weights
(``adapter.pt`` + ``adapter.json``) with the SHA-256 of the base ``model.pt`` they were trained
on, and refuse to load on any other base.

Serving follows vLLM's multi-LoRA design: one base model in memory, the adapters stacked in an
``AdapterBank`` (row 0 is "no adapter", all zeros), and every row of a batch carries the index of
its adapter, so requests for different adapters (and for none) share one batch. Two ways of
applying the per-row deltas are implemented (``RowDeltas``): gathering each row's A and B and
using batched matrix products, or one product per distinct adapter over its rows; bench/lora.py
measures both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from serving.local.model import WEIGHTS_FILE, FimTransformer

ADAPTER_WEIGHTS = "adapter.pt"
ADAPTER_CONFIG = "adapter.json"
TARGETS: tuple[str, ...] = ("qkv", "proj")


class AdapterMismatch(ValueError):
    """The adapter was trained on a different base checkpoint (or another shape of model)."""


class Deltas(Protocol):
    """What a block adds to one projection's output for the rows of the current batch."""

    def delta(self, layer: int, target: str, x: torch.Tensor) -> torch.Tensor | None:
        """The low-rank term for ``x`` [B, T, d_in] (None: nothing to add)."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class LoraConfig:
    """Shape of an adapter."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def base_hash(checkpoint: Path) -> str:
    """SHA-256 of a base checkpoint's weights file (what an adapter is bound to)."""
    path = checkpoint / WEIGHTS_FILE if checkpoint.is_dir() else checkpoint
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _projection(model: FimTransformer, layer: int, target: str) -> nn.Linear:
    module = getattr(model.blocks[layer], target)
    assert isinstance(module, nn.Linear)
    return module


class LoraAdapter(nn.Module):
    """One adapter's trainable A and B for every targeted projection of every block."""

    def __init__(self, model: FimTransformer, config: LoraConfig) -> None:
        super().__init__()
        unknown = set(config.targets) - set(TARGETS)
        if unknown or config.rank < 1:
            raise ValueError(f"targets must be among {TARGETS} and rank >= 1, got {config}")
        self.config = config
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for layer in range(model.config.n_layers):
            for target in config.targets:
                proj = _projection(model, layer, target)
                key = f"{layer}_{target}"
                a = torch.empty(config.rank, proj.in_features)
                # As in the LoRA paper: A random, B zero, so training starts from the base model.
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                self.a[key] = nn.Parameter(a)
                self.b[key] = nn.Parameter(torch.zeros(proj.out_features, config.rank))

    def delta(self, layer: int, target: str, x: torch.Tensor) -> torch.Tensor | None:
        """Every row uses this adapter (training, evaluation, or a batch of one adapter)."""
        key = f"{layer}_{target}"
        if key not in self.a:
            return None
        low = x @ self.a[key].to(x.dtype).t()
        out: torch.Tensor = (low @ self.b[key].to(x.dtype).t()) * self.config.scale
        return out

    def size_bytes(self) -> int:
        """Bytes of the fp16 weights."""
        return sum(p.numel() * 2 for p in self.parameters())

    def save(self, directory: Path, *, name: str, base: str, record: dict[str, Any]) -> Path:
        """Write ``adapter.pt`` (fp16) and ``adapter.json`` (config, base hash and ``record``)."""
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{kind}.{key}": p.detach().to(torch.float16).contiguous()
            for kind, params in (("a", self.a), ("b", self.b))
            for key, p in params.items()
        }
        path = directory / ADAPTER_WEIGHTS
        torch.save(tensors, path)
        config = {
            "name": name,
            "rank": self.config.rank,
            "alpha": self.config.alpha,
            "target_modules": list(self.config.targets),
            "base_checkpoint_sha256": base,
            "weights": {
                "file": ADAPTER_WEIGHTS,
                "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "dtype": "float16",
            },
            **record,
        }
        (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return path


def load_adapter(directory: Path, model: FimTransformer, *, base: str) -> tuple[str, LoraAdapter]:
    """The adapter saved in ``directory`` and its name; ``AdapterMismatch`` on another base."""
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    if config["base_checkpoint_sha256"] != base:
        trained_on = str(config["base_checkpoint_sha256"])[:12]
        raise AdapterMismatch(
            f"adapter {config['name']!r} was trained on base {trained_on}, not on {base[:12]}"
        )
    adapter = LoraAdapter(
        model,
        LoraConfig(
            rank=int(config["rank"]),
            alpha=float(config["alpha"]),
            targets=tuple(config["target_modules"]),
        ),
    )
    tensors: dict[str, torch.Tensor] = torch.load(
        directory / ADAPTER_WEIGHTS, map_location="cpu", weights_only=True
    )
    try:
        for key, value in tensors.items():
            kind, name = key.split(".", 1)
            target = adapter.a if kind == "a" else adapter.b
            if target[name].shape != value.shape:
                raise AdapterMismatch(f"{key}: shape {tuple(value.shape)} does not fit the base")
            target[name].data.copy_(value.float())
    except KeyError as exc:
        raise AdapterMismatch(f"adapter weights do not fit the base model: {exc}") from exc
    adapter.eval()
    return str(config["name"]), adapter.requires_grad_(False)


def find_adapters(roots: list[Path]) -> list[Path]:
    """Adapter directories (those holding ``adapter.json``) directly under or at ``roots``."""
    found: list[Path] = []
    for root in roots:
        if (root / ADAPTER_CONFIG).is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if (p / ADAPTER_CONFIG).is_file()))
    return found


class AdapterBank:
    """Adapters stacked per projection: index 0 is the base model (zeros), ``i`` adapter i.

    Ranks differ between adapters; the stacks are zero-padded to the largest one (padding adds
    nothing), and the scale is folded into B.
    """

    def __init__(self, model: FimTransformer, adapters: dict[str, LoraAdapter]) -> None:
        self.names = list(adapters)
        self.index = {name: i + 1 for i, name in enumerate(self.names)}
        rank = max((a.config.rank for a in adapters.values()), default=1)
        self.a: dict[tuple[int, str], torch.Tensor] = {}
        self.b: dict[tuple[int, str], torch.Tensor] = {}
        for layer in range(model.config.n_layers):
            for target in TARGETS:
                proj = _projection(model, layer, target)
                a = torch.zeros(len(adapters) + 1, rank, proj.in_features)
                b = torch.zeros(len(adapters) + 1, proj.out_features, rank)
                used = False
                for i, adapter in enumerate(adapters.values(), start=1):
                    key = f"{layer}_{target}"
                    if key in adapter.a:
                        r = adapter.config.rank
                        a[i, :r] = adapter.a[key].detach()
                        b[i, :, :r] = adapter.b[key].detach() * adapter.config.scale
                        used = True
                if used:
                    self.a[layer, target] = a
                    self.b[layer, target] = b
        self.adapters = adapters

    def __len__(self) -> int:
        return len(self.names)

    def stacks(self, layer: int, target: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The stacked A [N+1, r, d_in] and scaled B [N+1, d_out, r] of one projection."""
        a = self.a.get((layer, target))
        return None if a is None else (a, self.b[layer, target])


@dataclasses.dataclass(frozen=True, slots=True)
class RowDeltas:
    """Per-row deltas of a mixed batch, by one of two methods.

    ``grouped=False``: gather each row's A and B from the stacks and use two batched matrix
    products (rows of the base model gather zeros). ``grouped=True``: one product per distinct
    adapter over the rows that use it.
    """

    bank: AdapterBank
    rows: torch.Tensor  # [B] adapter index of each row (0: none)
    grouped: bool = False

    def delta(self, layer: int, target: str, x: torch.Tensor) -> torch.Tensor | None:
        if (stacks := self.bank.stacks(layer, target)) is None:
            return None
        a, b = stacks
        if not self.grouped:
            low = torch.bmm(x, a[self.rows].transpose(1, 2))
            return torch.bmm(low, b[self.rows].transpose(1, 2))
        out = torch.zeros(*x.shape[:-1], b.shape[1], dtype=x.dtype)
        for index in torch.unique(self.rows).tolist():
            if index == 0:
                continue
            chosen = (self.rows == index).nonzero().squeeze(1)
            out[chosen] = (x[chosen] @ a[index].t()) @ b[index].t()
        return out
