"""Reading a request body without ever holding more than the configured limit."""

from __future__ import annotations

from fastapi import Request

from collector.errors import BodyTimeout, CollectorError, InvalidBody, PayloadTooLarge
from core.request_body import BodyTooLarge, BodyTooSlow, read_limited


class UnsupportedMediaType(CollectorError):
    """The body is declared as something other than JSON."""

    status = 415
    code = "unsupported_media_type"


async def read_json_body(request: Request, *, limit: int, timeout_s: float) -> bytes:
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
    if declared is not None and not declared.isdigit():
        raise InvalidBody("Content-Length must be a number of bytes", field="Content-Length")
    try:
        return await read_limited(request, limit=limit, timeout_s=timeout_s)
    except BodyTooLarge as exc:
        raise PayloadTooLarge(str(exc), field="body") from None
    except BodyTooSlow as exc:
        raise BodyTimeout(str(exc), field="body") from None
