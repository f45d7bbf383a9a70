"""Sending the gateway's events to the collector, off the hot path, through a spool on disk.

``offer`` appends an event to a bounded in-memory buffer and returns at once (a full buffer
drops the event and counts it). Two background tasks do the rest, their disk work in one I/O
thread so the event loop never waits on the disk:

- the writer appends the buffered events to the spool (``serving.event_spool``: segments of
  JSON lines, bounded in bytes, replayed on start), and counts as dropped what no longer fits;
- the sender reads the spool in batches and POSTs them to the collector's ``/v1/events``,
  retrying a batch without an answer (network error, timeout, 408, 429, 5xx) for ever, with
  exponential back-off and jitter and at least the collector's ``Retry-After``. Every event has
  its ``event_id`` and the collector stores each id once, so sending a batch again is safe.

Every event ends one of four ways, each counted: delivered (the collector stored it or had it
already), rejected (the collector listed it as invalid or as a conflicting payload, or refused
its batch with a 4xx that no retry can change), dropped (buffer or spool full, or the disk
failed), or still in the spool. A slow or down collector costs disk space, never a completion's
latency or success.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
from pydantic import ValidationError

from collector.schemas import IngestResult
from serving.event_spool import DEFAULT_MAX_BYTES, AppendResult, EventSpool, SpoolBatch
from serving.spool_files import spool_directory

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# A Retry-After longer than this is read as this: a confused proxy must not park delivery.
MAX_RETRY_AFTER_S = 60.0
# How often the shutdown looks whether the last events went out.
_POLL_S = 0.01
# How many of a batch's rejections are logged in full (all are counted).
_LOGGED_REJECTIONS = 5
# While the spool is full, drops are logged at most this often (each write would log).
_DROP_LOG_INTERVAL_S = 10.0


@dataclasses.dataclass(slots=True)
class EventLoggerCounts:
    """Events by fate since the logger started."""

    queued: int = 0
    # Acknowledged by the collector: stored, or a duplicate of one stored before.
    delivered: int = 0
    # Listed as invalid in the collector's answer (or not JSON at all).
    rejected_invalid: int = 0
    # Their event_id is stored with another payload: the collector kept the first.
    rejected_conflict: int = 0
    # In a batch the collector refused as a whole with a 4xx no retry can change.
    rejected_refused: int = 0
    # Lost before delivery: the buffer or the spool was full, or the disk failed the write.
    dropped: int = 0
    # POSTs without an answer that counts (each one retried).
    failed_posts: int = 0

    @property
    def rejected(self) -> int:
        """Events the collector will never store, for whatever reason."""
        return self.rejected_invalid + self.rejected_conflict + self.rejected_refused


@dataclasses.dataclass(frozen=True, slots=True)
class _Retry:
    reason: str
    retry_after_s: float | None = None


class _Split:
    """The collector could not take the batch whole: send it in halves."""


_SPLIT = _Split()


class EventLogger:
    """A bounded buffer of events, spooled to disk and sent in batches by background tasks."""

    def __init__(
        self,
        collector_url: str | None,
        ingest_key: str | None,
        *,
        spool_root: Path | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_segment_bytes: int | None = None,
        fsync_interval_s: float = 1.0,
        queue_size: int = 10_000,
        batch_size: int = 100,
        batch_max_bytes: int = 512 * 1024,
        flush_interval_s: float = 0.2,
        timeout_s: float = 2.0,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        self.enabled = bool(collector_url)
        if self.enabled and spool_root is None:
            raise ValueError("an event logger with a collector needs spool_root")
        self._url = f"{collector_url.rstrip('/')}/v1/events" if collector_url else ""
        self._headers = {"Content-Type": "application/json"}
        if ingest_key:
            self._headers["Authorization"] = f"Bearer {ingest_key}"
        self.spool: EventSpool | None = None
        if collector_url and spool_root is not None:
            self.spool = EventSpool(
                spool_directory(spool_root, collector_url),
                max_bytes=spool_max_bytes,
                segment_bytes=spool_segment_bytes,
                fsync_interval_s=fsync_interval_s,
                clock=clock,
            )
        self._buffer: deque[dict[str, Any]] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._batch_max_bytes = batch_max_bytes
        self._flush_interval_s = flush_interval_s
        self._fsync_interval_s = fsync_interval_s
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_retry_after_s = max_retry_after_s
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._spooled = asyncio.Event()
        self._writing = 0
        self._acking: asyncio.Future[None] | None = None
        self._unlogged_drops = 0
        self._drops_logged_at = -_DROP_LOG_INTERVAL_S
        self._stopping = False
        self._closed = False
        # Whether the last POST failed: a shutdown does not wait on a collector that is down.
        self.failing = False
        self.counts = EventLoggerCounts()

    # --- the hot path ---------------------------------------------------------------------------

    def offer(self, event: dict[str, Any]) -> bool:
        """Buffer ``event`` for the spool; False (counted as dropped) when the buffer is full."""
        if not self.enabled:
            return False
        if self._closed or len(self._buffer) >= self._queue_size:
            self.counts.dropped += 1
            return False
        self._buffer.append(event)
        self.counts.queued += 1
        if len(self._buffer) == 1:
            self._wake.set()
        return True

    # --- what /metrics shows --------------------------------------------------------------------

    @property
    def spool_bytes(self) -> int:
        """Bytes the spool holds on disk."""
        return self.spool.bytes if self.spool is not None else 0

    @property
    def spool_events(self) -> int:
        """Events in the spool not delivered yet."""
        return self.spool.events if self.spool is not None else 0

    @property
    def spool_capacity_bytes(self) -> int:
        """The spool's bound."""
        return self.spool.max_bytes if self.spool is not None else 0

    def oldest_age_s(self) -> float:
        """Seconds the oldest undelivered event has waited in the spool (0 when none)."""
        oldest = self.spool.oldest_spooled_at if self.spool is not None else None
        return max(0.0, self._clock() - oldest) if oldest is not None else 0.0

    # --- starting and stopping ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start sending what it holds and what comes."""
        if self.spool is None or self._writer is not None:
            return
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="event-spool")
        try:
            await self._in_io(self.spool.open)
        except BaseException as exc:
            self._io.shutdown(wait=False)
            self._io = None
            if isinstance(exc, OSError):
                raise RuntimeError(
                    f"cannot open the event spool under {self.spool.root}: {exc}; set "
                    "CODELIFT_GATEWAY_EVENT_SPOOL_DIR to a writable directory"
                ) from exc
            raise
        if self.spool.events:
            log.info(
                "event spool %s: %d event(s) (%d bytes) left from before; delivering them",
                self.spool.directory,
                self.spool.events,
                self.spool.bytes,
            )
        self._client = httpx.AsyncClient(
            timeout=self._timeout_s, headers=self._headers, transport=self._transport
        )
        self._writer = asyncio.create_task(self._write_loop(), name="event-spool-writer")
        self._sender = asyncio.create_task(self._send_loop(), name="event-sender")

    def _idle(self) -> bool:
        return not self._buffer and not self._writing and self.spool_events == 0

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every event offered so far was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self._idle():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Deliver what is pending for at most ``timeout_s`` (not at all while the collector is
        down), then stop; what is left stays in the spool for the next start."""
        if self._writer is None or self._sender is None or self._io is None:
            self._closed = True
            return
        deadline = time.monotonic() + timeout_s
        while not self._idle() and not self.failing and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        # A batch the sender has in flight stays in the spool: sent again next time.
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if self._acking is not None:
            await self._acking
        self._stopping = True
        self._wake.set()
        await self._writer
        self._closed = True
        assert self.spool is not None
        if self._buffer:  # offered while the writer stopped
            events = list(self._buffer)
            self._buffer.clear()
            self._account_append(await self._in_io(self.spool.append, events))
        await self._in_io(self.spool.close)
        left = self.spool.events
        if left:
            log.warning(
                "event spool %s: %d undelivered event(s) kept for the next start",
                self.spool.directory,
                left,
            )
        self._io.shutdown(wait=True)
        self._io = None
        self._writer = self._sender = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _in_io(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        assert self._io is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: function(*args, **kwargs))

    # --- writing the spool ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self.spool is not None
        # With fsync after every write there is nothing to sync when idle.
        sync_every = self._fsync_interval_s if self._fsync_interval_s > 0 else None
        while True:
            self._wake.clear()
            if not self._buffer:
                if self._stopping:
                    return
                try:
                    await asyncio.wait_for(self._wake.wait(), sync_every)
                except TimeoutError:
                    await self._in_io(self.spool.sync)
                continue
            if len(self._buffer) < self._batch_size and not self._stopping:
                # One timer per write (not one per event): events keep arriving meanwhile.
                await asyncio.sleep(self._flush_interval_s)
            events = list(self._buffer)
            self._buffer.clear()
            self._writing = len(events)
            try:
                result = await self._in_io(self.spool.append, events)
            finally:
                self._writing = 0
            self._account_append(result)
            self._spooled.set()

    def _account_append(self, result: AppendResult) -> None:
        self.counts.rejected_invalid += result.invalid
        if not result.dropped:
            return
        self.counts.dropped += result.dropped
        self._unlogged_drops += result.dropped
        now = time.monotonic()
        # Every drop is counted; the log says so once per interval, not once per write.
        if now - self._drops_logged_at >= _DROP_LOG_INTERVAL_S:
            assert self.spool is not None
            log.error(
                "event spool full (%d of %d bytes): %d event(s) dropped (%d in all)",
                self.spool.bytes,
                self.spool.max_bytes,
                self._unlogged_drops,
                self.counts.dropped,
            )
            self._unlogged_drops, self._drops_logged_at = 0, now

    # --- sending --------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        assert self.spool is not None
        while True:
            self._spooled.clear()
            try:
                batch = await self._in_io(self.spool.read, self._batch_size, self._batch_max_bytes)
            except OSError as exc:
                # The disk failed a read: the events stay where they are; try again later.
                log.error("event spool: reading failed (%s); retrying", exc)
                await self._sleep(self._max_backoff_s)
                continue
            if batch is None:
                await self._spooled.wait()
                continue
            self.counts.dropped += batch.corrupt
            if batch.events:
                await self._deliver(batch.events)
            await self._ack(batch)

    async def _ack(self, batch: SpoolBatch) -> None:
        assert self.spool is not None
        # Shielded (and awaited by aclose before the spool closes): a shutdown arriving now
        # must not leave the cursor behind what the collector has.
        self._acking = asyncio.ensure_future(self._in_io(self.spool.ack, batch))
        await asyncio.shield(self._acking)

    async def _deliver(self, events: list[bytes]) -> None:
        """POST ``events`` until the collector answers for every one of them."""
        attempt = 0
        failing_since = 0.0
        while True:
            outcome = await self._post(events)
            if outcome is None:
                if attempt:
                    log.warning(
                        "events delivered again after %d failed attempt(s) over %.1f s",
                        attempt,
                        time.monotonic() - failing_since,
                    )
                self.failing = False
                return
            if isinstance(outcome, _Split):
                # A body the collector finds too big or unreadable: halves isolate the culprit.
                half = len(events) // 2
                await self._deliver(events[:half])
                await self._deliver(events[half:])
                return
            self.counts.failed_posts += 1
            self.failing = True
            wait = self._backoff(attempt, outcome.retry_after_s)
            if attempt == 0:
                failing_since = time.monotonic()
                log.warning(
                    "posting %d event(s) failed (%s); retrying until the collector answers",
                    len(events),
                    outcome.reason,
                )
            else:
                log.info(
                    "posting events failed again (%s); next try in %.2f s", outcome.reason, wait
                )
            attempt += 1
            await self._sleep(wait)

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        # Exponential, capped, with "equal jitter": at least half the step, so gateways that
        # lost the collector together do not come back in step, and none hammers it.
        ceiling = min(self._max_backoff_s, self._backoff_s * 2.0 ** min(attempt, 32))
        wait = ceiling * (0.5 + 0.5 * random.random())
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self._max_retry_after_s))
        return wait

    async def _post(self, events: list[bytes]) -> _Retry | _Split | None:
        """One POST of ``events``; None when every event's fate is known (and counted)."""
        assert self._client is not None
        body = b'{"events":[' + b",".join(events) + b"]}"
        try:
            response = await self._client.post(self._url, content=body)
        except httpx.HTTPError as exc:
            return _Retry(f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status in (200, 422):
            try:
                result = IngestResult.model_validate_json(response.content)
            except ValidationError:
                result = None
            if result is not None and result.received == len(events):
                self._account(result, events)
                return None
            if status == 200:
                # Not the collector's answer (a proxy, a wrong URL): keep the events.
                return _Retry(f"HTTP 200 without an ingest result: {response.text[:200]!r}")
        if status in (408, 429) or status >= 500:
            return _Retry(f"HTTP {status}", _retry_after_s(response))
        if status in (400, 413) and len(events) > 1:
            log.info(
                "collector answered %d to %d events; sending them in halves", status, len(events)
            )
            return _SPLIT
        # Retrying a request the collector refuses (bad key, wrong path, bad body) cannot help.
        self.counts.rejected_refused += len(events)
        log.error("collector refused %d event(s): %d %s", len(events), status, response.text[:500])
        return None

    def _account(self, result: IngestResult, events: list[bytes]) -> None:
        invalid = {r.index for r in result.rejected}
        conflicting = {c.index for c in result.conflicting} - invalid
        self.counts.rejected_invalid += len(invalid)
        self.counts.rejected_conflict += len(conflicting)
        self.counts.delivered += len(events) - len(invalid) - len(conflicting)
        if invalid:
            shown = "; ".join(
                f"#{r.index} {_event_id(events, r.index)} {r.field}: {r.reason}"
                for r in result.rejected[:_LOGGED_REJECTIONS]
            )
            log.warning(
                "collector rejected %d of %d event(s) (not stored): %s",
                len(invalid),
                len(events),
                shown,
            )
        if conflicting:
            shown = "; ".join(
                f"{c.event_id} ({', '.join(c.fields)})"
                for c in result.conflicting[:_LOGGED_REJECTIONS]
            )
            log.warning(
                "collector holds other payloads for %d event id(s) (not stored): %s",
                len(conflicting),
                shown,
            )


def _event_id(events: list[bytes], index: int) -> str:
    try:
        return str(json.loads(events[index]).get("event_id"))
    except (IndexError, ValueError, AttributeError):
        return "?"


def _retry_after_s(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds (a number or an HTTP date), if it has one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
