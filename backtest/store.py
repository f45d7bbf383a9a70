"""Writing a backtest to PostgreSQL: the run, every sample per arm, and the summaries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from backtest.arms import Arm
from backtest.models import BacktestRun, BacktestSample, BacktestSummary
from backtest.runner import SampleResult, SummaryRow


def _sample_row(run_id: int, result: SampleResult) -> dict[str, Any]:
    span, completion, scores = result.span, result.completion, result.scores
    return {
        "run_id": run_id,
        "arm": result.arm,
        "sample_index": span.index,
        "language": span.language,
        "path": span.path,
        "trigger": span.trigger.value,
        "span_start": span.start,
        "span_end": span.end,
        "target": span.target,
        "completion": completion.text,
        "exact": scores.exact,
        "exact_stripped": scores.exact_stripped,
        "chrf": scores.chrf,
        "edit_similarity": scores.edit_similarity,
        "latency_ms": completion.latency_ms,
        "suggestion_id": completion.suggestion_id,
        "error": completion.error,
    }


def _summary_row(run_id: int, row: SummaryRow) -> dict[str, Any]:
    estimate, difference = row.estimate, row.difference
    ci = estimate.ci or (None, None)
    diff_ci = (difference.ci if difference is not None else None) or (None, None)
    return {
        "run_id": run_id,
        "arm": row.arm,
        "language": row.language,
        "metric": row.metric,
        "n": estimate.n,
        "value": estimate.estimate,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "diff": difference.estimate if difference is not None else None,
        "diff_low": diff_ci[0],
        "diff_high": diff_ci[1],
        "p_value": difference.p_value if difference is not None else None,
    }


def save_backtest(
    session: Session,
    *,
    experiment_key: str,
    arms: Sequence[Arm],
    corpus: str,
    languages: Sequence[str],
    samples_per_language: int,
    seed: int,
    gateway: str,
    parameters: dict[str, Any],
    results: Sequence[SampleResult],
    summary: Sequence[SummaryRow],
) -> BacktestRun:
    """Store a finished backtest in the caller's transaction; the run row, with its id."""
    run = BacktestRun(
        experiment_key=experiment_key,
        arms={arm.name: arm.overrides.as_dict() for arm in arms},
        baseline_arm=arms[0].name,
        corpus=corpus,
        languages=list(languages),
        samples_per_language=samples_per_language,
        seed=seed,
        gateway=gateway,
        parameters=parameters,
        finished_at=dt.datetime.now(dt.UTC),
    )
    session.add(run)
    session.flush()
    if results:
        session.execute(insert(BacktestSample), [_sample_row(run.id, r) for r in results])
    if summary:
        session.execute(insert(BacktestSummary), [_summary_row(run.id, row) for row in summary])
    return run
