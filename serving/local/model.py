"""A small decoder-only transformer with a per-slot KV cache for batched incremental decoding."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from serving.local.tokenizer import TOKENIZER_FILE, VOCAB_SIZE, Tokenizer

if TYPE_CHECKING:
    from serving.local.lora import Deltas

WEIGHTS_FILE = "model.pt"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of the network."""

    vocab_size: int = VOCAB_SIZE
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    context: int = 512
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def _rope_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    half = config.head_dim // 2
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(half, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(config.context, dtype=torch.float32), inv_freq)
    return torch.cos(angles), torch.sin(angles)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, T, Dh]; cos/sin: [B or 1, 1, T, Dh/2] (rotate-half convention).
    x1, x2 = x.chunk(2, dim=-1)
    rotated: torch.Tensor = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated


class KVCache:
    """Keys and values of ``slots`` independent sequences, each up to ``context`` positions.

    ``decode`` steps the sequences in slots 0..B-1, so a caller keeps its running sequences
    packed at the front (``move`` fills the hole a finished one leaves).
    """

    def __init__(self, config: ModelConfig, slots: int, dtype: torch.dtype = torch.float32) -> None:
        shape = (slots, config.n_heads, config.context, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.slots = slots

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``source`` into slot ``target``."""
        for cache in (*self.keys, *self.values):
            cache[target, :, :length] = cache[source, :, :length]


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.config = config
        self.layer = layer
        self.norm1 = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.up = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)

    def _linear(
        self, layer: nn.Linear, target: str, x: torch.Tensor, lora: Deltas | None
    ) -> torch.Tensor:
        out: torch.Tensor = layer(x)
        if lora is not None and (delta := lora.delta(self.layer, target, x)) is not None:
            out = out + delta
        return out

    def _qkv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lora: Deltas | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        h, dh = self.config.n_heads, self.config.head_dim
        qkv = self._linear(self.qkv, "qkv", self.norm1(x), lora)
        q, k, v = qkv.view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
        return _apply_rope(q, cos, sin), _apply_rope(k, cos, sin), v

    def _finish(self, x: torch.Tensor, attn: torch.Tensor, lora: Deltas | None) -> torch.Tensor:
        b, _, t, _ = attn.shape
        merged = attn.transpose(1, 2).reshape(b, t, self.config.d_model)
        x = x + self._linear(self.proj, "proj", merged, lora)
        out: torch.Tensor = x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))
        return out

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lora: Deltas | None = None
    ) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin, lora)
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, is_causal=True), lora)

    def prefill(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        slot: int,
        lora: Deltas | None = None,
    ) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin, lora)
        t = x.shape[1]
        cache_k[slot, :, :t] = k[0]
        cache_v[slot, :, :t] = v[0]
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, is_causal=True), lora)

    def decode(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        lora: Deltas | None = None,
    ) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin, lora)
        rows = torch.arange(x.shape[0])
        cache_k[rows, :, positions] = k[:, :, 0]
        cache_v[rows, :, positions] = v[:, :, 0]
        # Slots 0..B-1 as a view: no copy of the cache on each step.
        length = mask.shape[-1]
        keys = cache_k[: x.shape[0], :, :length]
        values = cache_v[: x.shape[0], :, :length]
        attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self._finish(x, attn, lora)


class FimTransformer(nn.Module):
    """Pre-norm transformer with rotary positions and a tied output head."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        cos, sin = _rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for block in self.blocks:
            assert isinstance(block, Block)
            # GPT-2's scaling of residual projections by depth.
            std = 0.02 / math.sqrt(2 * config.n_layers)
            nn.init.normal_(block.proj.weight, std=std)
            nn.init.normal_(block.down.weight, std=std)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _blocks(self) -> list[Block]:
        return [b for b in self.blocks if isinstance(b, Block)]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.embed.weight)

    def forward(self, ids: torch.Tensor, lora: Deltas | None = None) -> torch.Tensor:
        """Logits [B, T, V] of a batch of full sequences (causal, no cache)."""
        t = ids.shape[1]
        cos = self.rope_cos[None, None, :t]
        sin = self.rope_sin[None, None, :t]
        x = self.embed(ids)
        for block in self._blocks():
            x = block(x, cos, sin, lora)
        return self._logits(x)

    def prefill(
        self, ids: torch.Tensor, cache: KVCache, slot: int, lora: Deltas | None = None
    ) -> torch.Tensor:
        """Run one sequence ``ids`` [T] into cache ``slot``; logits of its last position [V]."""
        t = ids.shape[0]
        cos = self.rope_cos[None, None, :t]
        sin = self.rope_sin[None, None, :t]
        x = self.embed(ids[None])
        for i, block in enumerate(self._blocks()):
            x = block.prefill(x, cos, sin, cache.keys[i], cache.values[i], slot, lora)
        return self._logits(x[0, -1])

    def decode(
        self,
        ids: torch.Tensor,
        cache: KVCache,
        positions: torch.Tensor,
        lora: Deltas | None = None,
    ) -> torch.Tensor:
        """One step for the sequences in cache slots 0..B-1: token ``ids`` [B] at ``positions``."""
        cos = self.rope_cos[positions][:, None, None]
        sin = self.rope_sin[positions][:, None, None]
        length = int(positions.max()) + 1
        mask = torch.arange(length)[None, :] <= positions[:, None]
        mask = mask[:, None, None, :]
        x = self.embed(ids[:, None])
        for i, block in enumerate(self._blocks()):
            x = block.decode(x, cos, sin, cache.keys[i], cache.values[i], positions, mask, lora)
        return self._logits(x[:, 0])


def save_checkpoint(
    model: FimTransformer, directory: Path, *, name: str, tok: Tokenizer | None = None
) -> Path:
    """Write the weights (fp16) and the config to ``directory``/model.pt, merges beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    if tok is not None and tok.merges:
        (directory / TOKENIZER_FILE).write_text(tok.to_json())
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = directory / WEIGHTS_FILE
    torch.save(
        {"name": name, "config": dataclasses.asdict(model.config), "state_dict": state}, path
    )
    return path


def load_checkpoint(path: Path) -> tuple[FimTransformer, str]:
    """The model (fp32, eval mode) and its name from a checkpoint file or its directory."""
    if path.is_dir():
        path = path / WEIGHTS_FILE
    blob: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    config = ModelConfig(**blob["config"])
    model = FimTransformer(config)
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    model.eval()
    return model, str(blob["name"])


def config_json(config: ModelConfig) -> str:
    """The config as JSON (for training.json)."""
    return json.dumps(dataclasses.asdict(config))
