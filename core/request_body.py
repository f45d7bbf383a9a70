"""Reading a request body without ever holding more than a limit (collector and gateway)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body passed the limit; ``declared`` is its Content-Length when that said so."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = f"body is {declared} bytes" if declared is not None else "body exceeds the limit"
        super().__init__(f"{size}; the limit is {limit} bytes")
        self.limit = limit
        self.declared = declared


class BodyTooSlow(Exception):
    """The body did not arrive in full within the time allowed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


async def read_limited(request: Request, *, limit: int, timeout_s: float) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes (by Content-Length or by
    counting a chunked body), so an oversized request never sits whole in memory.

    A body still arriving after ``timeout_s`` is refused too: a client trickling its body
    would otherwise hold one of the few in-flight slots (``core.overload``) for as long as
    it likes. A Content-Length that is not a number is left to the server, which refuses it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow(timeout_s) from None
    return b"".join(chunks)
