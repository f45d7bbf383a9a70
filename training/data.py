"""Training data for the local FIM model: the machine's source files, FIM-transformed.

Which files, and which are held out, is ``backtest.source_files``'s rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backtest.source_files import SourceFile
from serving.local.tokenizer import (
    EOT_ID,
    FILE_SEP_ID,
    FIM_MIDDLE_ID,
    FIM_PREFIX_ID,
    FIM_SUFFIX_ID,
    PAD_ID,
    Tokenizer,
)

NEWLINE = 10


def corpus_bytes(files: list[SourceFile]) -> bytes:
    """The files' bytes, each followed by a NUL (no kept file has one): the file separator."""
    return b"".join(f.data + b"\0" for f in files)


def encode_window(tok: Tokenizer, data: bytes) -> list[int]:
    """Ids of a slice of a corpus: text pieces encoded, each NUL becoming ``<file_sep>``."""
    ids: list[int] = []
    for i, part in enumerate(data.split(b"\0")):
        if i:
            ids.append(FILE_SEP_ID)
        ids.extend(tok.encode_bytes(part))
    return ids


def fim_span(window: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A middle span [start, end) of ``window``: whole lines, rest of a line, or random bytes.

    The first two end at a line end with the newline left to the suffix, the shape of the
    masked-line evaluation and of a completion the gateway asks for at the end of a line, so the
    model learns to emit ``<|endoftext|>`` there.
    """
    n = len(window)
    newlines = np.flatnonzero(window == NEWLINE)
    mode = rng.random()
    if mode < 0.5 and len(newlines) >= 2:
        # One to three whole lines, from a line start to the newline ending the last one.
        i = int(rng.integers(0, len(newlines) - 1))
        k = int(rng.integers(1, 4))
        return int(newlines[i]) + 1, int(newlines[min(i + k, len(newlines) - 1)])
    if mode < 0.8 and len(newlines) >= 1:
        # From a cursor inside a line to the end of that line (a typical editor completion).
        end = int(newlines[int(rng.integers(0, len(newlines)))])
        line_start = int(newlines[newlines < end][-1]) + 1 if (newlines < end).any() else 0
        return int(rng.integers(line_start, end + 1)), end
    a, b = sorted(int(x) for x in rng.integers(0, n + 1, size=2))
    return a, b


@dataclasses.dataclass(slots=True)
class Sampler:
    """Training rows of ``context + 1`` ids cut from a corpus (see ``corpus_bytes``).

    A row is a left-to-right window or, with probability ``fim_rate``, a PSM FIM sample
    ``<fim_prefix>pre<fim_suffix>suf<fim_middle>mid<|endoftext|>``. The span is chosen on bytes
    and prefix, suffix and middle are encoded separately, as the engine encodes a rendered
    template; prefix and suffix are cut to fit and a short row is padded with ``PAD_ID``.
    """

    corpus: bytes
    tok: Tokenizer
    context: int
    fim_rate: float
    bytes_per_token: float = 1.0

    def batch(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """``batch`` rows as int64 ids."""
        return np.stack([self.row(rng) for _ in range(batch)])

    def row(self, rng: np.random.Generator) -> np.ndarray:
        """One row."""
        length = self.context + 1
        width = int((self.context - 3) * self.bytes_per_token)
        offset = int(rng.integers(0, len(self.corpus) - width))
        window = self.corpus[offset : offset + width]
        if rng.random() >= self.fim_rate:
            ids = encode_window(self.tok, window)[:length]
        else:
            start, end = fim_span(np.frombuffer(window, dtype=np.uint8), rng)
            middle = encode_window(self.tok, window[start:end])
            prefix = encode_window(self.tok, window[:start])
            suffix = encode_window(self.tok, window[end:])
            rest = max(0, length - 4 - len(middle))
            keep_suffix = min(len(suffix), max(rest // 3, rest - len(prefix)))
            keep_prefix = min(len(prefix), rest - keep_suffix)
            ids = [
                FIM_PREFIX_ID,
                *prefix[len(prefix) - keep_prefix :],
                FIM_SUFFIX_ID,
                *suffix[:keep_suffix],
                FIM_MIDDLE_ID,
                *middle,
                EOT_ID,
            ][:length]
        return np.array(ids + [PAD_ID] * (length - len(ids)), dtype=np.int64)
