"""Prometheus metrics of the gateway, in a registry of the app's own."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.event_logger import EventLogger, EventLoggerCounts

# Completion latencies: fill-in-the-middle answers live between tens of ms and a few seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class _EventMetrics(Collector):
    """The event logger's counts and spool, read when /metrics is scraped (zeros before it
    starts, and when no collector is configured)."""

    def __init__(self) -> None:
        self.events: EventLogger | None = None

    def collect(self) -> Iterator[Metric]:
        events = self.events
        counts = events.counts if events is not None else EventLoggerCounts()
        yield CounterMetricFamily(
            "codelift_gateway_events_delivered",
            "Events the collector acknowledged (stored, or stored before).",
            value=counts.delivered,
        )
        rejected = CounterMetricFamily(
            "codelift_gateway_events_rejected",
            "Events the collector will not store, never retried: invalid (listed in its "
            "answer), conflict (the event_id holds another payload), refused (a 4xx for the "
            "whole batch).",
            labels=["reason"],
        )
        rejected.add_metric(["invalid"], counts.rejected_invalid)
        rejected.add_metric(["conflict"], counts.rejected_conflict)
        rejected.add_metric(["refused"], counts.rejected_refused)
        yield rejected
        yield CounterMetricFamily(
            "codelift_gateway_events_dropped",
            "Events lost before delivery: the in-memory buffer or the spool was full, or the "
            "disk failed.",
            value=counts.dropped,
        )
        yield CounterMetricFamily(
            "codelift_gateway_event_posts_failed",
            "POSTs to the collector without a usable answer (each one retried).",
            value=counts.failed_posts,
        )
        gauges = (
            ("spool_bytes", "Bytes the event spool holds on disk.", "spool_bytes"),
            ("spool_capacity_bytes", "The event spool's bound in bytes.", "spool_capacity_bytes"),
            ("spool_events", "Events in the spool not delivered yet.", "spool_events"),
        )
        for name, documentation, attribute in gauges:
            value = getattr(events, attribute) if events is not None else 0
            yield GaugeMetricFamily(f"codelift_gateway_event_{name}", documentation, value=value)
        yield GaugeMetricFamily(
            "codelift_gateway_event_spool_oldest_age_seconds",
            "How long the oldest undelivered event has waited in the spool (0 when empty).",
            value=events.oldest_age_s() if events is not None else 0.0,
        )


class GatewayMetrics:
    """Per-arm latency (vLLM's own metrics are per base model), errors and the events' fates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "codelift_gateway_latency_seconds",
            "Completion latency measured by the gateway, by arms and model.",
            ["arms", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "codelift_gateway_backend_latency_seconds",
            "Time spent in the backend, by arms and model.",
            ["arms", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.completions = Counter(
            "codelift_gateway_completions",
            "Completion requests answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self._events = _EventMetrics()
        self.registry.register(self._events)

    def watch_events(self, events: EventLogger) -> None:
        """Report ``events``' counts and spool from now on (one logger per app lifespan)."""
        self._events.events = events

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
