"""HTTP routes of the gateway (HTTP only; the work is in ``serving.py``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from core.request_body import BodyTooLarge, BodyTooSlow, read_limited
from serving.gateway.deps import GatewayState
from serving.gateway.dialects import (
    FIM,
    INFILL,
    OPENAI,
    TABBY,
    TGI,
    Dialect,
    is_tabby,
    reshape_stream,
    warmup_body,
)
from serving.gateway.errors import (
    GatewayError,
    body_too_large,
    body_too_slow,
    error_response,
    unknown_model,
)
from serving.gateway.protocol import ErrorResponse, ModelCard, ModelList

router = APIRouter()

T = TypeVar("T")

# Nginx's "client closed request": never seen by the client, but visible in access logs.
CLIENT_CLOSED_REQUEST = 499
# How long a request runs before the gateway starts watching for the client going away.
DISCONNECT_WATCH_AFTER_S = 0.02

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 408, 413, 429, 502, 503)
}


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def _cancel_when_disconnected(request: Request, task: asyncio.Task[Any]) -> None:
    # The body was read already, so the next ASGI message is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


async def _cancel_on_disconnect(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await ``work`` unless the client goes away first, which cancels it (and its backend
    request); ``(False, None)`` then.

    The work runs in the request's own task. A watcher task is only started once the work has
    taken ``DISCONNECT_WATCH_AFTER_S``: a task per request was a tenth of the gateway's time,
    and a request that quick has no backend work left worth cancelling.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watchers: list[asyncio.Task[None]] = []

    def watch() -> None:
        watchers.append(loop.create_task(_cancel_when_disconnected(request, task)))

    timer = loop.call_later(DISCONNECT_WATCH_AFTER_S, watch)
    try:
        return True, await work
    except asyncio.CancelledError:
        if not watchers or not watchers[0].done() or watchers[0].cancelled():
            raise  # cancelled by the server (shutdown), not by the client
        task.uncancel()
        return False, None
    finally:
        timer.cancel()
        for watcher in watchers:
            watcher.cancel()


async def _serve(request: Request, dialect: Dialect | None) -> Response:
    """Admit, read, parse (by ``dialect``; None: OpenAI's or Tabby's, by the body), serve."""
    started = time.perf_counter()
    state = _state(request)
    caller = await state.admit(request.headers.get("authorization"))
    if isinstance(caller, GatewayError):
        return _error(state, caller)
    try:
        raw = await read_limited(
            request,
            limit=state.settings.max_body_bytes,
            timeout_s=state.settings.body_timeout_s,
        )
    except BodyTooLarge as exc:
        return _error(state, body_too_large(str(exc)))
    except BodyTooSlow as exc:
        return _error(state, body_too_slow(str(exc)))
    if dialect is None:
        dialect = TABBY if is_tabby(raw) else OPENAI
    parsed = dialect.parse(raw)
    if isinstance(parsed, GatewayError):
        return _error(state, parsed, shape=dialect.shape_error)
    if dialect.warmup is not None and dialect.warmup(parsed, raw):
        return Response(dialect.encode(warmup_body(dialect)), media_type="application/json")
    body = parsed
    user = caller.user_for(body.user)
    if isinstance(user, GatewayError):
        return _error(state, user, shape=dialect.shape_error)
    if user != body.user:
        body = body.model_copy(update={"user": user})
    if body.variant is not None:
        refused = caller.may_choose_variant()
        if refused is not None:
            return _error(state, refused)
    if body.model_extra:
        state.note_extra_fields(list(body.model_extra))
    service = state.service
    prepared = service.prepare(body, request_id=uuid.uuid4().hex, started=started)
    if isinstance(prepared, GatewayError):
        return _error(state, prepared, shape=dialect.shape_error)
    if body.stream:
        finished, events = await _cancel_on_disconnect(request, service.open_stream(prepared))
        if not finished or events is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if isinstance(events, GatewayError):
            return _error(state, events, prepared.headers(), dialect.shape_error)
        state.metrics.completions.labels("200").inc()
        return StreamingResponse(
            reshape_stream(dialect, events),
            media_type="text/event-stream",
            headers={**prepared.headers(), "Cache-Control": "no-cache"},
        )
    finished, result = await _cancel_on_disconnect(request, service.complete(prepared))
    if not finished or result is None:
        state.metrics.completions.labels(str(CLIENT_CLOSED_REQUEST)).inc()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(result, GatewayError):
        return _error(state, result, prepared.headers(), dialect.shape_error)
    state.metrics.completions.labels("200").inc()
    return Response(
        dialect.encode(dialect.shape(result)),
        media_type="application/json",
        headers=prepared.headers(),
    )


async def create_completion(request: Request) -> Response:
    """Complete the code at the cursor (OpenAI's completions API; arms in ``codelift``).

    Tabby's native body (``segments`` instead of ``prompt``) is served here too, in Tabby's
    response shape. A ``prompt`` already rendered with a fill-in-the-middle template (Continue,
    llm-ls) is split back into prefix and suffix rather than templated twice.
    """
    return await _serve(request, None)


async def create_fim_completion(request: Request) -> Response:
    """Mistral-style fill-in-the-middle (``prompt`` + ``suffix``), as Continue calls it."""
    return await _serve(request, FIM)


async def infill(request: Request) -> Response:
    """llama.cpp server's ``/infill`` (llama.vscode, llama.vim)."""
    return await _serve(request, INFILL)


async def generate(request: Request) -> Response:
    """text-generation-inference's ``/generate`` (llm-ls's TGI backend)."""
    return await _serve(request, TGI)


# Plain Starlette routes: FastAPI's parameter machinery has nothing to do for a raw body and
# cost a fifth of the gateway's time per request. The schemas are documented in main._openapi.
router.routes.extend(
    [
        Route("/v1/completions", create_completion, methods=["POST"]),
        Route("/v1/fim/completions", create_fim_completion, methods=["POST"]),
        Route("/infill", infill, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
    ]
)


def _error(
    state: GatewayState,
    error: GatewayError,
    headers: dict[str, str] | None = None,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    state.metrics.completions.labels(str(error.status)).inc()
    return error_response(error, headers, shape)


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS)
async def list_models(request: Request) -> Response:
    """The models and adapters the gateway's variants serve."""
    state = _state(request)
    caller = await state.admit(request.headers.get("authorization"))
    if isinstance(caller, GatewayError):
        return _error(state, caller)
    return Response(state.service.model_list().model_dump_json(), media_type="application/json")


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def retrieve_model(
    request: Request, model_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> Response:
    """One model or adapter the gateway's variants serve (``openai``'s ``models.retrieve``)."""
    state = _state(request)
    caller = await state.admit(request.headers.get("authorization"))
    if isinstance(caller, GatewayError):
        return _error(state, caller)
    card = state.service.models().get(model_id)
    if card is None:
        return _error(state, unknown_model(model_id))
    return Response(card.model_dump_json(), media_type="application/json")


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: latencies, statuses, and the events' fates and spool."""
    return Response(_state(request).metrics.exposition(), media_type="text/plain; version=0.0.4")
