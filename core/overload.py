"""Explicit load shedding for the HTTP services: a bound on the requests in progress.

Past the bound a request is refused at once (503 with ``Retry-After``) instead of waiting in a
queue: a queue that grows under overload turns into client timeouts and unbounded memory, while
a quick refusal costs almost nothing and tells a well-behaved client when to come back. The
bound also caps memory: at most ``limit`` request bodies are held at once.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


class InFlightLimit:
    """Counts the requests in progress on one event loop; no lock is needed there."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.refused = 0

    def try_enter(self) -> bool:
        """Take a slot; False (and counted as refused) when every slot is taken."""
        if self.in_flight >= self.limit:
            self.refused += 1
            return False
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return True

    def leave(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1


class LoadShedder:
    """Pure ASGI middleware: requests to ``paths`` beyond ``limit`` get ``refuse()`` at once.

    A slot is held until the response is sent in full, streamed responses included, so the
    bound covers everything a request keeps in memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: InFlightLimit,
        paths: frozenset[str],
        refuse: Callable[[], Response],
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = paths
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if not self.limit.try_enter():
            await self.refuse()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limit.leave()
