"""Reading a request body without ever holding more than the configured limit."""

from __future__ import annotations

from fastapi import Request

from collector.errors import CollectorError, InvalidBody, PayloadTooLarge


class UnsupportedMediaType(CollectorError):
    """The body is declared as something other than JSON."""

    status = 415
    code = "unsupported_media_type"


async def read_json_body(request: Request, *, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type!r}", field="Content-Type"
        )
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType(
            "Content-Encoding is not supported; send the body uncompressed",
            field="Content-Encoding",
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidBody("Content-Length must be a number of bytes", field="Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)
