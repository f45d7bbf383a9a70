"""A completion request that passed every check, ready for its backend; small helpers of the
responses built from it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from experiments.variants import Variant
from serving.backend import Backend, GenerationRequest
from serving.gateway.protocol import CompletionRequest
from serving.postprocess import Processed


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A request that passed every check, ready for its backend."""

    request: CompletionRequest
    request_id: str
    suggestion_id: str
    started: float
    variant: Variant
    arms: dict[str, str]
    arms_header: str
    backend: Backend
    generation: GenerationRequest
    prefix: str
    suffix: str
    prompt_tokens: int
    # The time logged events carry: the request's client_ts when trusted, else None (now).
    event_time: dt.datetime | None = None

    @property
    def response_model(self) -> str:
        """The model name a response reports: the adapter when there is one."""
        return self.variant.adapter or self.variant.model

    def headers(self) -> dict[str, str]:
        """Response headers: the arms and the request id."""
        return {"X-CodeLift-Arms": self.arms_header, "X-Request-Id": self.request_id}


def arms_header(arms: Mapping[str, str]) -> str:
    """``exp=arm;exp2=arm2``, as the X-CodeLift-Arms header carries them."""
    return ";".join(f"{experiment}={arm}" for experiment, arm in arms.items())


def line_count(text: str) -> int:
    """Lines in a completion's text (none for an empty one)."""
    return text.count("\n") + 1 if text else 0


def openai_finish_reason(processed: Processed, backend_reason: str) -> str:
    """The OpenAI finish reason: post-processing that cut the text means the text stopped."""
    if processed.stopped or processed.trimmed or processed.dropped:
        return "stop"
    return backend_reason if backend_reason in ("stop", "length") else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def chunk_event(prepared: Prepared, created: int, text: str, finish: str | None) -> bytes:
    """One streamed chunk (server-sent event); the last one (a finish reason) carries the arms."""
    body: dict[str, Any] = {
        "id": prepared.suggestion_id,
        "object": "text_completion",
        "created": created,
        "model": prepared.response_model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
    if finish is not None:
        body["codelift"] = {
            "suggestion_id": prepared.suggestion_id,
            "request_id": prepared.request_id,
            "arms": prepared.arms,
            "model": prepared.variant.model,
            "adapter": prepared.variant.adapter,
        }
    return _event(body)


def usage_event(prepared: Prepared, created: int, counts: dict[str, int]) -> bytes:
    """OpenAI's last chunk with ``stream_options.include_usage``: no choices, the usage."""
    return _event(
        {
            "id": prepared.suggestion_id,
            "object": "text_completion",
            "created": created,
            "model": prepared.response_model,
            "choices": [],
            "usage": counts,
        }
    )
