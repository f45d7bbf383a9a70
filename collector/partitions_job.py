"""Keeping partitions ahead of ingestion from inside the collector.

`codelift db maintain` is the scheduled job (it also drops old partitions); the collector makes
sure on its own that today's and the coming days' partitions exist, at start-up, every hour, and
on demand when an insert finds none, so ingestion never fails for lack of a partition. Every
hour it also forgets the event ids past the acceptance window (collector.event_ids), so the id
table stays the window's size without a scheduled job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import anyio.to_thread
import psycopg

from collector.event_ids import prune_for_settings
from collector.models import event_metadata
from collector.partitions import maintain_partitions, partitioned_tables
from core.settings import DatabaseSettings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 3600.0


class PartitionKeeper:
    """Creates missing partitions (never drops: that is `codelift db maintain`'s job)."""

    def __init__(self, conninfo: str, settings: DatabaseSettings) -> None:
        self._conninfo = conninfo
        self._settings = settings
        self._tables = partitioned_tables(event_metadata())
        self._lock = asyncio.Lock()

    async def ensure(self, earliest: dt.date | None = None) -> None:
        """Partitions from ``earliest`` (default: the oldest accepted day) to the days ahead."""
        today = dt.datetime.now(dt.UTC).date()
        first = today - dt.timedelta(days=self._settings.max_event_age_days)
        if earliest is not None:
            first = min(first, earliest)
        last = today + dt.timedelta(days=self._settings.partitions_ahead_days)
        async with self._lock:
            plan = await anyio.to_thread.run_sync(
                lambda: maintain_partitions(
                    self._conninfo, self._tables, first_day=first, last_day=last
                )
            )
        if plan.create:
            log.info("created %d partitions", len(plan.create))

    async def prune_ids(self) -> int:
        """Forget the event ids past the acceptance window; the number forgotten."""
        now = dt.datetime.now(dt.UTC)
        pruned = await anyio.to_thread.run_sync(
            lambda: prune_for_settings(
                self._conninfo, max_event_age_days=self._settings.max_event_age_days, now=now
            )
        )
        if pruned:
            log.info("forgot %d event ids past the acceptance window", pruned)
        return pruned

    async def run_forever(self) -> None:
        """Check every hour; a database that is down only delays the next check."""
        while True:
            try:
                await self.ensure()
                await self.prune_ids()
            except psycopg.Error as exc:
                log.warning("partition check failed, retrying in %.0f s: %s", CHECK_EVERY_S, exc)
            await asyncio.sleep(CHECK_EVERY_S)
