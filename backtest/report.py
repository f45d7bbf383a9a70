"""A backtest as a terminal table or as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from backtest.runner import METRICS, SummaryRow
from experiments.analysis.report_table import aligned
from experiments.analysis.stats.results import Interval

_LABELS = {metric.name: metric.label for metric in METRICS}
_LOWER_IS_BETTER = {metric.name for metric in METRICS if not metric.higher_is_better}


@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """What a report says about the run above its figures."""

    run_id: int | None
    experiment_key: str
    arms: tuple[str, ...]
    corpus: str
    samples: int
    languages: tuple[str, ...]
    seed: int
    gateway: str
    alpha: float
    resamples: int


def _fmt(metric: str, value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    digits = 1 if metric.startswith("latency") else 3
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _with_ci(metric: str, value: float | None, ci: Interval | None, *, signed: bool) -> str:
    text = _fmt(metric, value, signed=signed)
    if ci is None:
        return text
    return f"{text} [{_fmt(metric, ci[0], signed=signed)}, {_fmt(metric, ci[1], signed=signed)}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def render(info: RunInfo, summary: Sequence[SummaryRow]) -> str:
    """Per language and metric: each arm's value [CI], each other arm's paired difference to
    the baseline [CI] and its p-value."""
    baseline, others = info.arms[0], info.arms[1:]
    level = f"{1 - info.alpha:.0%}"
    run = f"backtest {info.run_id}" if info.run_id is not None else "backtest (not stored)"
    lines = [
        f"{run} of experiment {info.experiment_key}: arms {', '.join(info.arms)} "
        f"(baseline {baseline})",
        f"corpus {info.corpus}; {info.samples} samples in {', '.join(info.languages)}; "
        f"seed {info.seed}; gateway {info.gateway}",
        f"[{level} percentile-bootstrap CI, {info.resamples} resamples]; differences are paired "
        "by sample; (↓) = lower is better; latency as measured by the gateway",
        "",
    ]
    header = ["language", "metric", "n", *info.arms]
    for arm in others:
        header += [f"{arm} − {baseline}", "p"]
    table = [header]
    cells: dict[tuple[str, str], dict[str, SummaryRow]] = {}
    for row in summary:
        cells.setdefault((row.language, row.metric), {})[row.arm] = row
    for (language, metric), by_arm in cells.items():
        label = _LABELS[metric] + (" (↓)" if metric in _LOWER_IS_BETTER else "")
        line = [language, label, str(by_arm[baseline].estimate.n)]
        for arm in info.arms:
            estimate = by_arm[arm].estimate
            line.append(_with_ci(metric, estimate.estimate, estimate.ci, signed=False))
        for arm in others:
            difference = by_arm[arm].difference
            assert difference is not None
            line += [
                _with_ci(metric, difference.estimate, difference.ci, signed=True),
                _p(difference.p_value),
            ]
        table.append(line)
    return "\n".join(lines + aligned(table))


def as_json(info: RunInfo, summary: Sequence[SummaryRow]) -> dict[str, Any]:
    """The report as plain JSON-ready values."""
    return {
        "run": dataclasses.asdict(info),
        "summary": [
            {
                "language": row.language,
                "metric": row.metric,
                "arm": row.arm,
                "n": row.estimate.n,
                "code": row.estimate.code.value,
                "value": row.estimate.estimate,
                "ci": list(row.estimate.ci) if row.estimate.ci else None,
                "difference": None
                if row.difference is None
                else {
                    "code": row.difference.code.value,
                    "value": row.difference.estimate,
                    "ci": list(row.difference.ci) if row.difference.ci else None,
                    "p_value": row.difference.p_value,
                },
            }
            for row in summary
        ],
    }
