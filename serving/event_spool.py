"""A bounded on-disk queue of the events the gateway has not delivered yet.

Layout (``serving.spool_files``): one directory per collector; below it one slot per gateway
process (``spool-<hex>/``), holding ``lock`` (flocked by the process that owns the slot),
``cursor`` (how far delivery got) and segment files ``<seq>.jsonl``, each line
``<unix time spooled>\\t<event as JSON>\\n``. Lines are only ever appended; a segment is rotated
at ``segment_bytes`` and deleted once all of it is delivered. A starting gateway claims a slot
no process holds (a stopped gateway's: its events are replayed) or makes one, and takes over the
segments of any other unclaimed slot, so gateways sharing a data directory never share a file
and a restart, or fewer gateways than before, leaves no event behind.

Bound: ``max_bytes`` on the segments' total size (what a slot holds on disk). An event that
does not fit is not written, and the caller counts it dropped: the spool keeps its oldest events
(tail drop), which are no less worth analysing than the newest. Once one is dropped, so is every
later one until delivered segments free room: a smaller event slipping into the last bytes would
leave a hole in the middle of what is kept.

Durability (the fsync policy): an append reaches the page cache at once, so a crash of the
process loses nothing appended. The active segment is fsynced at most ``fsync_interval_s`` after
an append (0: after every append), on rotation and on close, so a power loss or kernel crash
loses at most that long of appends. The cursor is written after every delivery but never
fsynced: a stale cursor only sends delivered events again, and the collector stores each
``event_id`` once.

Not thread-safe: the owner calls every method from one thread (the event logger's I/O thread),
never from the event loop, which must not wait on the disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from serving.spool_files import (
    CURSOR_NAME,
    READ_CHUNK,
    SLOT_PREFIX,
    claim,
    fsync_directory,
    is_slot,
    remove_slot,
    repair,
    segment_name,
    segments,
    write_all,
)

log = logging.getLogger(__name__)

# Segments: small enough that the delivered part of the oldest one (counted in the bound until
# the segment goes) is at most 1/64 of the bound, big enough that a full spool of 1 GiB is only
# 64 files.
MAX_SEGMENT_BYTES = 16 * 1024 * 1024
MIN_SEGMENT_BYTES = 4096
# What a spool holds by default: 1 GiB, about 1.5 million completion_served events of ~700
# bytes: a 10-minute collector outage at 2,500 events/s (the gateway's measured ceiling with a
# 20 ms backend is ~1,340 completions/s), or an hour at 400/s.
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024


def default_segment_bytes(max_bytes: int) -> int:
    """The segment size for a spool of ``max_bytes``: a 64th of it, within the limits."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 64))


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    """What became of the events given to ``append``."""

    written: int = 0
    # Not written: the spool was full, or the disk failed the write.
    dropped: int = 0
    # Not JSON (NaN, a non-JSON type): no collector could accept them.
    invalid: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Consecutive undelivered events of one segment, as the JSON the collector takes."""

    segment: int
    start: int
    end: int
    events: list[bytes]
    # Lines the batch covers, unreadable ones included (they are gone once acknowledged).
    lines: int
    corrupt: int
    spooled_at: float | None


class EventSpool:
    """Undelivered events on disk: append-only segments of JSON lines, bounded in bytes."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        segment_bytes: int | None = None,
        fsync_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_SEGMENT_BYTES}")
        self.root = root
        # The slot this process owns below root, once open.
        self.directory = root
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes or default_segment_bytes(max_bytes)
        self._fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._lock_fd: int | None = None
        # seq -> size in bytes, in seq order (dicts keep insertion order; seqs only grow).
        self._sizes: dict[int, int] = {}
        self._active: int | None = None
        self._active_fd: int | None = None
        self._cursor = (0, 0)
        self._dirty = False
        self._synced_at = 0.0
        # Read by other threads (the metrics): plain ints and floats, each updated in one step.
        self.bytes = 0
        self.events = 0
        self.oldest_spooled_at: float | None = None
        # Set when an event did not fit; cleared when delivered segments are deleted.
        self._full = False

    # --- opening and closing --------------------------------------------------------------------

    def open(self) -> None:
        """Claim a slot, take over unclaimed ones, and find what is still to deliver."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = [
            (slot, fd)
            for slot in sorted(self.root.iterdir())
            if is_slot(slot) and (fd := claim(slot)) is not None
        ]
        # Several gateways may share one data directory: each holds a slot of its own; the
        # slots of stopped ones are taken over by whichever starts next.
        self.directory, self._lock_fd = free.pop(0) if free else self._new_slot()
        try:
            self._load()
            while free:
                slot, fd = free.pop(0)
                try:
                    self._adopt(slot)
                    remove_slot(slot)
                finally:
                    os.close(fd)
        except BaseException:
            for _, fd in free:
                os.close(fd)
            self._unlock()
            raise
        self.bytes = sum(self._sizes.values())
        self.events = sum(self._count_lines(seq) for seq in self._sizes)
        self._drop_consumed()
        self.oldest_spooled_at = self._peek_time()

    def _new_slot(self) -> tuple[Path, int]:
        while True:
            slot = self.root / f"{SLOT_PREFIX}{secrets.token_hex(6)}"
            slot.mkdir()
            # Another gateway starting now may claim the new slot first: then make another.
            fd = claim(slot)
            if fd is not None:
                return slot, fd

    def _load(self) -> None:
        for seq in segments(self.directory):
            size = repair(self._path(seq))
            if size:
                self._sizes[seq] = size
            else:
                self._path(seq).unlink()
        self._cursor = self._read_cursor()
        for seq in [s for s in self._sizes if s < self._cursor[0]]:
            self._delete(seq)

    def _adopt(self, slot: Path) -> None:
        """Move the undelivered segments of ``slot`` (a stopped gateway's) behind ours."""
        adopted = 0
        for seq in segments(slot):
            size = repair(slot / segment_name(seq))
            if not size:
                continue
            mine = max(self._sizes, default=self._cursor[0] - 1) + 1
            # Its cursor is not carried over: its first segment is sent again from the start,
            # and the collector recognises the events it has.
            os.rename(slot / segment_name(seq), self._path(mine))
            self._sizes[mine] = size
            adopted += size
        if adopted:
            fsync_directory(self.directory)
            log.info("event spool: took over %d bytes of undelivered events from %s", adopted, slot)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _read_cursor(self) -> tuple[int, int]:
        first = next(iter(self._sizes), 0)
        try:
            seq_text, offset_text = (self.directory / CURSOR_NAME).read_text().split()
            seq, offset = int(seq_text), int(offset_text)
        except FileNotFoundError:
            return (first, 0)
        except ValueError:
            log.warning("event spool: unreadable cursor; delivering from the oldest segment")
            return (first, 0)
        if seq not in self._sizes:
            # Its segment was delivered and deleted: every later segment is undelivered.
            return (seq, 0) if seq > first else (first, 0)
        if offset > self._sizes[seq] or (offset and not self._ends_line(seq, offset)):
            log.warning("event spool: cursor past a line's end; delivering its segment again")
            return (seq, 0)
        return (seq, offset)

    def _ends_line(self, seq: int, offset: int) -> bool:
        with self._path(seq).open("rb") as f:
            f.seek(offset - 1)
            return f.read(1) == b"\n"

    def _count_lines(self, seq: int) -> int:
        start = self._cursor[1] if seq == self._cursor[0] else 0
        count = 0
        with self._path(seq).open("rb") as f:
            f.seek(start)
            while chunk := f.read(READ_CHUNK):
                count += chunk.count(b"\n")
        return count

    def close(self) -> None:
        """Sync and let go of the slot; an empty spool leaves no files behind."""
        if self._active_fd is not None:
            self._sync()
            os.close(self._active_fd)
            self._active_fd = None
            self._active = None
        if self._lock_fd is None:
            return
        if self.events == 0:
            for seq in list(self._sizes):
                self._delete(seq)
            # Still holding the lock: a gateway claiming the slot now sees it go (see claim).
            remove_slot(self.directory)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # when no other gateway's slot is left in it
        self._unlock()

    # --- appending ------------------------------------------------------------------------------

    def append(self, events: Iterable[Mapping[str, Any]]) -> AppendResult:
        """Write ``events`` (in order) while they fit in the bound; what became of them."""
        now = self._clock()
        prefix = b"%.3f\t" % now
        lines: list[bytes] = []
        invalid = dropped = 0
        room = self.max_bytes - self.bytes
        for event in events:
            if dropped or self._full:
                dropped += 1
                continue
            try:
                body = json.dumps(event, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                invalid += 1
                log.error("event spool: an event is not JSON, not sent: %s", exc)
                continue
            line = prefix + body.encode() + b"\n"
            if len(line) > room:
                dropped += 1
                self._full = True
                continue
            room -= len(line)
            lines.append(line)
        written = self._write(lines, now)
        return AppendResult(
            written=written, dropped=dropped + len(lines) - written, invalid=invalid
        )

    def _write(self, lines: list[bytes], now: float) -> int:
        written = 0
        while written < len(lines):
            try:
                if self._active is None or self._sizes[self._active] >= self._segment_bytes:
                    self._rotate()
            except OSError as exc:
                log.error("event spool: starting a segment failed: %s", exc)
                return written
            assert self._active is not None and self._active_fd is not None
            # Fill the active segment up to its size (one line at least), then rotate.
            room = self._segment_bytes - self._sizes[self._active]
            chunk: list[bytes] = []
            for line in lines[written:]:
                if chunk and len(line) > room:
                    break
                chunk.append(line)
                room -= len(line)
            data = b"".join(chunk)
            before = self._sizes[self._active]
            try:
                write_all(self._active_fd, data)
            except OSError as exc:
                # A short write (disk full) must not leave half a line for the next to follow.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._active_fd, before)
                log.error("event spool: writing %d event(s) failed: %s", len(lines) - written, exc)
                return written
            if not self.events:
                self.oldest_spooled_at = now
            self._sizes[self._active] = before + len(data)
            self.bytes += len(data)
            self.events += len(chunk)
            written += len(chunk)
            self._dirty = True
        if self._dirty and (
            self._fsync_interval_s <= 0 or now - self._synced_at >= self._fsync_interval_s
        ):
            self._sync()
        return written

    def _rotate(self) -> None:
        if self._active_fd is not None:
            self._sync()
            os.close(self._active_fd)
            self._active_fd = self._active = None
        seq = max(self._sizes, default=self._cursor[0] - 1) + 1
        seq = max(seq, self._cursor[0])
        self._active_fd = os.open(
            self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644
        )
        self._active = seq
        self._sizes[seq] = 0
        # The new file's name must survive a power loss as its contents do.
        fsync_directory(self.directory)
        self._drop_consumed()

    def sync(self) -> None:
        """Fsync the active segment if anything was appended since the last fsync."""
        if self._dirty:
            self._sync()

    def _sync(self) -> None:
        if self._active_fd is not None and self._dirty:
            try:
                os.fsync(self._active_fd)
            except OSError as exc:
                # The events are still in the page cache, and are still sent from there.
                log.error("event spool: fsync failed (%s); the last writes may not be durable", exc)
        self._dirty = False
        self._synced_at = self._clock()

    # --- reading and acknowledging --------------------------------------------------------------

    def read(self, max_events: int, max_bytes: int) -> SpoolBatch | None:
        """The next undelivered events of one segment (``max_events``, about ``max_bytes``)."""
        position = self._position()
        if position is None:
            return None
        seq, start = position
        events: list[bytes] = []
        lines = corrupt = size = 0
        spooled_at: float | None = None
        end = start
        with self._path(seq).open("rb") as f:
            f.seek(start)
            while lines < max_events and (size < max_bytes or not events):
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # the end of what was written
                end += len(line)
                lines += 1
                stamp, tab, body = line.rstrip(b"\n").partition(b"\t")
                try:
                    when = float(stamp)
                except ValueError:
                    when = None
                if not tab or when is None or not body:
                    corrupt += 1
                    continue
                if spooled_at is None:
                    spooled_at = when
                events.append(body)
                size += len(body) + 1
        if not lines:
            return None
        if corrupt:
            log.error("event spool: %d unreadable line(s) in segment %d, not sent", corrupt, seq)
        return SpoolBatch(
            segment=seq,
            start=start,
            end=end,
            events=events,
            lines=lines,
            corrupt=corrupt,
            spooled_at=spooled_at,
        )

    def ack(self, batch: SpoolBatch) -> None:
        """Forget ``batch``'s events (delivered, or never deliverable): they are not read again."""
        if self._cursor != (batch.segment, batch.start):
            raise ValueError("batches must be acknowledged in the order they were read")
        self._cursor = (batch.segment, batch.end)
        self.events -= batch.lines
        self._drop_consumed()
        self._write_cursor()
        self.oldest_spooled_at = self._peek_time() if self.events else None

    def _position(self) -> tuple[int, int] | None:
        seq, offset = self._cursor
        for candidate, size in self._sizes.items():
            if candidate < seq:
                continue
            start = offset if candidate == seq else 0
            if start < size:
                return candidate, start
        return None

    def _drop_consumed(self) -> None:
        """Delete the segments delivered in full (not the one being written)."""
        seq, offset = self._cursor
        for candidate in list(self._sizes):
            done = candidate < seq or (candidate == seq and offset >= self._sizes[candidate])
            if not done or candidate == self._active:
                break
            self._delete(candidate)
            if candidate == seq:
                self._cursor = (seq + 1, 0)

    def _delete(self, seq: int) -> None:
        size = self._sizes.pop(seq, 0)
        self.bytes -= size
        self._full = False
        try:
            self._path(seq).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("event spool: deleting delivered segment %d failed: %s", seq, exc)

    def _write_cursor(self) -> None:
        path = self.directory / CURSOR_NAME
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(f"{self._cursor[0]} {self._cursor[1]}\n")
            os.replace(temporary, path)
        except OSError as exc:
            # A stale cursor only sends delivered events again (the collector knows them).
            log.warning("event spool: writing the cursor failed: %s", exc)

    def _peek_time(self) -> float | None:
        position = self._position()
        if position is None:
            return None
        seq, start = position
        with self._path(seq).open("rb") as f:
            f.seek(start)
            stamp = f.read(32).partition(b"\t")[0]
        try:
            return float(stamp)
        except ValueError:
            return None

    def _path(self, seq: int) -> Path:
        return self.directory / segment_name(seq)
