"""Capping in SQL is the rule ``simulator.heavy_tails.capped`` states, and both sources agree.

The simulations that calibrate the defaults cap arrays in numpy; the analysis caps in SQL. The
two must be the same rule: percentile_disc of the users' positive values on the pooled arms, a
mean metric's value capped, a ratio metric's denominator capped with its numerator scaled.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sqlalchemy import Connection, text

from experiments.analysis.metrics_sql import load_experiment_data
from experiments.analysis.moments_sql import metric_stats, metric_values, moment_aggregates
from experiments.analysis.rollups import refresh_rollups
from experiments.definitions.capping import Capping
from simulator.heavy_tails import capped, moments, user_values
from simulator.synthetic import SyntheticConfig, load_synthetic

METRICS = ("acceptance_rate", "suggestions_per_user")


def _per_user_table(conn: Connection, users: int) -> dict[str, np.ndarray]:
    """Heavy-tailed users in two arms, in a temporary table of per-user components."""
    rng = np.random.default_rng(7)
    values = user_values(rng, 2 * users)
    accepted, shown = values["acceptance_rate"]
    assert shown is not None
    served = shown + rng.poisson(3.0, size=shown.size)
    conn.execute(
        text(
            "CREATE TEMPORARY TABLE u (arm text, user_id text, shown_n float8, "
            "accepted_n float8, served_n float8) ON COMMIT DROP"
        )
    )
    conn.execute(
        text("INSERT INTO u VALUES (:arm, :user, :shown, :accepted, :served)"),
        [
            {
                "arm": "control" if i < users else "treatment",
                "user": f"u{i}",
                "shown": float(shown[i]),
                "accepted": float(accepted[i]),
                "served": float(served[i]),
            }
            for i in range(2 * users)
        ],
    )
    return {"shown": shown, "accepted": accepted, "served": served}


@pytest.mark.parametrize(
    "cap", [Capping(percentile=0.95), Capping(percentile=0.5001), Capping(absolute=12.0)]
)
def test_sql_caps_like_the_simulations(conn: Connection, cap: Capping) -> None:
    users = 300
    data = _per_user_table(conn, users)
    caps = dict.fromkeys(METRICS, cap)
    rows = {
        row["arm"]: row
        for row in conn.execute(
            text(
                f"WITH {metric_values('u', name='uv', metrics=METRICS, caps=caps)} "
                f"SELECT arm, {moment_aggregates(cuped=False, metrics=METRICS)} "
                "FROM uv GROUP BY arm"
            )
        ).mappings()
    }
    active = (data["served"] + data["shown"]) > 0
    arm_of = np.arange(2 * users) >= users  # False: control
    for metric, (m, d) in {
        "acceptance_rate": (data["accepted"], data["shown"]),
        "suggestions_per_user": (data["shown"], None),
    }.items():
        # The mean metric counts (and caps over) active users only.
        kept = active if d is None else np.ones(2 * users, dtype=bool)
        cm, cd = capped(
            (m[kept], None if d is None else d[kept]), cap.percentile, absolute=cap.absolute
        )
        arms = arm_of[kept]
        for index, arm in enumerate(("control", "treatment")):
            (got,) = metric_stats(rows[arm], arm, None, cuped=False, metrics=[metric])
            mine = arms == bool(index)
            want = moments((cm[mine], None if cd is None else cd[mine]))
            assert dataclasses.astuple(got.moments) == pytest.approx(
                dataclasses.astuple(want), rel=1e-12
            ), (metric, arm)
        assert (cm != m[kept]).any(), "the cap must bite in this test"


@pytest.mark.parametrize("cuped", [False, True])
def test_capped_raw_and_rollups_agree(conn: Connection, cuped: bool) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    load_synthetic(
        driver,
        SyntheticConfig(experiment="synthetic", users=300, events=12_000, days=5.0, pre_days=1.0),
    )
    refresh_rollups(conn)
    caps = {
        "acceptance_rate": Capping(percentile=0.9),
        "suggestions_per_user": Capping(absolute=5.0),
        "pct_code_written": Capping(percentile=0.95),
    }
    loads = [
        load_experiment_data(
            conn,
            experiment="synthetic",
            source=source,
            by_language=True,
            cuped=cuped,
            caps=caps,
        )
        for source in ("raw", "rollups")
    ]
    uncapped = load_experiment_data(conn, experiment="synthetic", by_language=True, cuped=cuped)
    for a, b, c in zip(loads[0].metrics, loads[1].metrics, uncapped.metrics, strict=True):
        assert dataclasses.astuple(a.moments) == pytest.approx(
            dataclasses.astuple(b.moments), rel=1e-12
        ), (a.metric, a.arm, a.language)
        if a.metric in caps and a.language is None:
            # Capping only ever lowers the sums it touches.
            assert a.moments != c.moments
    assert loads[0].caps == caps
