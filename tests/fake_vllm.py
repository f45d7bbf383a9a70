"""A stand-in for vLLM's OpenAI server, for the backend and fault tests (no model, no GPU)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse


def fake_vllm(delay_s: float = 0.0) -> tuple[FastAPI, list[dict[str, Any]]]:
    """Answers like vLLM's OpenAI server after ``delay_s``; ``model`` picks failures to play."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        if delay_s:
            await asyncio.sleep(delay_s)
        if body["model"] == "overloaded":
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "4"})
        if body["model"] == "missing":
            return JSONResponse({"message": "The model `missing` does not exist."}, 404)
        if body["model"] == "broken":
            return JSONResponse({"message": "bad"}, 400)
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        if not body["stream"]:
            choice = {"index": 0, "text": "    return 1", "finish_reason": "stop"}
            return JSONResponse({"choices": [choice], "usage": usage})

        async def events() -> Any:
            for piece in ("    ret", "urn", " 1"):
                chunk = {"choices": [{"index": 0, "text": piece, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            last = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
            yield f"data: {json.dumps(last)}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app, seen
