"""Theme shares per arm or language, with confidence intervals, the user as the unit.

A theme's share in a group is Σ(user's comments with the theme) / Σ(user's tagged comments):
a ratio of per-user sums, so its interval comes from the delta method over users
(``experiments.analysis.stats``), never from treating comments as independent. SQL returns only the
sufficient statistics per group and theme. The share of each polarity is reported the same way,
under the pseudo themes ``POSITIVE``, ``NEGATIVE`` and ``NEUTRAL``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Literal

from sqlalchemy import Float, and_, case, cast, func, literal, select, true, union_all
from sqlalchemy.orm import Session

from collector.models import FeedbackRow
from experiments.analysis.stats.estimates import check_arm, ratio_estimate
from experiments.analysis.stats.frequentist import t_interval
from experiments.analysis.stats.moments import RatioMoments
from experiments.analysis.stats.results import ResultCode
from feedback.errors import FeedbackInputError
from feedback.models import TaggingRow, TagRow, ThemeRow
from feedback.store import comment_conditions, group_column, with_arm

# Not valid theme ids (ids are slugs), so they cannot collide with one.
POSITIVE = "polarity:positive"
NEGATIVE = "polarity:negative"
NEUTRAL = "polarity:neutral"
POLARITY_THEMES = {POSITIVE: "positive", NEGATIVE: "negative", NEUTRAL: "neutral"}
DEFAULT_ALPHA = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeShare:
    """Share of a group's tagged comments carrying a theme (or a polarity), with its CI."""

    dimension: str
    group: str
    theme_id: str
    users: int
    comments: int
    with_theme: int
    share: float | None
    ci_low: float | None
    ci_high: float | None
    code: ResultCode


def _share(
    dimension: str, group: str, theme_id: str, moments: RatioMoments, alpha: float
) -> ThemeShare:
    code = check_arm(moments)
    share = moments.m_sum / moments.d_sum if moments.d_sum else None
    low = high = None
    if code is ResultCode.OK:
        estimate = ratio_estimate(moments)
        se = math.sqrt(estimate.variance / estimate.n)
        low, high = t_interval(estimate.mean, se, estimate.n - 1, alpha)
        # A share lives in [0, 1]; the normal-theory interval may poke out at the edges.
        low, high = max(0.0, low), min(1.0, high)
    return ThemeShare(
        dimension=dimension,
        group=group,
        theme_id=theme_id,
        users=moments.n,
        comments=int(moments.d_sum),
        with_theme=int(moments.m_sum),
        share=share,
        ci_low=low,
        ci_high=high,
        code=code,
    )


def theme_shares(
    session: Session,
    *,
    by: Literal["arm", "language"],
    experiment_key: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    language: str | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[ThemeShare]:
    """Per group (arm or language) and theme: the share of tagged comments, with a (1 − alpha) CI.

    By arm needs ``experiment_key``; only comments written after the user's first exposure count.
    """
    if by not in ("arm", "language"):
        raise FeedbackInputError("by", "must be 'arm' or 'language'")
    if by == "arm" and experiment_key is None:
        raise FeedbackInputError("experiment_key", "shares by arm need an experiment")
    if not 0.0 < alpha < 1.0:
        raise FeedbackInputError("alpha", "must be between 0 and 1")
    conditions = comment_conditions(start, end)
    if language is not None:
        conditions.append(FeedbackRow.language == language)
    stmt = select(FeedbackRow.event_id, FeedbackRow.user_id, TaggingRow.polarity).join(
        TaggingRow, TaggingRow.event_id == FeedbackRow.event_id
    )
    exposure = None
    if experiment_key is not None:
        stmt, exposure = with_arm(stmt, experiment_key)
    comments = stmt.add_columns(group_column(by, exposure).label("grp")).where(*conditions).cte("c")
    per_user = (
        select(
            comments.c.grp,
            comments.c.user_id,
            func.count().label("d"),
            *(
                func.count().filter(comments.c.polarity == polarity).label(polarity)
                for polarity in POLARITY_THEMES.values()
            ),
        )
        .group_by(comments.c.grp, comments.c.user_id)
        .cte("u")
    )
    per_user_theme = (
        select(comments.c.grp, comments.c.user_id, TagRow.theme_id, func.count().label("m"))
        .join(TagRow, TagRow.event_id == comments.c.event_id)
        .group_by(comments.c.grp, comments.c.user_id, TagRow.theme_id)
        .cte("ut")
    )
    themes = union_all(
        select(ThemeRow.id.label("theme_id")).where(ThemeRow.active),
        *(select(literal(pseudo).label("theme_id")) for pseudo in POLARITY_THEMES),
    ).cte("k")
    m = cast(
        case(
            *(
                (themes.c.theme_id == pseudo, per_user.c[polarity])
                for pseudo, polarity in POLARITY_THEMES.items()
            ),
            else_=func.coalesce(per_user_theme.c.m, 0),
        ),
        Float,
    )
    d = cast(per_user.c.d, Float)
    rows = session.execute(
        select(
            per_user.c.grp,
            themes.c.theme_id,
            func.count().label("n"),
            func.sum(m).label("m_sum"),
            func.sum(m * m).label("m2"),
            func.sum(d).label("d_sum"),
            func.sum(d * d).label("d2"),
            func.sum(m * d).label("md"),
        )
        .select_from(per_user)
        .join(themes, true())
        .outerjoin(
            per_user_theme,
            and_(
                per_user_theme.c.grp == per_user.c.grp,
                per_user_theme.c.user_id == per_user.c.user_id,
                per_user_theme.c.theme_id == themes.c.theme_id,
            ),
        )
        .group_by(per_user.c.grp, themes.c.theme_id)
        .order_by(per_user.c.grp, themes.c.theme_id)
    ).all()
    return [
        _share(
            by,
            row.grp,
            row.theme_id,
            RatioMoments(row.n, row.m_sum, row.m2, row.d_sum, row.d2, row.md),
            alpha,
        )
        for row in rows
    ]
