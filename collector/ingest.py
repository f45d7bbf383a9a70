"""One batch, end to end: parse, store, count. The route only reads the body and answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections import Counter
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.config import CollectorSettings
from collector.errors import DatabaseUnavailable
from collector.metrics import CollectorMetrics
from collector.parsing import ParsedBatch, accepted_window, parse_batch
from collector.partitions_job import PartitionKeeper
from collector.schemas import ConflictingEvent, IngestResult
from collector.store import EventStore, WriteResult
from core.languages import OTHER

log = logging.getLogger(__name__)


# Attempts at a batch that meets a transient conflict between writers. Writes take their locks
# in one order, so deadlocks should not happen; this covers what that argument does not
# (another writer of the same tables, a future change), so clients never see one as a 503.
TRANSIENT_ATTEMPTS = 4
TRANSIENT_BACKOFF_S = 0.01

_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _is_missing_partition(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in str(exc)


def _valid_indexes(parsed: ParsedBatch) -> list[int]:
    # Every event of a batch is either valid or rejected, and the valid ones keep their order:
    # the indexes left by the rejections are the valid events' places in the batch.
    rejected = {r.index for r in parsed.rejected}
    return [i for i in range(parsed.received) if i not in rejected]


class IngestService:
    """Validates and stores batches; shared by every request of one process."""

    def __init__(
        self,
        *,
        settings: CollectorSettings,
        pool: AsyncConnectionPool[Any],
        store: EventStore,
        metrics: CollectorMetrics,
        partitions: PartitionKeeper,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._store = store
        self._metrics = metrics
        self._partitions = partitions
        self._max_age = dt.timedelta(days=settings.max_event_age_days)
        self._max_skew = dt.timedelta(seconds=settings.max_clock_skew_s)

    async def ingest(self, body: bytes) -> IngestResult:
        """Store the valid events of ``body``; report duplicates, conflicts and rejections."""
        now = dt.datetime.now(dt.UTC)
        window = accepted_window(now, max_age=self._max_age, max_skew=self._max_skew)
        parsed = parse_batch(body, window=window, max_events=self._settings.max_batch_events)
        written = WriteResult(stored={}, duplicates={})
        if parsed.valid:
            written = await self._write(parsed, received_at=now)
        self._count(parsed, written)
        index_of = _valid_indexes(parsed) if written.conflicts else []
        return IngestResult(
            received=parsed.received,
            stored=sum(written.stored.values()),
            duplicates=sum(written.duplicates.values()),
            conflicts=len(written.conflicts),
            conflicting=[
                ConflictingEvent(
                    index=index_of[c.position],
                    event_id=c.event_id,
                    fields=list(c.fields),
                )
                for c in written.conflicts
            ],
            rejected=parsed.rejected,
        )

    async def _write(self, parsed: ParsedBatch, *, received_at: dt.datetime) -> WriteResult:
        # Writes are idempotent (each event_id is stored once), so another attempt is always
        # safe: it covers a pooled connection broken by a database restart, a partition that
        # maintenance has not made yet, and a transient conflict with another writer.
        # After a database restart every pooled connection is broken, and each fails its first
        # use (they are not checked on checkout): one attempt more than the pool holds reaches
        # a fresh one.
        broken = 0
        partitioned = False
        transient = 0
        while True:
            try:
                async with self._pool.connection() as conn:
                    return await self._store.write(conn, parsed.valid, received_at=received_at)
            except PoolTimeout:
                raise DatabaseUnavailable("database unavailable: no connection in time") from None
            except _TRANSIENT as exc:
                transient += 1
                self._metrics.write_retries.labels(type(exc).__name__).inc()
                if transient >= TRANSIENT_ATTEMPTS:
                    log.error("batch failed %d times on writer conflicts: %s", transient, exc)
                    raise
                # Jittered, so the writers that collided do not meet again in step.
                await asyncio.sleep(random.uniform(0, TRANSIENT_BACKOFF_S * 2**transient))
            except psycopg.OperationalError as exc:
                broken += 1
                if broken > self._settings.db_pool_max:
                    log.warning("database unavailable: %s", exc)
                    raise DatabaseUnavailable("database unavailable; retry later") from None
            except psycopg.Error as exc:
                if partitioned or not _is_missing_partition(exc):
                    raise
                partitioned = True
                log.warning("creating missing partitions after: %s", exc)
                earliest = min(e.client_ts for e in parsed.valid).astimezone(dt.UTC)
                try:
                    await self._partitions.ensure(earliest.date())
                except psycopg.OperationalError:
                    raise DatabaseUnavailable("database unavailable; retry later") from None

    def _count(self, parsed: ParsedBatch, written: WriteResult) -> None:
        events = self._metrics.events
        for event_type, count in written.stored.items():
            events.labels(event_type, "stored").inc(count)
        for event_type, count in written.duplicates.items():
            if count:
                events.labels(event_type, "duplicate").inc(count)
        for conflict in written.conflicts:
            events.labels(conflict.event_type, "conflict").inc()
        for event_type, count in parsed.rejected_types.items():
            events.labels(event_type, "rejected").inc(count)
        # Counted as received, like the rejections: a retried batch counts again.
        other = Counter(
            event.type  # type: ignore[attr-defined]
            for event in parsed.valid
            if event.language == OTHER
        )
        for event_type, count in other.items():
            self._metrics.other_languages.labels(event_type).inc(count)
