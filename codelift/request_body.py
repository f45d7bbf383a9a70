"""Reading a request body without ever holding more than a limit (collector and gateway)."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body passed the limit; ``declared`` is its Content-Length when that said so."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = f"body is {declared} bytes" if declared is not None else "body exceeds the limit"
        super().__init__(f"{size}; the limit is {limit} bytes")
        self.limit = limit
        self.declared = declared


async def read_limited(request: Request, *, limit: int) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes (by Content-Length or by
    counting a chunked body), so an oversized request never sits whole in memory.

    A Content-Length that is not a number is left to the server, which refuses it first.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
