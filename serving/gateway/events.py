"""The gateway's event logger, made from its settings and reported by its metrics."""

from __future__ import annotations

import httpx

from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.metrics import GatewayMetrics


def make_event_logger(
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> EventLogger:
    """The logger of ``settings.collector_url`` (disabled when unset), watched by ``metrics``."""
    events = EventLogger(
        settings.collector_url,
        settings.ingest_key,
        spool_root=settings.event_spool_root,
        spool_max_bytes=settings.event_spool_max_bytes,
        fsync_interval_s=settings.event_spool_fsync_interval_s,
        queue_size=settings.event_queue_size,
        batch_size=settings.event_batch_size,
        batch_max_bytes=settings.event_batch_max_bytes,
        flush_interval_s=settings.event_flush_interval_s,
        timeout_s=settings.event_timeout_s,
        backoff_s=settings.event_backoff_s,
        max_backoff_s=settings.event_max_backoff_s,
        transport=transport,
    )
    metrics.watch_events(events)
    return events
