"""Builds the collector app: lifespan (pool, store, auth), routes, and error responses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.api.body import body_limits
from collector.api.deps import ingest_admission
from collector.api.routes import events, health
from collector.config import CollectorSettings
from collector.errors import BodyTimeout, CollectorError, PayloadTooLarge, RateLimited
from collector.ingest import IngestService
from collector.metrics import CollectorMetrics
from collector.partitions_job import PartitionKeeper
from collector.schemas import EventBatch
from collector.store import EventStore
from core.auth.verify import AuthError, KeyVerifier
from core.db.connection import libpq_conninfo
from core.db.pool import open_service_pool
from core.http_guard import HttpLimits
from core.overload import (
    BodyFirst,
    BodyRefusal,
    Busy,
    InFlightLimit,
    KeyedLimit,
    LoadShedder,
    ReadersBusy,
)
from core.ratelimit import RateLimiter
from core.request_body import BodyTooLarge

log = logging.getLogger(__name__)

_ROUTES = frozenset({"/v1/events", "/healthz", "/readyz", "/metrics"})


def create_app(settings: CollectorSettings) -> FastAPI:
    """The collector, for ``settings`` (whose database_url must be resolved already)."""
    if not settings.database_url:
        raise ValueError("database_url must be set (the CLI starts the embedded database)")
    database_url = settings.database_url
    conninfo = libpq_conninfo(database_url)
    metrics = CollectorMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = EventStore()
        pool = await open_service_pool(
            database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout_s=settings.db_timeout_s,
            configure=store.prepare_connection,
        )
        partitions = PartitionKeeper(conninfo, settings)
        keeper = asyncio.create_task(partitions.run_forever(), name="partition-keeper")
        app.state.settings = settings
        app.state.pool = pool
        app.state.metrics = metrics
        app.state.verifier = KeyVerifier(
            pool,
            ttl_s=settings.auth_cache_ttl_s,
            max_entries=settings.auth_cache_max_keys,
            max_misses=settings.auth_cache_max_misses,
            miss_rate_per_s=settings.auth_miss_lookups_per_s,
            miss_burst=settings.auth_miss_burst,
            # A quarter of the pool at most checks unknown keys: the rest stays for batches.
            max_concurrent_misses=max(1, settings.db_pool_max // 4),
            on_count=lambda outcome: metrics.key_lookups.labels(outcome).inc(),
        )
        app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        app.state.ingest = IngestService(
            settings=settings, pool=pool, store=store, metrics=metrics, partitions=partitions
        )
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await pool.close()

    app = FastAPI(
        title="CodeLift collector",
        summary="Stores telemetry events from IDE plugins.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(events.router)
    app.include_router(health.router)
    in_flight = InFlightLimit(settings.max_in_flight)
    app.state.in_flight = in_flight

    def overloaded() -> JSONResponse:
        metrics.batches.labels("503").inc()
        return _error(
            503,
            "overloaded",
            f"the collector is at its limit of {settings.max_in_flight} batches in progress; "
            "retry later",
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    def body_refused(exc: BodyRefusal) -> JSONResponse:
        retry = {"Retry-After": str(settings.retry_after_s)}
        if isinstance(exc, ReadersBusy) and exc.busy is Busy.KEY:
            response = _error(429, RateLimited.code, str(exc), field="Authorization", headers=retry)
        elif isinstance(exc, ReadersBusy):
            response = _error(503, "overloaded", str(exc), headers=retry)
        elif isinstance(exc, BodyTooLarge):
            response = _error(413, PayloadTooLarge.code, str(exc), field="body")
        else:
            response = _error(408, BodyTimeout.code, str(exc), field="body")
        metrics.batches.labels(str(response.status_code)).inc()
        return response

    readers = KeyedLimit(settings.max_body_readers, settings.max_body_readers_per_key)
    app.state.readers = readers
    app.add_middleware(
        LoadShedder,
        limit=in_flight,
        paths=frozenset({"/v1/events"}),
        refuse=overloaded,
        body=BodyFirst(
            identify=ingest_admission,
            readers=readers,
            limits=body_limits(settings),
            refuse=body_refused,
        ),
    )
    app.add_middleware(RequestTiming, metrics=metrics)
    _add_error_handlers(app, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def http_limits(settings: CollectorSettings) -> HttpLimits:
    """The limits on every request's head (``core.http_guard``), for ``settings``."""
    return HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_header_fields,
        header_timeout_s=settings.header_timeout_s,
    )


def _add_error_handlers(app: FastAPI, settings: CollectorSettings) -> None:
    @app.exception_handler(CollectorError)
    async def collector_error(request: Request, exc: CollectorError) -> JSONResponse:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        elif exc.status == 503:
            headers = {"Retry-After": str(settings.retry_after_s)}
        elif isinstance(exc, BodyTimeout):
            # The rest of a body this slow is not worth waiting for; nor is the connection.
            headers = {"Connection": "close"}
        return _error(exc.status, exc.code, exc.message, field=exc.field, headers=headers)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        code = "unauthenticated" if exc.status == 401 else "forbidden"
        return _error(exc.status, code, exc.message, field="Authorization", headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.scope.get("request_id", "-")
        log.exception("unhandled error in request %s", request_id)
        return _error(500, "internal_error", f"internal error; request id {request_id}")


def _error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def _openapi(app: FastAPI) -> dict[str, Any]:
    # The batch body is read raw (for speed and per-event errors), so FastAPI cannot see its
    # schema; it is added here so clients and schema-based fuzzers know the wire format.
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        batch = EventBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(batch.pop("$defs", {}))
        components[EventBatch.__name__] = batch
        app.openapi_schema = schema
    return app.openapi_schema


class RequestTiming:
    """Pure ASGI middleware: a request id on every response, and latency per route."""

    def __init__(self, app: ASGIApp, *, metrics: CollectorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope["request_id"] = request_id
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Unknown paths share one label, so scanners cannot blow up the metric's cardinality.
            route = scope["path"] if scope["path"] in _ROUTES else "other"
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
