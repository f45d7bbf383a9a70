"""Running a backtest: every arm completes every masked span; then the figures per language.

Arms take turns within each span, the order alternating from span to span, so that a slow
spell of the machine (or a warm cache) falls on every arm alike and the latency comparison
stays fair. Metrics are paired by span, so differences between arms get paired bootstrap CIs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from backtest.arms import Arm
from backtest.client import Completion, GatewayClient
from backtest.masking import MaskedSpan
from backtest.metrics import Scores, score
from experiments.analysis.options import DEFAULT_ALPHA, DEFAULT_RESAMPLES
from experiments.analysis.stats.bootstrap import (
    BootstrapEstimate,
    PairedDifference,
    Statistic,
    bootstrap_ci,
    mean,
    paired_difference,
    percentile,
)

ALL_LANGUAGES = "all"


@dataclasses.dataclass(frozen=True, slots=True)
class SampleResult:
    """One arm's completion of one span, and its scores."""

    span: MaskedSpan
    arm: str
    completion: Completion
    scores: Scores


Progress = Callable[[int, int], None]


def run_samples(
    client: GatewayClient,
    spans: Sequence[MaskedSpan],
    arms: Sequence[Arm],
    *,
    seed: int,
    progress: Progress | None = None,
) -> list[SampleResult]:
    """Every arm's completion of every span (``progress(done, total)`` after each request)."""
    variants = {arm.name: arm.for_evaluation(seed) for arm in arms}
    if spans:
        # Unrecorded warm-up: the first requests pay for connections and lazy set-up.
        for arm in arms:
            client.complete(spans[0], variants[arm.name])
    results: list[SampleResult] = []
    total = len(spans) * len(arms)
    for span in spans:
        turn = list(arms) if span.index % 2 == 0 else list(reversed(arms))
        for arm in turn:
            completion = client.complete(span, variants[arm.name])
            results.append(
                SampleResult(span, arm.name, completion, score(completion.text, span.target))
            )
            if progress is not None:
                progress(len(results), total)
    return results


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """A figure of a backtest: a per-sample value and the statistic over samples."""

    name: str
    label: str
    value: Callable[[SampleResult], float | None]
    statistic: Statistic
    higher_is_better: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("exact_match", "exact match", lambda r: float(r.scores.exact), mean),
    Metric(
        "exact_match_stripped",
        "exact match (stripped)",
        lambda r: float(r.scores.exact_stripped),
        mean,
    ),
    Metric("chrf", "chrF", lambda r: r.scores.chrf, mean),
    Metric("edit_similarity", "edit similarity", lambda r: r.scores.edit_similarity, mean),
    Metric(
        "latency_p50_ms",
        "latency p50 (ms)",
        lambda r: r.completion.latency_ms,
        percentile(50),
        higher_is_better=False,
    ),
    Metric(
        "latency_p95_ms",
        "latency p95 (ms)",
        lambda r: r.completion.latency_ms,
        percentile(95),
        higher_is_better=False,
    ),
    Metric(
        "error_rate",
        "error rate",
        lambda r: float(r.completion.error is not None),
        mean,
        higher_is_better=False,
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class SummaryRow:
    """One metric of one arm in one language; ``difference`` is to the baseline arm."""

    language: str
    metric: str
    arm: str
    estimate: BootstrapEstimate
    difference: PairedDifference | None


def _paired_values(
    by_arm: dict[str, dict[int, SampleResult]], arms: Sequence[str], metric: Metric
) -> dict[str, list[float]]:
    # Only spans every arm has a value for (latency is missing where a request failed).
    indices = sorted(set.intersection(*(set(by_arm[arm]) for arm in arms)))
    values: dict[str, list[float]] = {arm: [] for arm in arms}
    for index in indices:
        row = [metric.value(by_arm[arm][index]) for arm in arms]
        if all(value is not None for value in row):
            for arm, value in zip(arms, row, strict=True):
                assert value is not None
                values[arm].append(value)
    return values


def summarize(
    results: Sequence[SampleResult],
    arms: Sequence[str],
    *,
    seed: int,
    resamples: int = DEFAULT_RESAMPLES,
    alpha: float = DEFAULT_ALPHA,
) -> list[SummaryRow]:
    """Every metric per language (and ``all`` when there are several) per arm, with bootstrap
    CIs, and each arm's paired difference to ``arms[0]`` (the baseline)."""
    languages = sorted({r.span.language for r in results})
    if len(languages) > 1:
        languages.append(ALL_LANGUAGES)
    rows: list[SummaryRow] = []
    for language in languages:
        by_arm: dict[str, dict[int, SampleResult]] = {arm: {} for arm in arms}
        for r in results:
            if language in (ALL_LANGUAGES, r.span.language):
                by_arm[r.arm][r.span.index] = r
        for metric in METRICS:
            values = _paired_values(by_arm, arms, metric)
            baseline = values[arms[0]]
            for arm in arms:
                estimate = bootstrap_ci(
                    values[arm],
                    statistic=metric.statistic,
                    resamples=resamples,
                    alpha=alpha,
                    seed=seed,
                )
                difference = None
                if arm != arms[0]:
                    difference = paired_difference(
                        baseline,
                        values[arm],
                        statistic=metric.statistic,
                        resamples=resamples,
                        alpha=alpha,
                        seed=seed,
                    )
                rows.append(SummaryRow(language, metric.name, arm, estimate, difference))
    return rows
