"""A completion request that passed every check, ready for its backend; small helpers of the
responses built from it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

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
