"""Every dependency of the collector's routes, as ``Annotated`` aliases.

They are ``async`` even where they do not await: FastAPI runs a plain ``def`` dependency in a
thread pool, a handoff that cost more than the work on the hot path.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import Depends, Header, Request

from collector.config import CollectorSettings
from collector.errors import DatabaseUnavailable, RateLimited
from collector.ingest import IngestService
from collector.metrics import CollectorMetrics
from core.auth.scopes import Scope
from core.auth.verify import KeyVerifier, Principal
from core.ratelimit import RateLimiter


async def _settings(request: Request) -> CollectorSettings:
    settings: CollectorSettings = request.app.state.settings
    return settings


async def _ingest_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


async def _metrics(request: Request) -> CollectorMetrics:
    metrics: CollectorMetrics = request.app.state.metrics
    return metrics


async def _ingest_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    verifier: KeyVerifier = request.app.state.verifier
    try:
        principal = await verifier.authenticate(authorization, Scope.INGEST)
    except psycopg.OperationalError:
        # The key lookup needs the database (a PoolTimeout is an OperationalError too): an
        # outage is a 503 the client retries after Retry-After, not a 500.
        raise DatabaseUnavailable("database unavailable; retry later") from None
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.acquire(principal.key_id)
    if wait > 0:
        raise RateLimited(
            f"rate limit exceeded for API key {principal.name!r}; retry later", retry_after_s=wait
        )
    return principal


SettingsDep = Annotated[CollectorSettings, Depends(_settings)]
IngestServiceDep = Annotated[IngestService, Depends(_ingest_service)]
MetricsDep = Annotated[CollectorMetrics, Depends(_metrics)]
IngestPrincipal = Annotated[Principal, Depends(_ingest_principal)]
