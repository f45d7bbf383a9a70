"""POST /v1/events: the batch endpoint IDE plugins send telemetry to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from collector.api.body import body_limits, read_json_body
from collector.api.deps import IngestPrincipal, IngestServiceDep, MetricsDep, SettingsDep
from collector.schemas import ErrorResponse, EventBatch, IngestResult

router = APIRouter()

_ERROR: dict[str, Any] = {"model": ErrorResponse, "description": "Error"}
_REFS = "#/components/schemas/{}"
# A 422 is either the per-event answer (every event rejected) or an error (not a batch at all).
_UNPROCESSABLE: dict[str, Any] = {
    "description": "Every event was rejected, or the body is not a batch",
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": _REFS.format(IngestResult.__name__)},
                    {"$ref": _REFS.format(ErrorResponse.__name__)},
                ]
            }
        }
    },
}

_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{EventBatch.__name__}"}}
        },
    }
}


@router.post(
    "/v1/events",
    response_model=IngestResult,
    openapi_extra=_DOCS,
    responses={
        400: _ERROR,
        401: _ERROR,
        403: _ERROR,
        408: _ERROR,
        413: _ERROR,
        415: _ERROR,
        429: _ERROR,
        422: _UNPROCESSABLE,
        503: _ERROR,
    },
)
async def ingest_events(
    request: Request,
    _principal: IngestPrincipal,
    settings: SettingsDep,
    ingest: IngestServiceDep,
    metrics: MetricsDep,
) -> JSONResponse:
    """Store a batch of events; the valid ones are kept even when others are rejected.

    Idempotent on each event's ``event_id``: a retried batch is stored once, and the answer
    counts the repeats as ``duplicates``. The answer is 422 only when every event was rejected.
    """
    body = await read_json_body(request, limits=body_limits(settings))
    result = await ingest.ingest(body)
    status = (
        422
        if result.received and len({r.index for r in result.rejected}) == result.received
        else 200
    )
    metrics.batches.labels(str(status)).inc()
    return JSONResponse(result.model_dump(mode="json"), status_code=status)
