"""Builds the gateway app: lifespan (event logger, key verifier), routes, error responses."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope as AsgiScope

from core.auth.scopes import Scope
from core.auth.verify import KeyVerifier
from core.db.pool import open_service_pool
from core.overload import (
    DEFAULT_READERS,
    DEFAULT_READERS_PER_KEY,
    BodyFirst,
    BodyRefusal,
    Busy,
    InFlightLimit,
    KeyedLimit,
    LoadShedder,
    ReadersBusy,
    header,
)
from core.ratelimit import RateLimiter
from core.request_body import BodyLimits, BodyTooLarge
from experiments.assignment.service import AssignmentService
from serving.backend import Backend
from serving.gateway import routes
from serving.gateway.client_bodies import FimCompletion, InfillRequest, TgiError, TgiGenerate
from serving.gateway.config import GatewaySettings
from serving.gateway.deps import ANONYMOUS, GatewayState
from serving.gateway.errors import (
    GatewayError,
    body_too_large,
    body_too_slow,
    error_response,
    overloaded,
)
from serving.gateway.events import make_event_logger
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.protocol import CompletionRequest, ErrorResponse
from serving.gateway.serving import CompletionService

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    backends: Mapping[str, Backend],
    assignment: AssignmentService | None = None,
    *,
    close_backends: bool = False,
    event_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The gateway for ``settings``, serving from ``backends`` (keyed by ``Variant.backend``).

    Without ``assignment`` every request gets ``settings.default_variant``. With
    ``settings.require_auth`` the database (``settings.database_url``) holds the API keys.
    ``event_transport`` replaces the network under the event logger (benchmarks).
    """
    if settings.require_auth and not settings.database_url:
        raise ValueError("require_auth needs database_url (API keys live in the database)")
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events = make_event_logger(settings, metrics, transport=event_transport)
        await events.start()
        pool: AsyncConnectionPool[Any] | None = None
        verifier = None
        if settings.require_auth:
            assert settings.database_url is not None
            pool = await open_service_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                timeout_s=settings.db_timeout_s,
            )
            verifier = KeyVerifier(pool, ttl_s=settings.auth_cache_ttl_s)
        service = CompletionService(
            settings=settings,
            backends=backends,
            assignment=assignment,
            events=events,
            metrics=metrics,
        )
        app.state.gateway = GatewayState(
            settings=settings,
            service=service,
            events=events,
            metrics=metrics,
            limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
            verifier=verifier,
        )
        try:
            yield
        finally:
            await events.aclose()
            if pool is not None:
                await pool.close()
            if close_backends:
                for backend in backends.values():
                    await backend.aclose()

    app = FastAPI(
        title="CodeLift gateway",
        summary="OpenAI-compatible code completions, served by experiment arm.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(routes.router)
    in_flight = InFlightLimit(settings.max_in_flight)
    app.state.in_flight = in_flight

    def refuse() -> Response:
        metrics.completions.labels("503").inc()
        return error_response(overloaded(settings.max_in_flight, settings.retry_after_s))

    async def caller_key(scope: AsgiScope) -> Hashable | None:
        # The key a body is read under; the route checks it again, from the verifier's cache.
        verifier: KeyVerifier | None = app.state.gateway.verifier
        if verifier is None:
            return ANONYMOUS
        return await verifier.key_id(header(scope, b"authorization"), Scope.SERVE)

    def body_refused(exc: BodyRefusal) -> Response:
        retry = settings.retry_after_s
        if isinstance(exc, ReadersBusy) and exc.busy is Busy.KEY:
            error = GatewayError(
                429, "rate_limit_error", str(exc), code="rate_limit_exceeded", retry_after_s=retry
            )
        elif isinstance(exc, ReadersBusy):
            error = GatewayError(
                503, "server_error", str(exc), code="overloaded", retry_after_s=retry
            )
        elif isinstance(exc, BodyTooLarge):
            error = body_too_large(str(exc))
        else:
            error = body_too_slow(str(exc))
        metrics.completions.labels(str(error.status)).inc()
        return error_response(error)

    app.add_middleware(
        LoadShedder,
        limit=in_flight,
        paths=frozenset({"/v1/completions"}),
        refuse=refuse,
        # The body is read before a slot is taken, so a client trickling it holds no slot.
        body=BodyFirst(
            identify=caller_key,
            readers=KeyedLimit(DEFAULT_READERS, DEFAULT_READERS_PER_KEY),
            limits=BodyLimits(settings.max_body_bytes, settings.body_timeout_s),
            refuse=body_refused,
        ),
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods answer in OpenAI's error shape too, like every other error.
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(GatewayError(exc.status_code, kind, message))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(GatewayError(500, "server_error", "internal error"))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# The plain Starlette routes (see routes.py), which FastAPI cannot see: path, handler, body,
# error body (TGI's clients read TGI's own).
_RAW_ROUTES: tuple[tuple[str, Any, type[BaseModel], type[BaseModel]], ...] = (
    ("/v1/completions", routes.create_completion, CompletionRequest, ErrorResponse),
    ("/v1/fim/completions", routes.create_fim_completion, FimCompletion, ErrorResponse),
    ("/infill", routes.infill, InfillRequest, ErrorResponse),
    ("/generate", routes.generate, TgiGenerate, TgiError),
)


def _openapi(app: FastAPI) -> dict[str, Any]:
    # The raw routes' wire schemas are added here for clients and schema-based fuzzers.
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        refs = "#/components/schemas/{model}"
        models = {m for _, _, body, error in _RAW_ROUTES for m in (body, error)}
        for model in sorted(models, key=lambda m: m.__name__):
            body = model.model_json_schema(ref_template=refs)
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        paths = schema.setdefault("paths", {})
        for path, handler, model, error_model in _RAW_ROUTES:
            error = {
                "content": {
                    "application/json": {
                        "schema": {"$ref": refs.format(model=error_model.__name__)}
                    }
                }
            }
            paths[path] = {
                "post": {
                    "summary": handler.__name__.replace("_", " ").capitalize(),
                    "description": handler.__doc__,
                    "operationId": handler.__name__,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": refs.format(model=model.__name__)}
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "A completion in the client's shape (or SSE)."},
                        **{
                            str(status): {"description": "Error", **error}
                            for status in (400, 401, 403, 404, 408, 413, 429, 502, 503)
                        },
                    },
                }
            }
        app.openapi_schema = schema
    return app.openapi_schema
