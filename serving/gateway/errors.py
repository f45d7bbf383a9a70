"""Errors as values, and the one place they become OpenAI-style error responses."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.responses import Response

from collector.schemas import NO_NUL, NUL_REASON
from core.auth.verify import AuthError


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayError:
    """A request the gateway could not serve: the HTTP status and OpenAI's error fields."""

    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after_s: float | None = None

    def body(self) -> dict[str, object]:
        """OpenAI's error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None) -> GatewayError:
    """400: the request is malformed; ``param`` names the field."""
    return GatewayError(400, "invalid_request_error", message, param=param, code="invalid_value")


def from_validation_error(exc: ValidationError) -> GatewayError:
    """400 naming the first invalid field of a request body."""
    errors = exc.errors(include_url=False)
    if not errors:
        return bad_request("invalid request body")
    first = errors[0]
    # Union members add their type to the location (("prompt", "str")): the field is the first.
    # Of one field's errors the deepest is the one that matched the input's shape: a list of
    # stops with an empty item fails as "not a string" too, but the item is what is wrong.
    same_field = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    # A union member's type mismatch ("should be a valid string") says least of all.
    first = max(same_field, key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
    param = str(first["loc"][0]) if first["loc"] else None
    if first["type"] == "json_invalid":
        return bad_request(f"request body is not valid JSON: {first['msg']}")
    if first["type"] == "missing":
        return bad_request(f"{param} is required", param=param)
    return bad_request(f"{param}: {_problem(first)}", param=param)


def _problem(error: ErrorDetails) -> str:
    """What is wrong with a field, in words a client can act on."""
    context = error.get("ctx", {})
    if error["type"] == "string_pattern_mismatch" and context.get("pattern") == NO_NUL:
        return NUL_REASON
    if error["type"] == "string_too_short" and context.get("min_length") == 1:
        # Fields that logged events carry are stripped first: "   " is as empty as "".
        return "must not be empty or blank"
    if error["type"] == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return error["msg"]


def body_too_large(message: str) -> GatewayError:
    """413: the request body is over the gateway's limit."""
    return GatewayError(413, "invalid_request_error", message, code="body_too_large")


def body_too_slow(message: str) -> GatewayError:
    """408: the request body did not arrive in full in time."""
    return GatewayError(408, "invalid_request_error", message, code="body_timeout")


def from_auth_error(exc: AuthError) -> GatewayError:
    """401 (no or unknown key) or 403 (revoked, or lacks the serve scope)."""
    if exc.status == 401:
        return GatewayError(401, "authentication_error", exc.message, code="invalid_api_key")
    return GatewayError(403, "permission_error", exc.message, code="forbidden")


def forbidden(message: str, *, param: str | None = None) -> GatewayError:
    """403: the key may not do what the request asks; ``param`` names the field."""
    return GatewayError(403, "permission_error", message, param=param, code="forbidden")


def unknown_model(model: str) -> GatewayError:
    """404: no variant serves ``model``."""
    return GatewayError(
        404,
        "invalid_request_error",
        f"the model {model!r} does not exist; GET /v1/models lists the models served",
        param="model",
        code="model_not_found",
    )


def rate_limited(retry_after_s: float) -> GatewayError:
    """429: the key is over its request rate."""
    return GatewayError(
        429,
        "rate_limit_error",
        "rate limit exceeded for this API key; retry later",
        code="rate_limit_exceeded",
        retry_after_s=retry_after_s,
    )


def backend_unavailable(message: str, retry_after_s: float) -> GatewayError:
    """503: the backend is down or overloaded."""
    return GatewayError(
        503, "server_error", message, code="backend_unavailable", retry_after_s=retry_after_s
    )


def overloaded(limit: int, retry_after_s: float) -> GatewayError:
    """503: the gateway already has ``limit`` completions in progress (load shedding)."""
    return GatewayError(
        503,
        "server_error",
        f"the gateway is at its limit of {limit} completions in progress; retry later",
        code="overloaded",
        retry_after_s=retry_after_s,
    )


def backend_failed(message: str) -> GatewayError:
    """502: the backend answered with an error."""
    return GatewayError(502, "server_error", message, code="backend_error")


def error_response(
    error: GatewayError,
    headers: dict[str, str] | None = None,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """The HTTP response for ``error``: OpenAI's body (or ``shape`` of it, a client's own
    error shape), Retry-After and WWW-Authenticate."""
    all_headers = dict(headers or {})
    if error.retry_after_s is not None:
        all_headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if error.status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    body = error.body()
    return Response(
        json.dumps(body if shape is None else shape(body)),
        status_code=error.status,
        headers=all_headers,
        media_type="application/json",
    )
