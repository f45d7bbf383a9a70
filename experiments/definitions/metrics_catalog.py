"""The metrics an experiment may name, so a typo is rejected when the experiment is defined.

Definitions are in docs/metrics.md; the SQL is ``experiments.analysis.metrics_sql`` (and
``quantiles_sql`` for latency quantiles), the statistics ``experiments.analysis.stats``.
``higher_is_better`` says which direction is a win, and so which side a guardrail's margin
guards. ``kind`` says how a user's data form the metric: ``ratio`` (Σm / Σd over users),
``mean`` (the mean of a per-user value) or ``quantile`` (a quantile of all events, with a
user-clustered interval). ``capping`` is the default cap of each user's contribution
(``experiments.definitions.capping``); an experiment may override it per metric.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from experiments.definitions.capping import DEFAULT_CAPPING, Capping

MetricKind = Literal["ratio", "mean", "quantile"]


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """One metric an experiment can be judged on."""

    name: str
    description: str
    higher_is_better: bool
    kind: MetricKind = "ratio"
    capping: Capping | None = DEFAULT_CAPPING


_METRICS = (
    MetricInfo("acceptance_rate", "accepted / shown suggestions", True),
    MetricInfo("acceptance_rate_chars", "accepted / shown characters", True),
    MetricInfo(
        "acceptance_per_opportunity",
        "accepted suggestions / served completions (not biased by how often a variant displays)",
        True,
    ),
    MetricInfo("pct_code_written", "accepted AI chars / (typed + accepted AI chars)", True),
    *(
        MetricInfo(f"cpr_{t}{suffix}", f"completion persistence at {t} s{label}", True)
        for t in (30, 120, 300, 600)
        for suffix, label in (("", ""), ("_chars", ", char-weighted"))
    ),
    MetricInfo(
        "latency_mean_per_completion",
        "mean gateway latency per served completion (ms): Σ latency / Σ served over users",
        False,
    ),
    *(
        MetricInfo(
            f"latency_p{q}",
            f"{q}th percentile gateway latency over served completions (ms)",
            False,
            kind="quantile",
            capping=None,
        )
        for q in (50, 95, 99)
    ),
    MetricInfo("error_rate", "failed / served completions", False),
    MetricInfo("display_rate", "shown / served completions", True),
    MetricInfo("suggestions_per_user", "shown suggestions per active user", True, kind="mean"),
)

METRICS: dict[str, MetricInfo] = {metric.name: metric for metric in _METRICS}
# Names that definitions stored before a metric was renamed may still use.
RENAMED = {"latency_mean": "latency_mean_per_completion"}
QUANTILES: dict[str, float] = {
    metric.name: int(metric.name.removeprefix("latency_p")) / 100
    for metric in _METRICS
    if metric.kind == "quantile"
}


def canonical_metric(name: str) -> str:
    """The catalog name of ``name`` (a renamed metric's old name gives its new one)."""
    return RENAMED.get(name, name)
