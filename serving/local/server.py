"""The local engine as its own OpenAI-compatible server: ``POST /v1/completions`` (prompt → text).

No FIM rendering happens here: the prompt is used as it is, as vLLM does, so the gateway treats
this server like a vLLM deployment. Run ``python -m serving.local.server --port 8001``.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.backend import (
    BackendError,
    BackendUnavailable,
    GenerationRequest,
    UnknownModel,
)
from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine


class CompletionRequest(BaseModel):
    """The subset of OpenAI's completion request the engine honours (other fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str
    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    suffix: str | None = None


def engine_dep(request: Request) -> LocalEngine:
    """The engine the lifespan loaded."""
    engine: LocalEngine = request.app.state.engine
    return engine


EngineDep = Annotated[LocalEngine, Depends(engine_dep)]


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Any:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    checkpoint: Path = DEFAULT_CHECKPOINT,
    *,
    max_batch: int = 8,
    threads: int = 2,
    adapter_paths: Sequence[Path] = (),
) -> FastAPI:
    """The app; the engine is loaded in the lifespan and kept on ``app.state``.

    As with vLLM's multi-LoRA serving, a request names an adapter in ``model``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = LocalEngine.load(
            checkpoint, max_batch=max_batch, threads=threads, adapter_paths=adapter_paths
        )
        try:
            yield
        finally:
            await app.state.engine.aclose()

    app = FastAPI(title="CodeLift local engine", lifespan=lifespan)

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> Any:
        if isinstance(exc, UnknownModel):
            return _error(404, str(exc), "model_not_found")
        if isinstance(exc, BackendUnavailable):
            retry = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
            return _error(503, str(exc), "overloaded", retry)
        return _error(400, str(exc), "invalid_request")

    @app.get("/health")
    async def health(engine: EngineDep) -> dict[str, Any]:
        """Liveness and the engine's queue."""
        stats = engine.stats()
        return {"status": "ok", "running": stats.running, "waiting": stats.waiting}

    @app.get("/v1/models")
    async def models(engine: EngineDep) -> dict[str, Any]:
        """The base model and its LoRA adapters (``parent`` names the base)."""
        card = {"object": "model", "owned_by": "codelift", "max_model_len": engine.context_length}
        base = card | {"id": engine.model_name, "root": engine.model_name, "parent": None}
        adapters = [
            card | {"id": name, "root": engine.model_name, "parent": engine.model_name}
            for name in engine.adapter_names
        ]
        return {"object": "list", "data": [base, *adapters]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, engine: EngineDep) -> Any:
        """Complete ``prompt`` as given (no FIM rendering; ``suffix`` is rejected)."""
        if body.suffix:
            raise BackendError("suffix is not supported: render the FIM prompt into `prompt`")
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        request = GenerationRequest(
            prompt=body.prompt,
            model=engine.model_name if body.model in engine.adapter_names else body.model,
            adapter=body.model if body.model in engine.adapter_names else None,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=stop,
            seed=body.seed,
        )
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        base = {"id": completion_id, "object": "text_completion", "created": created}
        base["model"] = body.model
        if not body.stream:
            result = await engine.generate(request)
            choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason}
            usage = {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
            return base | {"choices": [choice | {"logprobs": None}], "usage": usage}
        chunks = engine.stream(request)
        # Pull the first chunk here so that a rejected request is an HTTP error, not a stream.
        first = await anext(chunks)

        async def events() -> AsyncIterator[str]:
            try:
                chunk = first
                while True:
                    choice = {"index": 0, "text": chunk.text, "logprobs": None}
                    choice["finish_reason"] = chunk.finish_reason
                    yield f"data: {json.dumps(base | {'choices': [choice]})}\n\n"
                    if chunk.finish_reason is not None:
                        break
                    chunk = await anext(chunks)
                yield "data: [DONE]\n\n"
            finally:
                await chunks.aclose()  # the client went away: the request leaves the batch

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--adapter", type=Path, action="append", default=[], help="extra adapter directory"
    )
    args = parser.parse_args(argv)
    app = create_app(
        args.checkpoint, max_batch=args.max_batch, threads=args.threads, adapter_paths=args.adapter
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
