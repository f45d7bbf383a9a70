"""One batch, end to end: parse, store, count. The route only reads the body and answers."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.config import CollectorSettings
from collector.errors import DatabaseUnavailable
from collector.metrics import CollectorMetrics
from collector.parsing import ParsedBatch, accepted_window, parse_batch
from collector.partitions_job import PartitionKeeper
from collector.schemas import IngestResult
from collector.store import EventStore, WriteResult

log = logging.getLogger(__name__)


def _is_missing_partition(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in str(exc)


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
        """Store the valid events of ``body``; report duplicates and rejections."""
        now = dt.datetime.now(dt.UTC)
        window = accepted_window(now, max_age=self._max_age, max_skew=self._max_skew)
        parsed = parse_batch(body, window=window, max_events=self._settings.max_batch_events)
        written = WriteResult(stored={}, duplicates={})
        if parsed.valid:
            written = await self._write(parsed, received_at=now)
        self._count(parsed, written)
        return IngestResult(
            received=parsed.received,
            stored=sum(written.stored.values()),
            duplicates=sum(written.duplicates.values()),
            rejected=parsed.rejected,
        )

    async def _write(self, parsed: ParsedBatch, *, received_at: dt.datetime) -> WriteResult:
        # Writes are idempotent (ON CONFLICT DO NOTHING on event_id), so a second attempt is
        # always safe: it covers a pooled connection broken by a database restart, and a
        # partition that maintenance has not made yet.
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    return await self._store.write(conn, parsed.valid, received_at=received_at)
            except PoolTimeout:
                raise DatabaseUnavailable("database unavailable: no connection in time") from None
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    log.warning("database unavailable: %s", exc)
                    raise DatabaseUnavailable("database unavailable; retry later") from None
            except psycopg.Error as exc:
                if attempt == 2 or not _is_missing_partition(exc):
                    raise
                log.warning("creating missing partitions after: %s", exc)
                earliest = min(e.client_ts for e in parsed.valid).astimezone(dt.UTC)
                try:
                    await self._partitions.ensure(earliest.date())
                except psycopg.OperationalError:
                    raise DatabaseUnavailable("database unavailable; retry later") from None
        raise AssertionError("unreachable")

    def _count(self, parsed: ParsedBatch, written: WriteResult) -> None:
        events = self._metrics.events
        for event_type, count in written.stored.items():
            events.labels(event_type, "stored").inc(count)
        for event_type, count in written.duplicates.items():
            if count:
                events.labels(event_type, "duplicate").inc(count)
        for event_type, count in parsed.rejected_types.items():
            events.labels(event_type, "rejected").inc(count)
