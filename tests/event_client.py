"""A small event-sending client that behaves like an IDE plugin: it retries a batch on network
errors, timeouts, 429 and 5xx, honouring ``Retry-After`` (capped) with exponential backoff,
until the collector acknowledges it or a deadline passes.

The fault and overload tests count what it sent and what was acknowledged; the fleet simulator
can take its place later, as long as it keeps the same counts.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx

from tests import factories
from tests.factories import Event

RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass
class SenderCounts:
    """What a sender did, over all its batches."""

    sent_events: int = 0
    acked_events: int = 0
    attempts: int = 0
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    acked_ids: set[str] = dataclasses.field(default_factory=set)
    unacked_ids: set[str] = dataclasses.field(default_factory=set)
    # The slowest answer, refusals included: overload must be refused fast, not time out.
    slowest_answer_s: float = 0.0

    def merge(self, other: SenderCounts) -> None:
        """Add ``other``'s counts to these."""
        self.sent_events += other.sent_events
        self.acked_events += other.acked_events
        self.attempts += other.attempts
        self.statuses.update(other.statuses)
        self.acked_ids |= other.acked_ids
        self.unacked_ids |= other.unacked_ids
        self.slowest_answer_s = max(self.slowest_answer_s, other.slowest_answer_s)


class EventSender:
    """Sends batches to one collector with one key; not thread-safe (one per thread)."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.05,
        max_wait_s: float = 0.5,
        honour_retry_after: bool = True,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url, timeout=timeout_s, headers={"Authorization": f"Bearer {key}"}
        )
        self._backoff_s = backoff_s
        self._max_wait_s = max_wait_s
        self._honour_retry_after = honour_retry_after
        self.counts = SenderCounts()

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()

    def send(self, events: list[Event], *, deadline: float) -> bool:
        """POST ``events`` until acknowledged (True) or ``deadline`` (monotonic) passes."""
        self.counts.sent_events += len(events)
        body = factories.batch(*events)
        wait = self._backoff_s
        while True:
            self.counts.attempts += 1
            started = time.monotonic()
            retry_after: float | None = None
            try:
                response = self._client.post("/v1/events", json=body)
            except httpx.HTTPError as exc:
                self.counts.statuses[type(exc).__name__] += 1
            else:
                self.counts.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    answer = response.json()
                    assert answer["stored"] + answer["duplicates"] == len(events), answer
                    self._answered(started)
                    self.counts.acked_events += len(events)
                    self.counts.acked_ids.update(event["event_id"] for event in events)
                    return True
                assert response.status_code in RETRYABLE, response.text
                assert "retry-after" in response.headers, response.headers
                retry_after = float(response.headers["retry-after"])
                self._answered(started)
            if time.monotonic() > deadline:
                self.counts.unacked_ids.update(event["event_id"] for event in events)
                return False
            pause = wait
            if retry_after is not None and self._honour_retry_after:
                pause = max(pause, retry_after)
            time.sleep(min(pause, self._max_wait_s))
            wait = min(wait * 2, self._max_wait_s)

    def _answered(self, started: float) -> None:
        self.counts.slowest_answer_s = max(self.counts.slowest_answer_s, time.monotonic() - started)


def shown_events(n: int, *, user: str = "fleet") -> list[Event]:
    """``n`` fresh suggestion_shown events with unique ids."""
    return [
        factories.suggestion_shown(user_id=f"{user}-{i % 7}", suggestion_id=uuid.uuid4().hex[:16])
        for i in range(n)
    ]


def exposure_events(n: int, *, user: str = "fleet") -> list[Event]:
    """``n`` fresh exposure events with unique ids."""
    return [factories.exposure(user_id=f"{user}-{i}") for i in range(n)]


class SenderFleet:
    """Threads that each send batches back to back until ``stop()``, then finish the batch in
    hand (retrying until ``drain_deadline``)."""

    def __init__(
        self,
        make_sender: Callable[[], EventSender],
        *,
        threads: int,
        batch_size: int,
        drain_s: float = 20.0,
        make_events: Callable[..., list[Event]] = shown_events,
    ) -> None:
        self._make_sender = make_sender
        self._make_events = make_events
        self._batch_size = batch_size
        self._drain_s = drain_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counts = SenderCounts()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"sender-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        """Start sending."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> SenderCounts:
        """Stop sending new batches, wait for the ones in hand, and return the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self._drain_s + 10)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        return self.counts

    def _run(self, index: int) -> None:
        sender = self._make_sender()
        try:
            while not self._stop.is_set():
                # The deadline is far: a batch is retried through the fault, then drained.
                events = self._make_events(self._batch_size, user=f"fleet{index}")
                sender.send(events, deadline=time.monotonic() + self._drain_s)
        finally:
            sender.close()
            with self._lock:
                self.counts.merge(sender.counts)
