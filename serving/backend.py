"""What the gateway needs from an inference backend (vLLM, the local engine, …).

The gateway renders the fill-in-the-middle prompt and pins every decoding parameter itself, so a
backend only generates text from a prompt string. Backends report failures as exceptions of
``BackendError``'s family, which the gateway maps to OpenAI-style error responses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A rendered prompt and the arm's decoding parameters."""

    prompt: str
    model: str
    adapter: str | None
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationResult:
    """The generated text (stop strings removed) and what it cost."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Time spent in the backend, measured by the backend's client (ms).
    backend_ms: float


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of a streamed completion; the last chunk carries the finish reason."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BackendError(Exception):
    """A backend could not produce a completion."""


class BackendUnavailable(BackendError):
    """The backend is down or overloaded; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownModel(BackendError):
    """The backend does not serve the requested model or adapter."""


class Backend(Protocol):
    """An inference backend: text in, text out; cancelled when the awaiting task is."""

    name: str

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole completion."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The completion as it is generated."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this backend's model (for the context budget)."""
        ...

    @property
    def context_length(self) -> int | None:
        """Tokens the model's context holds, prompt and completion together; None when the
        server enforces its own limit (vLLM's ``--max-model-len``)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and memory."""
        ...
