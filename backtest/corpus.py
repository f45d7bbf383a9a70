"""The files a backtest masks: the local model's held-out split, or any directory."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from pathlib import Path

from backtest import source_files as data
from core.languages import language_from_path

# Directories that hold no source people wrote.
SKIPPED_DIRECTORIES = frozenset({".git", ".hg", ".venv", "node_modules", "__pycache__"})


@dataclasses.dataclass(frozen=True, slots=True)
class CorpusFile:
    """One source file: where it is, its language (as the gateway names it) and its text."""

    path: str
    language: str
    text: str


def _decoded(raw: bytes) -> str | None:
    if len(raw) > data.MAX_FILE_BYTES or not data.usable(raw):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _wanted(language: str, languages: Collection[str] | None) -> bool:
    return language != "unknown" and (not languages or language in languages)


def held_out_corpus(languages: Collection[str] | None = None) -> list[CorpusFile]:
    """The files the local model's training held out (``backtest.source_files``'s rule)."""
    files: list[CorpusFile] = []
    for source in data.collect(data.default_languages()):
        if not source.held_out or not _wanted(source.language, languages):
            continue
        text = _decoded(source.data)
        if text is not None:
            files.append(CorpusFile(source.path, source.language, text))
    return sorted(files, key=lambda f: f.path)


def directory_corpus(root: Path, languages: Collection[str] | None = None) -> list[CorpusFile]:
    """Every readable source file under ``root`` whose language the extension tells.

    Files are filtered as the training data is (size, NUL bytes, overlong lines) and must be
    UTF-8. Paths are relative to ``root``, so results do not depend on where it lies.
    """
    if not root.is_dir():
        raise NotADirectoryError(f"corpus {root} is not a directory")
    files: list[CorpusFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRECTORIES)
        for name in sorted(filenames):
            language = language_from_path(name)
            if not _wanted(language, languages):
                continue
            path = Path(dirpath) / name
            try:
                text = _decoded(path.read_bytes())
            except OSError:
                continue
            if text is not None:
                files.append(CorpusFile(path.relative_to(root).as_posix(), language, text))
    return files
