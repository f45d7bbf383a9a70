"""Realistic demo data for the dashboard: experiments in the registry, events, rollups, gates.

Three experiments: ``context-window`` (running, a +10% acceptance effect, ramped through its
stages), ``python-lora`` (a -60% effect the gate rolls back) and ``length-cap`` (a draft with no
data). Events come from ``simulator.synthetic`` (several IDEs, developer comments); the ramp
history is backdated to the days the synthetic exposures cover, so the coverage timeline reads
as it would after a real week. Everything goes through the registry and the gate runner, so
the audit log and the gate decisions are the real ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from collector.partitions import maintain_partitions
from core.db.connection import libpq_conninfo
from experiments.analysis.analyze import gate_analyzer
from experiments.analysis.gate_runner import run_gate
from experiments.analysis.rollups import EVENT_TABLES, refresh_rollups
from experiments.definitions.config import ExperimentConfig, parse_config
from experiments.definitions.models import Experiment, ExperimentAudit
from experiments.definitions.registry import apply_definition, ramp
from feedback.worker import tag_all_pending
from simulator.synthetic import ARMS, SyntheticConfig, load_synthetic

ACTOR = "seed"
IDES = ("vscode", "jetbrains", "neovim")
DAYS = 6.0
PRE_DAYS = 3.0
# Ramp stages of the running experiment; the seed walks it through all but the last.
STAGES = (0.05, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """What was seeded."""

    events: int
    feedback: int
    experiments: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime


def _definition(key: str, layer: str, description: str, status: str) -> ExperimentConfig:
    return parse_config(
        {
            "key": key,
            "description": description,
            "layer": layer,
            "status": status,
            "arms": [
                {"name": ARMS[0], "weight": 0.5, "description": "current model"},
                {
                    "name": ARMS[1],
                    "weight": 0.5,
                    "description": description,
                    "variant": {"decoding": {"temperature": 0.4}},
                },
            ],
            "primary_metrics": ["acceptance_rate", "cpr_120"],
            "guardrails": [
                {"metric": "latency_p95", "margin": 0.1},
                {"metric": "error_rate", "margin": 0.5},
            ],
            "rollout": {
                "stages": [
                    {"coverage": c, "min_users": 50, "min_duration_s": "12h"} for c in STAGES
                ]
            },
        }
    )


EXPERIMENTS = (
    # (definition, share of the events, acceptance effect)
    (_definition("context-window", "context", "longer context window", "running"), 0.7, 0.10),
    (_definition("python-lora", "model", "Python LoRA adapter", "running"), 0.3, -0.6),
)
DRAFT = _definition("length-cap", "postprocess", "cap suggestions at 8 lines", "draft")


def seed_demo(
    engine: Engine,
    *,
    events: int = 40_000,
    users: int = 1_000,
    end: dt.datetime | None = None,
    feedback_share: float = 0.02,
    tag_feedback: bool = False,
) -> SeedSummary:
    """Seed the experiments, ~``events`` events of ~``users`` users, rollups and gate runs.

    ``tag_feedback`` also runs the feedback tagger over the comments (trains it first: about a
    minute on 2 cores), so the Feedback page shows themes and polarity.
    """
    end = end or dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    start = end - dt.timedelta(days=DAYS)
    url = engine.url.render_as_string(hide_password=False)
    maintain_partitions(
        libpq_conninfo(url),
        EVENT_TABLES,
        first_day=start.date() - dt.timedelta(days=1),
        last_day=end.date() + dt.timedelta(days=1),
    )
    loaded: dict[str, int] = {}
    with psycopg.connect(libpq_conninfo(url)) as conn:
        for index, (config, share, effect) in enumerate(EXPERIMENTS):
            result = load_synthetic(
                conn,
                SyntheticConfig(
                    experiment=config.key,
                    users=max(20, round(users * share)),
                    events=round(events * share),
                    days=DAYS,
                    pre_days=PRE_DAYS,
                    acceptance_effect=effect,
                    seed=index + 1,
                    end=end,
                    ides=IDES,
                    id_offset=index * 1_000_000,
                    feedback_share=feedback_share,
                ),
            )
            for table, n in result.rows.items():
                loaded[table] = loaded.get(table, 0) + n
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    exposure_start = start + dt.timedelta(days=PRE_DAYS)
    with Session(engine) as session:
        for config, _, _ in EXPERIMENTS:
            apply_definition(session, config=config, actor=ACTOR)
        apply_definition(session, config=DRAFT, actor=ACTOR)
        _ramp_history(session, "context-window", STAGES[1:-1], exposure_start, end)
        _ramp_history(session, "python-lora", (), exposure_start, end)
        refresh_rollups(session.connection())
        session.commit()
    with Session(engine) as session:
        # The gate rolls the harmful arm back through the registry; the other holds or advances.
        run_gate(session, key="python-lora", analyze=gate_analyzer, apply=True, actor="gate")
        run_gate(session, key="context-window", analyze=gate_analyzer, apply=False, actor="gate")
        session.commit()
    if tag_feedback:
        tag_all_pending(url)
    events_loaded = sum(n for table, n in loaded.items() if table not in ("exposure", "feedback"))
    return SeedSummary(
        events=events_loaded,
        feedback=loaded.get("feedback", 0),
        experiments=(*(c.key for c, _, _ in EXPERIMENTS), DRAFT.key),
        start=start,
        end=end,
    )


def _ramp_history(
    session: Session, key: str, stages: tuple[float, ...], first: dt.datetime, last: dt.datetime
) -> None:
    """Ramp ``key`` through ``stages``, then date its audit rows evenly across [first, last)."""
    for coverage in stages:
        ramp(session, key=key, coverage=coverage, actor=ACTOR, reason="stage criteria met")
    session.flush()
    rows = list(
        session.scalars(
            text("SELECT id FROM experiment_audit WHERE experiment_key = :k ORDER BY id"),
            {"k": key},
        )
    )
    step = (last - first) / max(1, len(rows))
    for i, audit_id in enumerate(rows):
        session.execute(
            update(ExperimentAudit)
            .where(ExperimentAudit.id == audit_id)
            .values(at=first + i * step)
        )
    session.execute(update(Experiment).where(Experiment.key == key).values(started_at=first))


def seed_summary_dict(summary: SeedSummary) -> dict[str, Any]:
    """JSON-ready."""
    return {
        "events": summary.events,
        "feedback": summary.feedback,
        "experiments": list(summary.experiments),
        "start": summary.start.isoformat(),
        "end": summary.end.isoformat(),
    }
