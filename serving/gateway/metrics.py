"""Prometheus metrics of the gateway, in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Completion latencies: fill-in-the-middle answers live between tens of ms and a few seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Per-arm latency (vLLM's own metrics are per base model), errors and dropped events."""

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
        self.events_dropped = Counter(
            "codelift_gateway_events_dropped",
            "completion_served events not delivered to the collector (queue full or gave up).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
