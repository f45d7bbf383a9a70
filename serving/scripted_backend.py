"""A backend that answers from a script, not a model: for benchmarks and smoke tests.

It implements the ``Backend`` protocol for real (timing, streaming, cancellation, failures),
so the gateway's own cost can be measured without a model's: the benchmark's "fast backend".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from serving.backend import (
    BackendUnavailable,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
)

Reply = Callable[[GenerationRequest], str]


def _words(text: str) -> list[str]:
    # Pieces that keep their leading whitespace, so joining them gives the text back.
    pieces: list[str] = []
    start = 0
    for i in range(1, len(text)):
        if text[i].isspace() and not text[i - 1].isspace():
            pieces.append(text[start:i])
            start = i
    if text:
        pieces.append(text[start:])
    return pieces


class ScriptedBackend:
    """Answers ``reply(request)`` after ``delay_s``, streamed word by word ``token_delay_s`` apart.

    ``down`` makes every call fail as a down backend would. ``cancelled`` counts requests that
    were cancelled while in progress (a client disconnect reaches the backend as a cancel).
    """

    def __init__(
        self,
        reply: Reply | str = "pass",
        *,
        name: str = "scripted",
        delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        chars_per_token: int = 4,
        context_length: int | None = None,
    ) -> None:
        self.name = name
        self._context_length = context_length
        self._reply: Reply = (lambda _request: reply) if isinstance(reply, str) else reply
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self._chars_per_token = chars_per_token
        self.down = False
        self.requests: list[GenerationRequest] = []
        self.cancelled = 0
        self.closed = False

    @property
    def context_length(self) -> int | None:
        """The context it pretends to have (None: no limit)."""
        return self._context_length

    def count_tokens(self, text: str) -> int:
        """About one token per ``chars_per_token`` characters."""
        return -(-len(text) // self._chars_per_token)

    def _answer(self, request: GenerationRequest) -> tuple[str, str]:
        if self.down:
            raise BackendUnavailable(f"{self.name} is down", retry_after_s=2.0)
        self.requests.append(request)
        text = self._reply(request)
        for stop in request.stop:
            at = text.find(stop)
            if at >= 0:
                return text[:at], "stop"
        return text, "stop"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The scripted reply, after the configured delays."""
        started = time.perf_counter()
        text, reason = self._answer(request)
        try:
            delay = self.delay_s + self.token_delay_s * len(_words(text))
            if delay > 0:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return GenerationResult(
            text=text,
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=self.count_tokens(request.prompt),
            completion_tokens=self.count_tokens(text),
            backend_ms=(time.perf_counter() - started) * 1000,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The scripted reply word by word; the last chunk carries the finish reason."""
        text, reason = self._answer(request)
        try:
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            for piece in _words(text):
                if self.token_delay_s > 0:
                    await asyncio.sleep(self.token_delay_s)
                yield GenerationChunk(text=piece)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        yield GenerationChunk(
            text="",
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=self.count_tokens(request.prompt),
            completion_tokens=self.count_tokens(text),
        )

    async def aclose(self) -> None:
        """Nothing to release."""
        self.closed = True
