"""The asyncio connection pool of the HTTP services (collector and gateway), made one way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.db.connection import libpq_conninfo


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
    so a request meets a down database with a prompt 503 rather than a hang.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        libpq_conninfo(database_url),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        configure=configure,
        kwargs={"connect_timeout": max(1, int(timeout_s))},
        open=False,
    )
    await pool.open(wait=False)
    return pool
