"""Every dashboard page under Streamlit's AppTest, on the seeded demo database: the figures
shown are those ``experiments/`` computes, filters change them, the registry buttons and the
tag editor write to the database."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from codelift.cli import app as cli_app
from core.db.connection import make_engine
from dashboard import cached
from dashboard.apptest import app_with_passwords
from dashboard.data import experiment_detail
from dashboard.launch import free_port, start_dashboard
from dashboard.settings import DashboardSettings
from dashboard.views.experiments import STATUS_STYLES
from dashboard.views.lifts import (
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    TOO_FEW_USERS,
    UNCORRECTED_NOT_SIGNIFICANT,
    UNCORRECTED_SIGNIFICANT,
    forest,
)
from dashboard.views.widgets import pct
from experiments.analysis.analyze import analyze_experiment
from experiments.analysis.gate_models import GateDecisionRow
from experiments.analysis.health import HealthCheck, HealthStatus
from experiments.definitions.models import Experiment, ExperimentAudit
from experiments.definitions.registry import config_of, get_experiment, ramp
from experiments.product.metrics import product_metrics
from feedback.models import CorrectionRow, TaggingRow

TIMEOUT_S = 60
VIEWER, ADMIN = "viewer-password-1", "admin-password-12"
# Every login here shares the process-wide throttle: each test starts with no failure counted.
pytestmark = pytest.mark.usefixtures("login_throttle")


def open_page(url: str, page: str, password: str = VIEWER, name: str = "tester") -> AppTest:
    """The app on ``page``, logged in with ``password``."""
    app = AppTest.from_function(
        app_with_passwords, args=(url, page, VIEWER, ADMIN), default_timeout=TIMEOUT_S
    )
    app.run()
    app.text_input(key="login_name").input(name)
    app.text_input(key="login_password").input(password)
    app.button[0].click()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric(app: AppTest, label: str) -> str:
    """The value of the metric labelled ``label``."""
    values = [m.value for m in app.metric if m.label == label]
    assert len(values) == 1, (label, [m.label for m in app.metric])
    return values[0]


@pytest.fixture(scope="module")
def url(dashboard_database_url: str) -> Iterator[str]:
    cached.clear()
    yield dashboard_database_url
    cached.clear()


@pytest.fixture(scope="module")
def demo_engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=1)
    yield engine
    engine.dispose()


def test_a_wrong_password_shows_no_page(url: str) -> None:
    app = AppTest.from_function(app_with_passwords, args=(url, "overview", VIEWER, ADMIN))
    app.run()
    app.text_input(key="login_password").input("not-the-password")
    app.button[0].click()
    app.run()
    assert [e.value for e in app.error] == ["Wrong password."]
    assert not app.metric


def overview_range(engine: Engine) -> tuple[dt.date, dt.date]:
    with engine.connect() as conn:
        first, last = conn.execute(text("SELECT min(day), max(day) FROM metric_rollup_daily")).one()
    return max(first, last - dt.timedelta(days=14)), last


def test_overview_shows_the_product_metrics(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "overview")
    first, last = overview_range(demo_engine)
    with demo_engine.connect() as conn:
        (total,) = product_metrics(conn, first=first, last=last, grain=None)
    assert metric(app, "Acceptance rate") == pct(total.acceptance_rate)
    assert metric(app, "% code written") == pct(total.pct_code_written)
    assert metric(app, "CPR@120s") == pct(total.cpr[120])
    assert metric(app, "Active users") == f"{total.active_users:,}"
    assert metric(app, "Latency p95") == f"{total.latency_p95_ms:.0f} ms"
    per_language = app.dataframe[-1].value
    assert len(per_language) == 8
    assert [getattr(b, "label", None) for b in app.get("download_button")] == [
        "Download overview by day (CSV)",
        "Download overview per language (CSV)",
    ]


@pytest.mark.parametrize(
    ("widget", "choice", "filters"),
    [
        ("overview_languages", ["python"], {"languages": ("python",)}),
        ("overview_ides", ["jetbrains"], {"ides": ("jetbrains",)}),
    ],
)
def test_overview_filters(
    url: str, demo_engine: Engine, widget: str, choice: list[str], filters: dict[str, tuple[str]]
) -> None:
    app = open_page(url, "overview")
    app.multiselect(key=widget).set_value(choice).run()
    app.radio(key="overview_grain").set_value("week").run()
    first, last = overview_range(demo_engine)
    with demo_engine.connect() as conn:
        languages, ides = filters.get("languages", ()), filters.get("ides", ())
        (total,) = product_metrics(
            conn, first=first, last=last, grain=None, languages=languages, ides=ides
        )
        weeks = product_metrics(
            conn, first=first, last=last, grain="week", languages=languages, ides=ides
        )
    assert metric(app, "Acceptance rate") == pct(total.acceptance_rate)
    assert metric(app, "Suggestions shown") == f"{total.suggestions_shown:,}"
    assert len(app.dataframe[0].value) == len(weeks)


def test_experiments_page_shows_the_analysis_and_the_gate(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "experiments")
    listing = app.dataframe[0].value
    assert set(listing["experiment"]) == {"context-window", "python-lora", "length-cap"}
    assert (
        dict(zip(listing["experiment"], listing["latest_gate"], strict=True))["python-lora"]
        == "rollback"
    )
    with Session(demo_engine) as session:
        experiment = get_experiment(session, "context-window")
        report = analyze_experiment(session.connection(), config_of(experiment), by_language=True)
    assert metric(app, "Users") == f"{sum(report.users_per_arm.values()):,}"
    assert metric(app, "Stage") == "stage 3/4"
    assert metric(app, "SRM") == "OK"
    subheaders = [s.value for s in app.subheader]
    for section in (
        "Progress to power",
        "Lifts",
        "Sequential CI over time",
        "Per language",
        "Guardrails",
    ):
        assert section in subheaders
    progress = app.get("progress")
    assert progress and all("power" in bar.proto.text for bar in progress)
    tables = {tuple(frame.value.columns)[:3]: frame.value for frame in app.dataframe}
    per_language = next(v for k, v in tables.items() if k == ("language", "arm", "verdict"))
    expected = [
        r for r in report.results if r.language is not None and r.metric == "acceptance_rate"
    ]
    # A low-power language (too few effective users) has no adjusted p-value: NaN in the table.
    assert list(per_language["p_adjusted"]) == pytest.approx(
        [
            math.nan if r.adjusted.p_adjusted is None else r.adjusted.p_adjusted
            for r in expected
            if r.adjusted
        ],
        nan_ok=True,
    )
    assert list(per_language["verdict"] == SIGNIFICANT) == [
        bool(r.adjusted and r.adjusted.significant) for r in expected
    ]
    assert list(per_language["verdict"] == TOO_FEW_USERS) == [
        r.comparison.low_power for r in expected
    ]
    assert "Ramp and pause need the admin role." in [c.value for c in app.caption]
    assert not [b for b in app.button if b.key in ("ramp", "pause")]


def excludes_zero(interval: list[float]) -> bool:
    return interval[0] > 0 or interval[1] < 0


@pytest.mark.parametrize("key", ["context-window", "python-lora"])
def test_every_interval_drawn_agrees_with_its_marker(demo_engine: Engine, key: str) -> None:
    detail = experiment_detail(demo_engine, key)
    relative, name = forest(detail.results, "relative", detail.report.alpha)
    assert name == "corrected CI (agrees with the marker)"
    drawn = relative.dropna(subset=["low", "high"])
    assert len(drawn) > 0
    for row in drawn.itertuples():
        assert excludes_zero([row.low, row.high]) == (row.marker == SIGNIFICANT), row
        assert row.marker in (SIGNIFICANT, NOT_SIGNIFICANT)
    # The corrected CI is the analysis' own, and the uncorrected one rides along.
    overall = {(r.metric, r.arm): r for r in detail.report.results if r.language is None}
    for row in drawn.itertuples():
        adjusted = overall[(row.metric, row.arm)].adjusted
        assert adjusted is not None and adjusted.ci is not None
        assert (row.low, row.high) == pytest.approx(adjusted.ci)
        assert row.ci_level == f"{1 - (adjusted.level or 0):.1%}"
    absolute, name = forest(detail.results, "absolute", detail.report.alpha)
    assert name == "95% CI, uncorrected"
    for row in absolute.dropna(subset=["low", "high"]).itertuples():
        assert excludes_zero([row.low, row.high]) == (row.marker == UNCORRECTED_SIGNIFICANT)
        assert row.marker in (UNCORRECTED_SIGNIFICANT, UNCORRECTED_NOT_SIGNIFICANT)
    # Per language too: a significant row's corrected CI excludes 0, any other's does not.
    for row in detail.by_language.itertuples():
        if isinstance(row.ci_adjusted, list):
            assert excludes_zero(row.ci_adjusted) == (row.significant is True), row


def chart_specs(app: AppTest) -> str:
    return " ".join(str(chart.proto.spec) for chart in app.get("vega_lite_chart"))


def test_the_lift_chart_and_table_name_their_intervals(url: str) -> None:
    app = open_page(url, "experiments")
    assert "relative lift, corrected CI (agrees with the marker)" in chart_specs(app)
    lifts = next(
        f.value
        for f in app.dataframe
        if tuple(f.value.columns)[:4] == ("metric", "direction", "arm", "verdict")
    )
    assert list(lifts.columns[4:9]) == [
        "correction",
        "lift_rel",
        "ci_adjusted",
        "ci_adjusted_level",
        "p_adjusted",
    ]
    assert {"ci_rel_unadjusted", "p_rel_unadjusted", "ci_abs_unadjusted"} <= set(lifts.columns)
    for verdict, interval in zip(lifts["verdict"], lifts["ci_adjusted"], strict=True):
        if interval is not None and len(interval) == 2:
            assert excludes_zero(list(interval)) == (verdict == SIGNIFICANT)
    app.radio(key="lift_scale").set_value("absolute").run()
    assert "absolute lift, 95% CI, uncorrected" in chart_specs(app)


HEALTH = [
    HealthCheck("srm", None, HealthStatus.PASS, "split as weighted", {"p_value": 0.4}),
    HealthCheck("shown_rate", "treatment", HealthStatus.WARN, "display rate +20.0% in treatment"),
    HealthCheck("srm_language", "python", HealthStatus.FAIL, "sample ratio mismatch in python"),
]


@pytest.fixture
def stored_health(demo_engine: Engine) -> Iterator[None]:
    """A gate decision of context-window with known checks, the newest; deleted after."""
    with Session(demo_engine) as session:
        row = GateDecisionRow(
            experiment_key="context-window",
            decision="halt",
            reasons=["health check failed: sample ratio mismatch in python"],
            coverage=0.5,
            next_coverage=None,
            stage=2,
            evidence={},
            health=[check.to_dict() for check in HEALTH],
            applied=False,
            actor="tests",
        )
        session.add(row)
        session.commit()
        made = row.id
    cached.clear()
    yield
    with Session(demo_engine) as session:
        session.execute(delete(GateDecisionRow).where(GateDecisionRow.id == made))
        session.commit()
    cached.clear()


def test_health_checks_are_shown_with_the_gate_decisions(url: str, stored_health: None) -> None:
    app = open_page(url, "experiments")
    assert "Health checks" in [s.value for s in app.subheader]
    [health] = [
        f for f in app.dataframe if list(f.value.columns) == ["check", "slice", "status", "reason"]
    ]
    # Failing first, then warnings; failing rows red, warnings amber.
    assert list(health.value["check"]) == ["srm_language", "shown_rate", "srm"]
    assert list(health.value["status"]) == ["fail", "warn", "pass"]
    styles = health.proto.arrow_data.styler.styles
    for status in ("fail", "warn"):
        assert STATUS_STYLES[status].split(";")[0].split(": ")[1] in styles
    assert any(c.value.startswith("Stored with the gate decision of ") for c in app.caption)
    gates = next(
        f.value
        for f in app.dataframe
        if "decision" in f.value.columns and ("health" in f.value.columns)
    )
    assert gates["health"].iloc[0] == "1 fail, 1 warn, 1 pass"
    assert any("Health checks: 1 fail, 1 warn, 1 pass." in i.value for i in app.info)


def test_an_admin_ramps_through_the_registry(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "experiments", password=ADMIN, name="pm")
    ramp_button = next(b for b in app.button if b.key == "ramp")
    assert ramp_button.label == "Ramp to 100%"
    ramp_button.click().run()
    assert [s.value for s in app.success] == ["context-window ramped to 100%."]
    with Session(demo_engine) as session:
        assert get_experiment(session, "context-window").coverage == 1.0
        audit = session.scalars(
            select(ExperimentAudit)
            .where(ExperimentAudit.experiment_key == "context-window")
            .order_by(ExperimentAudit.id.desc())
        ).first()
        assert audit is not None
        assert (audit.action, audit.actor) == ("ramp", "dashboard:pm")
        # Back to where the other tests expect it, through the registry too.
        ramp(session, key="context-window", coverage=0.5, actor="tests")
        session.commit()
    cached.clear()


def test_an_admin_pauses_and_resumes(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "experiments", password=ADMIN)
    next(b for b in app.button if b.key == "pause").click().run()
    assert [s.value for s in app.success] == ["context-window paused."]
    assert metric(app, "Status") == "paused"
    next(b for b in app.button if b.key == "resume").click().run()
    assert metric(app, "Status") == "running"
    with Session(demo_engine) as session:
        status = session.scalar(select(Experiment.status).where(Experiment.key == "context-window"))
    assert status == "running"


def test_feedback_page_shows_counts_and_comments(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "feedback")
    with demo_engine.connect() as conn:
        comments = conn.execute(
            text("SELECT count(*) FROM feedback WHERE text IS NOT NULL")
        ).scalar()
    assert metric(app, "Comments") == f"{comments:,}"
    editor = app.data_editor[0].value
    assert len(editor) == min(200, int(comments or 0))
    app.text_input(key="feedback_search").input("too slow").run()
    found = app.data_editor[0].value
    assert len(found) > 0
    assert all("too slow" in t for t in found["text"])
    app.selectbox(key="feedback_experiment").set_value("context-window").run()
    assert "By arm of context-window" in [s.value for s in app.subheader]


def test_tag_corrections_are_written_back(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "feedback", name="reviewer")
    theme = next(iter(cached.themes(url)))
    target = app.data_editor[0].value.iloc[1]
    app.session_state["tag_editor"] = {
        "edited_rows": {1: {"themes": [theme], "polarity": "negative"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    app.run()
    next(b for b in app.button if b.key == "save_tags").click().run()
    assert [s.value for s in app.success] == ["Saved 1 correction(s)."]
    with Session(demo_engine) as session:
        correction = session.scalars(
            select(CorrectionRow).where(CorrectionRow.event_id == target["feedback_id"])
        ).one()
        tagging = session.get(TaggingRow, target["feedback_id"])
    assert (correction.theme_ids, correction.polarity) == ([theme], "negative")
    assert correction.corrected_by == "dashboard:reviewer"
    assert tagging is not None and tagging.source == "human"
    shown = app.data_editor[0].value
    row = shown[shown["feedback_id"] == target["feedback_id"]].iloc[0]
    assert (list(row["themes"]), row["polarity"], row["source"]) == ([theme], "negative", "human")
    assert metric(app, "Tagged") != "0"

    # A person's tags are certain: never in review, never below a confidence bar.
    app.selectbox(key="feedback_review").set_value("reviewed or confident").run()
    reviewed = app.data_editor[0].value
    assert target["feedback_id"] in set(reviewed["feedback_id"])
    assert not reviewed["needs_review"].any()
    app.selectbox(key="feedback_review").set_value("needs review").run()
    in_review = app.data_editor[0].value
    assert target["feedback_id"] not in set(in_review["feedback_id"])
    assert in_review["needs_review"].all()
    app.selectbox(key="feedback_review").set_value("(all)").run()
    app.slider(key="feedback_confidence").set_value(0.5).run()
    unsure = app.data_editor[0].value
    assert target["feedback_id"] not in set(unsure["feedback_id"])
    assert (unsure["confidence"] <= 0.5).all()
    assert "neutral" in app.selectbox(key="feedback_polarity").options


def test_serving_page_shows_requests_per_arm(url: str, demo_engine: Engine) -> None:
    app = open_page(url, "serving")
    app.selectbox(key="serving_experiment").set_value("context-window").run()
    with demo_engine.connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT arms ->> 'context-window', count(*) FROM completion_served "
                    "WHERE arms ? 'context-window' GROUP BY 1"
                )
            ).all()
        )
    for arm, n in counts.items():
        assert metric(app, f"{arm}: requests") == f"{n:,}"
    assert set(app.dataframe[0].value["arm"]) == set(counts)


@pytest.mark.parametrize("password", [None, "", "admin", "short"])
def test_guessable_passwords_are_refused_outside_development(password: str | None) -> None:
    with pytest.raises(ValidationError, match="viewer_password"):
        DashboardSettings(
            environment="production",
            viewer_password=password,
            admin_password=ADMIN,
        )


def test_development_falls_back_to_well_known_passwords() -> None:
    settings = DashboardSettings(environment="development")
    assert settings.uses_development_passwords
    assert (settings.password("viewer"), settings.password("admin")) == ("viewer", "admin")
    oidc = DashboardSettings(environment="production", oidc_provider="google")
    assert oidc.oidc_provider == "google"


def test_the_cli_serves_the_dashboard_with_host_port_and_database() -> None:
    result = CliRunner().invoke(cli_app, ["dashboard", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--database-url"):
        assert option in result.output


def test_a_dashboard_that_cannot_start_says_why() -> None:
    # 203.0.113.0/24 is reserved for documentation: no interface here has that address.
    with pytest.raises(RuntimeError, match="exited with code 1(.|\n)*Cannot assign requested"):
        start_dashboard(
            database_url="postgresql://nobody@127.0.0.1/none", host="203.0.113.1", port=free_port()
        )


def test_progress_to_power_per_primary_metric(demo_engine: Engine) -> None:
    detail = experiment_detail(demo_engine, "context-window")
    assert list(detail.power["metric"]) == list(detail.config.primary_metrics)
    for row in detail.power.itertuples():
        assert 0.0 <= row.power <= 1.0
        assert row.target_power == detail.config.plan.power
        assert row.users == sum(detail.report.users_per_arm.values())
