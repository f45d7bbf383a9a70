"""Prometheus metrics of the collector, in a registry of the app's own (no import-time state).

With several worker processes, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the launcher before the workers start) merges every worker's figures on /metrics.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


class CollectorMetrics:
    """The collector's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "codelift_collector_events",
            "Events received, by type and result (stored, duplicate, conflict, rejected).",
            ["type", "result"],
            registry=self.registry,
        )
        # The raw values are never a label: clients choose them, and every new label value is a
        # new series. Which values they were is for the client's own logs, not for Prometheus.
        self.other_languages = Counter(
            "codelift_collector_other_languages",
            "Valid events received whose language named no known language (stored as 'other'), "
            "by event type.",
            ["type"],
            registry=self.registry,
        )
        self.batches = Counter(
            "codelift_collector_batches",
            "Batches answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.write_retries = Counter(
            "codelift_collector_write_retries",
            "Batch writes retried after a transient conflict between writers, by error.",
            ["error"],
            registry=self.registry,
        )
        self.key_lookups = Counter(
            "codelift_collector_key_lookups",
            "API keys looked up in the database (query), or refused unasked because too many "
            "unknown keys were being checked (throttled).",
            ["outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "codelift_collector_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text format of every metric, merged across worker processes if there are several."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
