"""Source files already on the machine, deduplicated, with the held-out rule.

The local model trains on these files and backtests mask the held-out ones, so both judge by one
rule. Files are read from the Python standard library and installed packages, C headers and
installed JavaScript packages. Held-out rule: a file (deduplicated by content) is held out when
the first 8 hex digits of the SHA-1 of its bytes, as an integer, are divisible by
``HELD_OUT_MODULUS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

HELD_OUT_MODULUS = 50  # 2% of files
MAX_FILE_BYTES = 256_000  # larger files are mostly generated tables
MAX_LINE_BYTES = 400  # a file with a longer line is minified or generated


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
