"""Reading a request body without ever holding more than the configured limit."""

from __future__ import annotations

from fastapi import Request

from collector.config import CollectorSettings
from collector.errors import BodyTimeout, CollectorError, InvalidBody, PayloadTooLarge
from core.request_body import BodyLimits, BodyTooLarge, BodyTooSlow, read_limited


class UnsupportedMediaType(CollectorError):
    """The body is declared as something other than JSON."""

    status = 415
    code = "unsupported_media_type"


def body_limits(settings: CollectorSettings) -> BodyLimits:
    """How big a batch's body may be and how slowly it may arrive, for ``settings``."""
    return BodyLimits(
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        min_bytes_per_s=settings.body_min_bytes_per_s,
        grace_s=settings.body_grace_s,
    )


async def read_json_body(request: Request, *, limits: BodyLimits) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limits.max_bytes`` bytes, and
    with 408 when it arrives too slowly (usually read already, see ``core.overload``)."""
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
        return await read_limited(
            request,
            limit=limits.max_bytes,
            timeout_s=limits.timeout_s,
            min_bytes_per_s=limits.min_bytes_per_s,
            grace_s=limits.grace_s,
        )
    except BodyTooLarge as exc:
        raise PayloadTooLarge(str(exc), field="body") from None
    except BodyTooSlow as exc:
        raise BodyTimeout(str(exc), field="body") from None
