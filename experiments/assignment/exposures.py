"""Exposures: the first time the gateway serves a user an arm of an experiment, recorded once.

``offer`` runs on the assignment path and never blocks: it checks an in-memory seen-set and
appends new exposures to a bounded queue (a full queue drops the exposure and counts it). A
background thread turns them into ``exposure`` events and writes them in batches, retrying with
backoff while the database is away.

The events take the collector's own path into the event store: validated by the collector's
schemas and time window (``collector.parsing.validate_events``) and written by its store
(``collector.store.EventStore``: COPY into staging, ``INSERT … ON CONFLICT DO NOTHING``). An
exposure the collector would reject is counted as rejected and logged, never stored.

Once per (experiment, user) holds across restarts and processes too: the event id is a UUIDv5
of ``"{experiment}:{user_id}"``, so a second write of the same exposure is a duplicate the store
skips. The seen-set (bounded, forgetting its oldest half) only saves those round trips.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib.metadata
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Engine

from collector.parsing import accepted_window, validate_events
from collector.store import EventStore
from core.db.connection import libpq_conninfo
from experiments.assignment.service import AssignmentRequest
from experiments.assignment.snapshot import ArmAssignment

log = logging.getLogger(__name__)

# Fixed forever: changing it would give every exposure a new id and record it again.
EXPOSURE_NAMESPACE = uuid.UUID("6f0d7a3e-2c1b-5e8f-9a4d-3b7c1e0f5a92")
SCHEMA_VERSION = 1
# What the exposure row says when the request did not carry a session or plugin version.
GATEWAY_SESSION = "gateway"
# Attempts at a batch once stopping, before its exposures are given up (and counted).
ATTEMPTS_WHEN_STOPPING = 3
MAX_BACKOFF_S = 5.0
CONNECT_TIMEOUT_S = 5
# The collector's default window for client times: exposures outside it are rejected as the
# collector would reject them.
MAX_EVENT_AGE = dt.timedelta(days=7)
MAX_CLOCK_SKEW = dt.timedelta(seconds=600)


def exposure_id(experiment: str, user_id: str) -> uuid.UUID:
    """The event id of a user's exposure to an experiment: the same in every process."""
    # Experiment keys are slugs without ':', so the name cannot be read two ways.
    return uuid.uuid5(EXPOSURE_NAMESPACE, f"{experiment}:{user_id}")


def codelift_version() -> str:
    """The installed CodeLift version, written as the plugin version of gateway exposures."""
    try:
        return importlib.metadata.version("codelift")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class RecorderCounts:
    """What the recorder has done so far."""

    queued: int
    dropped: int
    written: int
    failed: int
    errors: int
    rejected: int = 0


class _SeenSet:
    """The (experiment, user) names already queued; at most ``size``, forgetting the oldest half."""

    __slots__ = ("_half", "_new", "_old")

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self._new: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._new or name in self._old

    def add(self, name: str) -> None:
        if len(self._new) >= self._half:
            self._old, self._new = self._new, set()
        self._new.add(name)


class ExposureRecorder:
    """Records each user's first exposure to each experiment, off the request path."""

    def __init__(
        self,
        database: Engine | str,
        *,
        queue_size: int = 50_000,
        batch_size: int = 500,
        seen_size: int = 1_000_000,
        flush_interval_s: float = 0.5,
        max_event_age: dt.timedelta = MAX_EVENT_AGE,
        max_clock_skew: dt.timedelta = MAX_CLOCK_SKEW,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        url = (
            database
            if isinstance(database, str)
            else database.url.render_as_string(hide_password=False)
        )
        self._conninfo = libpq_conninfo(url)
        self._store = EventStore()
        self._max_event_age = max_event_age
        self._max_clock_skew = max_clock_skew
        # The writer thread's own event loop and connection (the store is asyncio code).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # A deque rather than queue.Queue: appending is one C call without a lock, which keeps
        # offer() cheap; the writer polls it. (name, unix time first served, request, arm).
        self._pending: deque[tuple[str, float, AssignmentRequest, ArmAssignment]] = deque()
        self._queue_size = queue_size
        self._seen = _SeenSet(seen_size)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._plugin_version = codelift_version()
        # Guards the counters; notified whenever exposures are done (written or given up).
        self._progress = threading.Condition()
        self._queued = self._dropped = self._written = self._failed = self._errors = 0
        self._rejected = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def counts(self) -> RecorderCounts:
        """Exposures queued, dropped (queue full), written, given up and rejected by the
        collector's validation; failed write attempts."""
        with self._progress:
            return RecorderCounts(
                queued=self._queued,
                dropped=self._dropped,
                written=self._written,
                failed=self._failed,
                errors=self._errors,
                rejected=self._rejected,
            )

    @property
    def dropped(self) -> int:
        """Exposures dropped because the queue was full."""
        return self._dropped

    def offer(self, request: AssignmentRequest, arms: Sequence[ArmAssignment]) -> None:
        """Queue the exposures in ``arms`` not seen before. Never blocks."""
        for arm in arms:
            name = f"{arm.experiment}:{request.user_id}"
            if name in self._seen:
                continue
            # Threads offering at once may overshoot the bound by one item each.
            if len(self._pending) >= self._queue_size:
                # Not marked seen: the user's next cache miss offers it again.
                with self._progress:
                    self._dropped += 1
                continue
            served_at = request.served_at if request.served_at is not None else time.time()
            self._pending.append((name, served_at, request, arm))
            self._seen.add(name)
            with self._progress:
                self._queued += 1

    # --- the writer -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer."""
        if self._thread is not None:
            raise RuntimeError("the exposure recorder is already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until what was queued before the call is written (or given up); False on timeout."""
        if self._thread is None:
            raise RuntimeError("flush needs a started recorder")
        self._wake.set()
        with self._progress:
            target = self._queued
            return self._progress.wait_for(
                lambda: self._written + self._failed + self._rejected >= target,
                timeout=timeout_s,
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (waiting at most ``timeout_s``) and stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("exposure writer still running after %.1f s", timeout_s)
            self._thread = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            while True:
                batch = self._take()
                if batch:
                    self._write(batch)
                elif self._stopping.is_set():
                    return
                else:
                    self._wake.wait(self._flush_interval_s)
                    self._wake.clear()
        finally:
            self._loop.run_until_complete(self._disconnect())
            self._loop.close()
            self._loop = None

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < self._batch_size:
            try:
                name, served_at, request, arm = self._pending.popleft()
            except IndexError:
                break
            batch.append(
                {
                    "type": "exposure",
                    "event_id": uuid.uuid5(EXPOSURE_NAMESPACE, name),
                    "client_ts": dt.datetime.fromtimestamp(served_at, dt.UTC),
                    "schema_version": SCHEMA_VERSION,
                    "user_id": request.user_id,
                    "session_id": request.session_id or GATEWAY_SESSION,
                    "ide": request.ide,
                    "plugin_version": request.plugin_version or self._plugin_version,
                    "language": request.language,
                    "experiment": arm.experiment,
                    "arm": arm.arm,
                    "suggestion_id": None,
                }
            )
        return batch

    def _write(self, batch: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.UTC)
        window = accepted_window(now, max_age=self._max_event_age, max_skew=self._max_clock_skew)
        parsed = validate_events(batch, window=window)
        if parsed.rejected:
            first = parsed.rejected[0]
            log.error(
                "%d exposure(s) rejected by the collector's validation, e.g. %s %s",
                len(batch) - len(parsed.valid),
                first.field,
                first.reason,
            )
            with self._progress:
                self._rejected += len(batch) - len(parsed.valid)
                self._progress.notify_all()
        if not parsed.valid:
            return
        assert self._loop is not None
        backoff = 0.1
        attempts_stopping = 0
        while True:
            try:
                self._loop.run_until_complete(
                    self._store_events(parsed.valid, dt.datetime.now(dt.UTC))
                )
            except psycopg.Error as exc:
                self._loop.run_until_complete(self._disconnect())
                with self._progress:
                    self._errors += 1
                if self._stopping.is_set():
                    attempts_stopping += 1
                    if attempts_stopping >= ATTEMPTS_WHEN_STOPPING:
                        log.error("gave up %d exposure(s) at shutdown: %s", len(parsed.valid), exc)
                        with self._progress:
                            self._failed += len(parsed.valid)
                            self._progress.notify_all()
                        return
                log.warning(
                    "writing %d exposure(s) failed, retrying in %.1f s: %s",
                    len(parsed.valid),
                    backoff,
                    exc,
                )
                # While retrying the queue keeps filling; once full, new exposures are dropped.
                self._stopping.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            with self._progress:
                # Duplicates (another process recorded them first) count as written: they are.
                self._written += len(parsed.valid)
                self._progress.notify_all()
            return

    async def _store_events(self, events: Sequence[Any], received_at: dt.datetime) -> None:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=CONNECT_TIMEOUT_S
            )
            await self._store.prepare_connection(conn)
            self._conn = conn
        await self._store.write(self._conn, events, received_at=received_at)

    async def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except psycopg.Error:
                log.debug("closing the exposure connection failed", exc_info=True)
