"""The demo's steps that other parts of CodeLift provide: feedback tagging and the dashboard.

Each is one function with a stable signature. Where the part is not installed the step does
what can be done without it (counting feedback per arm; saying the dashboard is missing), so
the demo runs either way.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy
from sqlalchemy import text


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
    """Feedback each arm's developers left after their exposure (untagged: no tagger yet)."""
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


def tag_feedback(conn: sqlalchemy.Connection, experiment: str) -> list[FeedbackSummary]:
    """Tag pending feedback and return theme shares per arm.

    The tagger comes with the feedback issue; until then every comment is reported untagged.
    """
    return feedback_per_arm(conn, experiment)


@dataclasses.dataclass(frozen=True)
class Dashboard:
    """A running dashboard: where to open it, and how to stop it."""

    url: str
    process: object | None = None


def start_dashboard(database_url: str, *, port: int) -> Dashboard | None:
    """Serve the dashboard on ``port`` reading ``database_url``; None when not installed."""
    del database_url, port
    return None


def stop_dashboard(dashboard: Dashboard) -> None:
    """Stop a dashboard ``start_dashboard`` started."""
    del dashboard
