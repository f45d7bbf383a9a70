"""Theme shares per arm and language: user-level ratios with delta-method intervals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]
from sqlalchemy.orm import Session

from experiments.analysis.stats.results import ResultCode
from feedback.analysis import POSITIVE, theme_shares
from feedback.errors import FeedbackInputError
from feedback.store import correct_tags
from tests.feedback_factories import BASE_TIME, add_comment, add_exposure

# (user, arm, [(themes, polarity), ...]) — one list entry per comment.
DATA = [
    ("u1", "control", [(["latency"], "negative"), (["speed"], "positive")]),
    ("u2", "control", [(["latency"], "negative")]),
    (
        "u3",
        "control",
        [(["speed", "latency"], "positive"), (["speed"], "positive"), (["other"], "positive")],
    ),
    ("u4", "treatment", [(["speed"], "positive")]),
]


def _expected(m: list[float], d: list[float]) -> tuple[float, float, float]:
    """Ratio Σm/Σd and its 95% delta-method t interval, computed independently."""
    m_arr, d_arr = np.array(m), np.array(d)
    n = len(m_arr)
    ratio = m_arr.sum() / d_arr.sum()
    cov = np.cov(m_arr, d_arr, ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / d_arr.mean() ** 2
    half = stats.t.ppf(0.975, n - 1) * np.sqrt(variance / n)
    return ratio, max(0.0, ratio - half), min(1.0, ratio + half)


@pytest.fixture
def tagged(db_session: Session) -> None:
    for user, arm, comments in DATA:
        add_exposure(db_session, user_id=user, arm=arm, at=BASE_TIME)
        for i, (themes, polarity) in enumerate(comments):
            comment = add_comment(
                db_session,
                f"comment {i} of {user}",
                user_id=user,
                language="go" if user == "u4" else "python",
                at=BASE_TIME + dt.timedelta(hours=i),
            )
            correct_tags(
                db_session,
                feedback_id=comment,
                theme_ids=themes,
                polarity=polarity,
                corrected_by="ana",
            )
    # Untagged comments and comments written before exposure count nowhere.
    add_comment(db_session, "not tagged", user_id="u1")
    early = add_comment(db_session, "before", user_id="u2", at=BASE_TIME - dt.timedelta(days=1))
    correct_tags(
        db_session, feedback_id=early, theme_ids=["speed"], polarity="positive", corrected_by="a"
    )


@pytest.mark.usefixtures("tagged")
def test_shares_by_arm_match_an_independent_delta_method(db_session: Session) -> None:
    shares = {
        (s.group, s.theme_id): s
        for s in theme_shares(db_session, by="arm", experiment_key="ctx-window")
    }
    latency = shares[("control", "latency")]
    share, low, high = _expected([1, 1, 1], [2, 1, 3])
    assert (latency.users, latency.comments, latency.with_theme) == (3, 6, 3)
    assert latency.code is ResultCode.OK
    assert (latency.share, latency.ci_low, latency.ci_high) == pytest.approx(
        (share, low, high), abs=1e-9
    )
    positive = shares[("control", POSITIVE)]
    share, low, high = _expected([1, 0, 3], [2, 1, 3])
    assert (positive.share, positive.ci_low, positive.ci_high) == pytest.approx(
        (share, low, high), abs=1e-9
    )
    # One user cannot give an interval; the share itself is still reported.
    treated = shares[("treatment", "speed")]
    assert (treated.share, treated.code, treated.ci_low) == (1.0, ResultCode.TOO_FEW_USERS, None)
    assert shares[("treatment", "latency")].share == 0.0


@pytest.mark.usefixtures("tagged")
def test_shares_by_language_count_every_tagged_comment(db_session: Session) -> None:
    shares = {(s.group, s.theme_id): s for s in theme_shares(db_session, by="language")}
    # u2's early comment counts here: no experiment, no exposure cut.
    speed = shares[("python", "speed")]
    assert (speed.users, speed.comments, speed.with_theme) == (3, 7, 4)
    assert shares[("go", "speed")].share == 1.0


def test_bad_requests_name_the_field(db_session: Session) -> None:
    with pytest.raises(FeedbackInputError, match="experiment_key"):
        theme_shares(db_session, by="arm")
    with pytest.raises(FeedbackInputError, match="alpha"):
        theme_shares(db_session, by="language", alpha=1.5)
