"""The collector's own errors; each maps to one HTTP response in ``main.py``."""

from __future__ import annotations


class CollectorError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidBody(CollectorError):
    """The body is not JSON, or not a batch at all; nothing in it was stored."""

    status = 400
    code = "invalid_body"


class InvalidBatch(CollectorError):
    """The body is JSON but not of the batch's shape; nothing in it was stored."""

    status = 422
    code = "invalid_batch"


class PayloadTooLarge(CollectorError):
    """Too many bytes or too many events in one batch."""

    status = 413
    code = "payload_too_large"


class BodyTimeout(CollectorError):
    """The body did not arrive in full in time; nothing in it was stored."""

    status = 408
    code = "body_timeout"


class DatabaseUnavailable(CollectorError):
    """The database cannot be reached; the client should retry after ``Retry-After``."""

    status = 503
    code = "database_unavailable"


class RateLimited(CollectorError):
    """The key sent more batches than its rate limit allows; retry after ``retry_after_s``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, field="Authorization")
        self.retry_after_s = retry_after_s
