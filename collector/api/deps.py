"""Every dependency of the collector's routes, as ``Annotated`` aliases.

They are ``async`` even where they do not await: FastAPI runs a plain ``def`` dependency in a
thread pool, a handoff that cost more than the work on the hot path.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import Depends, Header, Request
from starlette.datastructures import State
from starlette.types import Scope as AsgiScope

from collector.config import CollectorSettings
from collector.errors import CollectorError, DatabaseUnavailable, RateLimited
from collector.ingest import IngestService
from collector.metrics import CollectorMetrics
from core.auth.scopes import Scope
from core.auth.verify import AuthError, KeyLookupThrottled, KeyVerifier, Principal
from core.overload import header
from core.ratelimit import RateLimiter

# Where ``ingest_admission`` leaves its answer in the ASGI scope for ``IngestPrincipal``.
_ADMISSION = "codelift.ingest_admission"


async def _settings(request: Request) -> CollectorSettings:
    settings: CollectorSettings = request.app.state.settings
    return settings


async def _ingest_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


async def _metrics(request: Request) -> CollectorMetrics:
    metrics: CollectorMetrics = request.app.state.metrics
    return metrics


async def _admit(state: State, authorization: str | None) -> Principal:
    verifier: KeyVerifier = state.verifier
    try:
        principal = await verifier.authenticate(authorization, Scope.INGEST)
    except KeyLookupThrottled:
        raise DatabaseUnavailable(
            "too many unknown API keys are being checked at once; retry later"
        ) from None
    except psycopg.OperationalError:
        # The key lookup needs the database (a PoolTimeout is an OperationalError too): an
        # outage is a 503 the client retries after Retry-After, not a 500.
        raise DatabaseUnavailable("database unavailable; retry later") from None
    limiter: RateLimiter = state.limiter
    wait = limiter.acquire(principal.key_id)
    if wait > 0:
        raise RateLimited(
            f"rate limit exceeded for API key {principal.name!r}; retry later", retry_after_s=wait
        )
    return principal


async def ingest_admission(scope: AsgiScope) -> int | None:
    """The key a batch's body is read under (``core.overload.BodyFirst``), None if refused.

    The answer, a principal or the error to raise, is left in the scope for ``IngestPrincipal``,
    so the key is checked (and its rate limit charged) once per request.
    """
    try:
        principal = await _admit(scope["app"].state, header(scope, b"authorization"))
    except (AuthError, CollectorError) as exc:
        scope[_ADMISSION] = exc
        return None
    scope[_ADMISSION] = principal
    return principal.key_id


async def _ingest_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    admitted = request.scope.pop(_ADMISSION, None)
    if admitted is None:
        return await _admit(request.app.state, authorization)
    if isinstance(admitted, Exception):
        raise admitted
    principal: Principal = admitted
    return principal


SettingsDep = Annotated[CollectorSettings, Depends(_settings)]
IngestServiceDep = Annotated[IngestService, Depends(_ingest_service)]
MetricsDep = Annotated[CollectorMetrics, Depends(_metrics)]
IngestPrincipal = Annotated[Principal, Depends(_ingest_principal)]
