"""The asyncio connection pool of the HTTP services (collector and gateway), made one way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from core.db.connection import libpq_conninfo

# A lost connection is retried at most this far apart, however long the outage: the service is
# back within about this long of the database's return. psycopg_pool's own back-off doubles
# from 1 s without a cap (a 45 s outage meant 16 s more of 503s after the database was back);
# one connection attempt a second per pooled connection is nothing for a server to refuse.
MAX_RECONNECT_DELAY_S = 0.5
FIRST_RECONNECT_DELAY_S = 0.1


class _CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's reconnection back-off, from 0.1 s, doubling up to a cap."""

    INITIAL_DELAY = FIRST_RECONNECT_DELAY_S

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY_S)


class ServicePool(AsyncConnectionPool[Any]):
    """An AsyncConnectionPool that keeps reconnecting at a capped pace, never giving up."""

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        # The hook is internal to psycopg_pool (3.2, 3.3): the one place a new attempt's
        # back-off is made. tests/test_reliability_faults.py fails if it stops being used.
        await super()._add_connection(
            attempt or _CappedBackoff(timeout=self.reconnect_timeout), growing
        )


async def open_service_pool(
    database_url: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
) -> AsyncConnectionPool[Any]:
    """An opened pool that does not wait for the database: the service starts (and its
    readiness check says 503) while the database is down, and the pool keeps reconnecting.

    ``timeout_s`` bounds both the wait for a pooled connection and a new connection's set-up,
    so a request meets a down database with a prompt 503 rather than a hang. Connections are
    not checked as they are handed out (a round trip on every request): one broken by a
    database restart fails its first use, and is then replaced (the collector retries a batch
    on another connection).
    """
    pool = ServicePool(
        libpq_conninfo(database_url),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        configure=configure,
        kwargs={"connect_timeout": max(1, int(timeout_s))},
        # Never give up reconnecting: a pool that shrinks during a long outage comes back
        # smaller than configured.
        reconnect_timeout=float("inf"),
        open=False,
    )
    await pool.open(wait=False)
    return pool
