"""The event spool's files: where a collector's events wait, slots and their locks, segments.

A slot (``spool-<hex>/``) is one gateway process's: it holds the ``lock`` file that process
flocks, its ``cursor`` and its segments ``<seq>.jsonl``. Locks are ``flock``s, so they go with
the process: a crashed gateway's slot is free for the next one to claim.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
_SEGMENT_NAME = re.compile(r"^(\d{16})\.jsonl$")
# Each gateway process holds one slot (a directory) below the collector's spool directory.
SLOT_PREFIX = "spool-"
_SLOT_NAME = re.compile(r"^spool-[0-9a-f]{12}$")
LOCK_NAME = "lock"
CURSOR_NAME = "cursor"
READ_CHUNK = 1024 * 1024


def spool_directory(root: Path, collector_url: str) -> Path:
    """Where the events bound for ``collector_url`` wait, under ``root``.

    One directory per collector: events spooled for one collector are never replayed to another
    (a gateway pointed from staging to production must not send it staging's backlog).
    """
    url = collector_url.rstrip("/")
    netloc = urlsplit(url).netloc or "collector"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", netloc).strip("-")[:48]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return root / f"{slug}-{digest}"


def is_slot(path: Path) -> bool:
    """Whether ``path`` is named as a slot is."""
    return bool(_SLOT_NAME.match(path.name))


def segment_name(seq: int) -> str:
    """The file name of segment ``seq`` (names sort as numbers do)."""
    return f"{seq:016d}{SEGMENT_SUFFIX}"


def segments(slot: Path) -> list[int]:
    """The segments' numbers in ``slot``, oldest first."""
    return sorted(int(m.group(1)) for name in os.listdir(slot) if (m := _SEGMENT_NAME.match(name)))


def claim(slot: Path) -> int | None:
    """The locked descriptor of ``slot``'s lock file, or None when another process holds it."""
    path = slot / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        return None  # the slot was removed meanwhile, or is no slot
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The owner may have removed the slot on closing after we opened its lock file: then
        # the lock we hold is on a file no longer there.
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_slot(slot: Path) -> None:
    """Remove an emptied slot, its lock file last (while the caller still holds it)."""
    for name in (CURSOR_NAME, LOCK_NAME):
        with contextlib.suppress(FileNotFoundError):
            (slot / name).unlink()
    with contextlib.suppress(OSError):
        slot.rmdir()


def fsync_directory(directory: Path) -> None:
    """Make the names of files made or removed in ``directory`` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: Path) -> int:
    """Cut a line torn by a crash off the end of ``path``; its size after."""
    size = path.stat().st_size
    if not size:
        return 0
    with path.open("r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        # Back to the last complete line.
        end = size
        while end > 0:
            start = max(0, end - READ_CHUNK)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        f.truncate(end)
    log.warning("event spool: cut %d bytes of a torn last line off %s", size - end, path.name)
    return end


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a write to a file may be short: disk full, a signal)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]
