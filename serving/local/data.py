"""Training data for the local FIM model: source files already on the machine, FIM-transformed.

Files are read from the Python standard library and installed packages, C headers and installed
JavaScript packages. Held-out rule: a file (deduplicated by content) is held out when the first
8 hex digits of the SHA-1 of its bytes, as an integer, are divisible by ``HELD_OUT_MODULUS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from serving.local.tokenizer import (
    EOT_ID,
    FILE_SEP_ID,
    FIM_MIDDLE_ID,
    FIM_PREFIX_ID,
    FIM_SUFFIX_ID,
    PAD_ID,
    Tokenizer,
)

HELD_OUT_MODULUS = 50  # 2% of files
MAX_FILE_BYTES = 256_000  # larger files are mostly generated tables
MAX_LINE_BYTES = 400  # a file with a longer line is minified or generated
NEWLINE = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Language:
    """Where one language's files are looked for, and how many bytes to keep at most."""

    name: str
    suffixes: tuple[str, ...]
    roots: tuple[str, ...]
    max_bytes: int


def default_languages() -> list[Language]:
    """The sources the training script reads (those present on this machine)."""
    paths = sysconfig.get_paths()
    # Packages installed in the base interpreter as well as in the running virtualenv.
    base = {"base": sys.base_prefix, "platbase": sys.base_prefix}
    base_site = sysconfig.get_paths(vars=base)["purelib"]
    python_roots = tuple(dict.fromkeys((paths["stdlib"], paths["purelib"], base_site)))
    return [
        Language("python", (".py",), python_roots, 48_000_000),
        Language("c", (".h", ".c"), ("/usr/include",), 12_000_000),
        Language("javascript", (".js", ".mjs"), ("/usr/lib/node_modules",), 6_000_000),
    ]


@dataclasses.dataclass(slots=True)
class SourceFile:
    """One deduplicated file."""

    path: str
    language: str
    data: bytes
    held_out: bool


def _digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def is_held_out(data: bytes) -> bool:
    """The held-out rule (see the module docstring)."""
    return int(_digest(data)[:8], 16) % HELD_OUT_MODULUS == 0


def _candidates(language: Language) -> list[str]:
    found: list[str] = []
    for root in language.roots:
        if not root or not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in {"__pycache__", "test", "tests"})
            found.extend(
                os.path.join(dirpath, f) for f in filenames if f.endswith(language.suffixes)
            )
    # A deterministic shuffle, so that the byte cap samples every package, not the first ones.
    return sorted(found, key=lambda p: hashlib.md5(p.encode(), usedforsecurity=False).digest())


def usable(data: bytes) -> bool:
    """Not empty, no NUL byte, no line longer than ``MAX_LINE_BYTES`` (minified or generated)."""
    if not data.strip() or b"\0" in data:
        return False
    return max(len(line) for line in data.split(b"\n")) <= MAX_LINE_BYTES


def collect(languages: list[Language]) -> Iterator[SourceFile]:
    """Readable, deduplicated source files, up to each language's byte cap."""
    seen: set[str] = set()
    for language in languages:
        total = 0
        for path in _candidates(language):
            if total >= language.max_bytes:
                break
            try:
                if os.path.getsize(path) > MAX_FILE_BYTES:
                    continue
                data = Path(path).read_bytes()
            except OSError:
                continue
            digest = _digest(data)
            if digest in seen or not usable(data):
                continue
            seen.add(digest)
            total += len(data)
            yield SourceFile(path, language.name, data, is_held_out(data))


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
