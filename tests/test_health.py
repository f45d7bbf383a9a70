"""Liveness, readiness and Prometheus metrics of a running collector."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import factories


def metric_samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def events_total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], event_type: str, result: str
) -> float:
    """The codelift_collector_events_total sample for one type and result (0 if absent)."""
    key = ("codelift_collector_events_total", (("result", result), ("type", event_type)))
    return samples.get(key, 0.0)


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def test_readyz_when_the_database_answers(http: httpx.Client) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_metrics_count_events_by_type_and_result(client: httpx.Client) -> None:
    before = metric_samples(client)
    shown = factories.suggestion_shown()
    outcome = factories.suggestion_outcome()
    bad = factories.suggestion_shown(chars=-1)
    first = client.post("/v1/events", json=factories.batch(shown, outcome, bad))
    assert first.status_code == 200
    assert first.json()["stored"] == 2
    again = client.post("/v1/events", json=factories.batch(shown))
    assert again.json()["duplicates"] == 1
    unknown = client.post("/v1/events", json=factories.batch({"type": "nope"}))
    assert unknown.status_code == 422

    after = metric_samples(client)
    expected = {
        ("suggestion_shown", "stored"): 1,
        ("suggestion_shown", "duplicate"): 1,
        ("suggestion_shown", "rejected"): 1,
        ("suggestion_outcome", "stored"): 1,
        ("suggestion_outcome", "duplicate"): 0,
        ("suggestion_outcome", "rejected"): 0,
        ("unknown", "rejected"): 1,
    }
    for (event_type, result), increase in expected.items():
        delta = events_total(after, event_type, result) - events_total(before, event_type, result)
        assert delta == increase, (event_type, result)


def test_metrics_time_requests_by_route(client: httpx.Client) -> None:
    client.get("/healthz")
    client.get("/no-such-page")
    samples = metric_samples(client)
    counts = {
        dict(labels)["route"]: value
        for (name, labels), value in samples.items()
        if name == "codelift_collector_request_seconds_count"
    }
    assert counts["/healthz"] >= 1
    # Unknown paths share one label, so scanners cannot grow the metric without bound.
    assert counts["other"] >= 1
    assert "/no-such-page" not in counts
    assert any(
        name == "codelift_collector_request_seconds_bucket" and dict(labels)["route"] == "/healthz"
        for name, labels in samples
    )


def test_request_id_differs_per_response(http: httpx.Client) -> None:
    ids = {http.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
