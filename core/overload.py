"""Explicit load shedding for the HTTP services: a bound on the requests in progress.

Past the bound a request is refused at once (503 with ``Retry-After``) instead of waiting in a
queue: a queue that grows under overload turns into client timeouts and unbounded memory, while
a quick refusal costs almost nothing and tells a well-behaved client when to come back.

A slot is for work, not for waiting on a client. With ``BodyFirst`` a request's key is checked
and its body read in full before it may take a slot, under a budget of its own (bounded in
total and per key, each body under a rate floor): 32 clients trickling their bodies used to
hold all 32 slots of a collector for the whole body timeout, refusing everyone else.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable, Hashable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.request_body import BodyLimits, BodyTooLarge, BodyTooSlow, ClientGone, receive_body

# Bodies being read at once per process, and the share one key may hold. A reader holds the
# bytes received so far (at most the body limit) for at most the body timeout. Half per key, so
# that one key (one client's, or a whole fleet's) can never take every reader from the others.
DEFAULT_READERS = 128
DEFAULT_READERS_PER_KEY = 64


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


class Busy(enum.Enum):
    """Why a ``KeyedLimit`` refused: the key's share is taken, or every place is."""

    KEY = "key"
    ALL = "all"


class KeyedLimit:
    """At most ``total`` holders at once, at most ``per_key`` of them with the same key."""

    def __init__(self, total: int, per_key: int) -> None:
        if not 1 <= per_key <= total:
            raise ValueError(f"need 1 <= per_key <= total, got {per_key} and {total}")
        self.total = total
        self.per_key = per_key
        self.held = 0
        self.peak = 0
        self.refused = 0
        self._by_key: dict[Hashable, int] = {}

    def try_enter(self, key: Hashable) -> Busy | None:
        """Take a place for ``key``; None when taken, else why not (counted as refused)."""
        mine = self._by_key.get(key, 0)
        busy = Busy.KEY if mine >= self.per_key else Busy.ALL if self.held >= self.total else None
        if busy is not None:
            self.refused += 1
            return busy
        self._by_key[key] = mine + 1
        self.held += 1
        self.peak = max(self.peak, self.held)
        return None

    def leave(self, key: Hashable) -> None:
        """Give ``key``'s place back."""
        self.held -= 1
        mine = self._by_key[key] - 1
        if mine:
            self._by_key[key] = mine
        else:
            del self._by_key[key]


class ReadersBusy(Exception):
    """No place to read the body: the key's share of readers is taken, or all of them are."""

    def __init__(self, busy: Busy) -> None:
        which = "this API key's share of" if busy is Busy.KEY else "all"
        super().__init__(f"{which} the request bodies being read at once; retry later")
        self.busy = busy


# The exceptions ``BodyFirst.refuse`` is given, for a service to answer in its own format.
BodyRefusal = BodyTooLarge | BodyTooSlow | ReadersBusy


@dataclasses.dataclass(frozen=True, slots=True)
class BodyFirst:
    """How ``LoadShedder`` admits a request before it may take a slot.

    ``identify`` checks the request's credentials and returns the key its body is read under,
    or None to hand the request to the app at once, without reading its body or taking a slot:
    the app then refuses it (an unknown key, a rate limit) without reading the body either.
    """

    identify: Callable[[Scope], Awaitable[Hashable | None]]
    readers: KeyedLimit
    limits: BodyLimits
    refuse: Callable[[BodyRefusal], Response]


class LoadShedder:
    """Pure ASGI middleware: requests to ``paths`` beyond ``limit`` get ``refuse()`` at once.

    A slot is held until the response is sent in full, streamed responses included, so the
    bound covers everything a request keeps in memory. With ``body`` the request is admitted
    and its body read first (see ``BodyFirst``); the app then receives the body from memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: InFlightLimit,
        paths: frozenset[str],
        refuse: Callable[[], Response],
        body: BodyFirst | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = paths
        self.refuse = refuse
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.body is not None:
            key = await self.body.identify(scope)
            if key is None:
                await self.app(scope, receive, send)
                return
            read = await self._read(self.body, key, scope, receive)
            if isinstance(read, Response):
                await read(scope, receive, send)
                return
            if read is None:
                return  # the client went away
            receive = _replay(read, receive)
        if not self.limit.try_enter():
            await self.refuse()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limit.leave()

    @staticmethod
    async def _read(
        gate: BodyFirst, key: Hashable, scope: Scope, receive: Receive
    ) -> bytes | Response | None:
        busy = gate.readers.try_enter(key)
        if busy is not None:
            return gate.refuse(ReadersBusy(busy))
        try:
            return await receive_body(
                receive, declared=header(scope, b"content-length"), limits=gate.limits
            )
        except BodyTooLarge as exc:
            return gate.refuse(exc)
        except BodyTooSlow as exc:
            response = gate.refuse(exc)
            # The rest of a body this slow is not worth waiting for; nor is the connection.
            response.headers["connection"] = "close"
            return response
        except ClientGone:
            return None
        finally:
            gate.readers.leave(key)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body already read, then the client's own messages."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) of an ASGI HTTP ``scope``."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
