"""Reading a request body without ever holding more than a limit, or waiting on a client that
sends it too slowly (collector and gateway)."""

from __future__ import annotations

import asyncio
import dataclasses

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

# The floor on a body's average rate once its grace has passed. Any real link beats it a
# hundredfold (a 100 kB batch at 1 KiB/s takes 100 s, past every body timeout anyway); a client
# trickling a byte a second is refused after the grace instead of after the whole timeout.
DEFAULT_MIN_BYTES_PER_S = 1024.0
# How long a body may make no progress at first (TCP slow start, a client's GC pause).
DEFAULT_GRACE_S = 2.0


class BodyTooLarge(Exception):
    """The body passed the limit; ``declared`` is its Content-Length when that said so."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = f"body is {declared} bytes" if declared is not None else "body exceeds the limit"
        super().__init__(f"{size}; the limit is {limit} bytes")
        self.limit = limit
        self.declared = declared


class BodyTooSlow(Exception):
    """The body did not arrive in full within the time allowed, or arrived too slowly."""

    def __init__(self, timeout_s: float, message: str | None = None) -> None:
        super().__init__(message or f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


class ClientGone(Exception):
    """The client disconnected before its body arrived in full."""


@dataclasses.dataclass(frozen=True, slots=True)
class BodyLimits:
    """How big a body may be, and how slowly it may arrive."""

    max_bytes: int
    # The whole body must have arrived by then, whatever its rate.
    timeout_s: float
    # After ``grace_s``, at least this many bytes per second on average since reading began;
    # 0 turns the floor off.
    min_bytes_per_s: float = DEFAULT_MIN_BYTES_PER_S
    grace_s: float = DEFAULT_GRACE_S


async def receive_body(receive: Receive, *, declared: str | None, limits: BodyLimits) -> bytes:
    """The whole body from ASGI ``receive``; ``declared`` is its Content-Length header.

    Refused (BodyTooLarge) as soon as it passes ``limits.max_bytes`` by Content-Length or by
    counting a chunked body, so an oversized request never sits whole in memory. Refused
    (BodyTooSlow) once it falls under the rate floor or passes the timeout: a client trickling
    its body would otherwise hold what the server keeps for it for as long as it likes. Raises
    ClientGone if the client disconnects first. A Content-Length that is not a number is left to
    the server, which refuses it.
    """
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise BodyTooLarge(limits.max_bytes, int(declared))
    loop = asyncio.get_running_loop()
    started = loop.time()
    hard = started + limits.timeout_s

    def deadline(size: int) -> float:
        # Under the floor once fewer than min_bytes_per_s * (elapsed - grace) bytes arrived.
        if limits.min_bytes_per_s <= 0:
            return hard
        return min(hard, started + limits.grace_s + size / limits.min_bytes_per_s)

    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline(0)) as window:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limits.max_bytes:
                    raise BodyTooLarge(limits.max_bytes)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                window.reschedule(deadline(size))
    except TimeoutError:
        if loop.time() >= hard:
            raise BodyTooSlow(limits.timeout_s) from None
        raise BodyTooSlow(
            limits.timeout_s,
            f"the request body arrived at under {limits.min_bytes_per_s:g} bytes/s "
            f"({size} bytes in {loop.time() - started:.1f} s)",
        ) from None
    return b"".join(chunks)


async def read_limited(
    request: Request,
    *,
    limit: int,
    timeout_s: float,
    min_bytes_per_s: float = DEFAULT_MIN_BYTES_PER_S,
    grace_s: float = DEFAULT_GRACE_S,
) -> bytes:
    """The raw body of ``request`` under ``receive_body``'s limits; a client that goes away
    raises Starlette's ClientDisconnect, as ``request.body()`` would."""
    limits = BodyLimits(limit, timeout_s, min_bytes_per_s, grace_s)
    try:
        return await receive_body(
            request.receive, declared=request.headers.get("content-length"), limits=limits
        )
    except ClientGone:
        raise ClientDisconnect from None
