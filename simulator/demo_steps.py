"""The demo's steps that other parts of CodeLift provide: feedback tagging and the dashboard."""

from __future__ import annotations

import dataclasses

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.orm import Session

from dashboard import launch
from dashboard.launch import DashboardProcess
from feedback.analysis import POLARITY_THEMES, theme_shares
from feedback.worker import tag_all_pending

# Themes shown per arm in the results table.
TOP_THEMES = 3


@dataclasses.dataclass(frozen=True)
class FeedbackSummary:
    """Feedback per arm: comments, positive ratings, and theme shares where tagged."""

    arm: str
    comments: int
    rated_positive: int
    rated: int
    untagged: int
    themes: dict[str, float]


def feedback_per_arm(conn: sqlalchemy.Connection, experiment: str) -> list[FeedbackSummary]:
    """Feedback each arm's developers left after their exposure (before tagging)."""
    rows = conn.execute(
        text("""
SELECT e.arm,
       count(*) AS comments,
       count(*) FILTER (WHERE f.rating > 0 AND f.rating_scale = 'thumbs'
                           OR f.rating >= 4 AND f.rating_scale = 'stars') AS positive,
       count(f.rating) AS rated
FROM feedback f
JOIN exposure e ON e.user_id = f.user_id AND e.experiment = :experiment
WHERE f.client_ts >= e.client_ts
GROUP BY e.arm ORDER BY e.arm
"""),
        {"experiment": experiment},
    ).all()
    return [
        FeedbackSummary(
            arm=row.arm,
            comments=row.comments,
            rated_positive=row.positive,
            rated=row.rated,
            untagged=row.comments,
            themes={},
        )
        for row in rows
    ]


def tag_feedback(
    database_url: str, conn: sqlalchemy.Connection, experiment: str
) -> list[FeedbackSummary]:
    """Tag pending feedback (training the tagger on first use) and return per arm the comments,
    their ratings and the most frequent themes among the tagged ones."""
    tag_all_pending(database_url)
    shares = theme_shares(Session(bind=conn), by="arm", experiment_key=experiment)
    summaries = []
    for summary in feedback_per_arm(conn, experiment):
        mine = [s for s in shares if s.group == summary.arm and s.theme_id not in POLARITY_THEMES]
        top = sorted((s for s in mine if s.share), key=lambda s: -(s.share or 0.0))
        tagged = max((s.comments for s in mine), default=0)
        summaries.append(
            dataclasses.replace(
                summary,
                untagged=max(0, summary.comments - tagged),
                themes={s.theme_id: s.share or 0.0 for s in top[:TOP_THEMES]},
            )
        )
    return summaries


def start_dashboard(database_url: str, *, port: int) -> DashboardProcess:
    """Serve the dashboard on ``port`` (0: any free port) reading ``database_url``."""
    return launch.start_dashboard(database_url=database_url, port=port)


def stop_dashboard(dashboard: DashboardProcess) -> None:
    """Stop a dashboard ``start_dashboard`` started."""
    dashboard.stop()
