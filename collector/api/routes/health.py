"""Liveness, readiness and metrics."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool

from collector.api.deps import MetricsDep, SettingsDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable"}})
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """The database answers; 503 with Retry-After when it does not."""
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=settings.db_timeout_s) as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(collector_metrics: MetricsDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(collector_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
