"""Sending the gateway's events to the collector, off the hot path.

``offer`` puts an event on a bounded in-memory queue and returns at once; when the queue is
full the event is dropped and counted. A background task takes batches off the queue and POSTs
them to the collector's ``/v1/events`` with the ingest key, retrying a failed batch with
exponential backoff before giving it up (and counting its events as dropped). A slow or down
collector therefore costs events, never a completion's latency or success.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class EventLoggerCounts:
    """Events by fate since the logger started."""

    queued: int = 0
    sent: int = 0
    rejected: int = 0
    dropped: int = 0
    failed_posts: int = 0


class EventLogger:
    """A bounded queue of events, sent in batches by a task on the running event loop."""

    def __init__(
        self,
        collector_url: str | None,
        ingest_key: str | None,
        *,
        queue_size: int = 10_000,
        batch_size: int = 100,
        flush_interval_s: float = 0.2,
        timeout_s: float = 2.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        on_drop: Callable[[int], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        self.enabled = bool(collector_url)
        self._url = f"{collector_url.rstrip('/')}/v1/events" if collector_url else ""
        self._headers = {"Authorization": f"Bearer {ingest_key}"} if ingest_key else {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._on_drop = on_drop
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.counts = EventLoggerCounts()

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for sending; False (and counted as dropped) when the queue is full."""
        if not self.enabled:
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped(1)
            return False
        self.counts.queued += 1
        self._idle.clear()
        return True

    def _dropped(self, n: int) -> None:
        self.counts.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    async def start(self) -> None:
        """Start the sending task (on the running loop)."""
        if not self.enabled or self._task is not None:
            return
        self._client = httpx.AsyncClient(
            timeout=self._timeout_s, headers=self._headers, transport=self._transport
        )
        self._task = asyncio.create_task(self._run(), name="event-logger")

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was sent or given up; False on timeout."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        return False

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout_s``), then stop."""
        if self._task is not None:
            await self.flush(timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self._queue.qsize()
        if left:
            self._dropped(left)
            while not self._queue.empty():
                self._queue.get_nowait()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if queue.qsize() < self._batch_size - 1:
                # One timer per batch (not one per event): events keep arriving meanwhile.
                await asyncio.sleep(self._flush_interval_s)
            while len(batch) < self._batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            await self._send(batch)
            if queue.empty():
                self._idle.set()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        assert self._client is not None
        wait = self._backoff_s
        for attempt in range(self._max_retries + 1):
            try:
                response = await self._client.post(self._url, json={"events": batch})
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    rejected = response.json().get("rejected", [])
                    if rejected:
                        log.warning("collector rejected %d event(s): %s", len(rejected), rejected)
                    self.counts.rejected += len(rejected)
                    self.counts.sent += len(batch) - len(rejected)
                    return
                if response.status_code != 429 and response.status_code < 500:
                    # Retrying a request the collector refuses (bad key, too big) cannot help.
                    log.error(
                        "collector refused %d event(s): %d %s",
                        len(batch),
                        response.status_code,
                        response.text[:500],
                    )
                    self._dropped(len(batch))
                    return
                reason = f"HTTP {response.status_code}"
            self.counts.failed_posts += 1
            if attempt < self._max_retries:
                log.info("posting events failed (%s); retrying in %.2f s", reason, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, self._max_backoff_s)
            else:
                log.warning(
                    "giving up %d event(s) after %d attempts: %s", len(batch), attempt + 1, reason
                )
        self._dropped(len(batch))
