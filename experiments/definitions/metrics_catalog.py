"""The metrics an experiment may name, so a typo is rejected when the experiment is defined.

Definitions are in docs/metrics.md; the SQL is ``experiments.analysis.metrics_sql``, the
statistics ``experiments.analysis.stats``. ``higher_is_better`` says which direction is a win,
and so which side a guardrail's margin guards.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """One metric an experiment can be judged on."""

    name: str
    description: str
    higher_is_better: bool


_METRICS = (
    MetricInfo("acceptance_rate", "accepted / shown suggestions", True),
    MetricInfo("acceptance_rate_chars", "accepted / shown characters", True),
    MetricInfo("pct_code_written", "accepted AI chars / (typed + accepted AI chars)", True),
    *(
        MetricInfo(f"cpr_{t}{suffix}", f"completion persistence at {t} s{label}", True)
        for t in (30, 120, 300, 600)
        for suffix, label in (("", ""), ("_chars", ", char-weighted"))
    ),
    MetricInfo("latency_mean", "per-user mean gateway latency (ms)", False),
    MetricInfo("latency_p95", "95th percentile gateway latency (ms)", False),
    MetricInfo("error_rate", "failed / served completions", False),
    MetricInfo("display_rate", "shown / served completions", True),
    MetricInfo("suggestions_per_user", "shown suggestions per active user", True),
)

METRICS: dict[str, MetricInfo] = {metric.name: metric for metric in _METRICS}
