"""End to end in headless Chromium: log in to a real dashboard server on the seeded database,
open every page, check its key figures are on screen, and save a screenshot of each under
``test-results/dashboard/``. Chromium is Debian's (``.ci/run`` installs it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core.db.connection import make_engine
from dashboard.launch import running_dashboard
from dashboard.views.experiments import health_metric
from dashboard.views.widgets import pct
from experiments.analysis.analyze import analyze_experiment
from experiments.definitions.registry import config_of, get_experiment
from experiments.product.metrics import product_metrics

RESULTS = Path(__file__).resolve().parent.parent / "test-results" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "browser-admin-password"
VIEWPORT: ViewportSize = {"width": 1440, "height": 1000}
# A page runs its queries, then the browser draws charts: generous for 2 loaded cores.
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def dashboard_url(dashboard_database_url: str) -> Iterator[str]:
    """The dashboard served by ``streamlit run`` in a subprocess, as in production."""
    env = {
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_DASHBOARD_VIEWER_PASSWORD": "browser-viewer-password",
        "CODELIFT_DASHBOARD_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with running_dashboard(database_url=dashboard_database_url, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def expected(dashboard_database_url: str) -> Iterator[dict[str, str]]:
    """The key figures each page must show, computed by ``experiments/``."""
    engine: Engine = make_engine(dashboard_database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            first, last = conn.execute(
                text("SELECT min(day), max(day) FROM metric_rollup_daily")
            ).one()
            first = max(first, last - dt.timedelta(days=14))
            (total,) = product_metrics(conn, first=first, last=last, grain=None)
            comments = conn.execute(
                text("SELECT count(*) FROM feedback WHERE text IS NOT NULL")
            ).scalar_one()
            requests = conn.execute(
                text(
                    "SELECT count(*) FROM completion_served "
                    "WHERE arms ->> 'context-window' = 'control'"
                )
            ).scalar_one()
        with Session(engine) as session:
            config = config_of(get_experiment(session, "context-window"))
            report = analyze_experiment(session.connection(), config)
        yield {
            "Acceptance rate": pct(total.acceptance_rate),
            "Active users": f"{total.active_users:,}",
            "Users": f"{sum(report.users_per_arm.values()):,}",
            "Health": health_metric(report.health)[0],
            "Comments": f"{comments:,}",
            "control: requests": f"{requests:,}",
        }
    finally:
        engine.dispose()


def shows_metric(page: Page, label: str, value: str) -> None:
    """The metric ``label`` is on screen with ``value``."""
    card = page.get_by_test_id("stMetric").filter(has_text=label).first
    expect(card).to_contain_text(value, timeout=PAGE_TIMEOUT_MS)


def open_page(page: Page, title: str) -> None:
    """Follow the sidebar link to ``title`` and wait for its heading."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    heading = page.get_by_role("heading", name=title, exact=True).first
    expect(heading).to_be_visible(timeout=PAGE_TIMEOUT_MS)


CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
    .every(chart => chart.querySelector('canvas, svg'))"""


def settle(page: Page, last: str) -> None:
    """Wait until the page's last element is on screen and every chart is drawn."""
    expect(page.get_by_text(last, exact=True).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(CHARTS_DRAWN, timeout=PAGE_TIMEOUT_MS)


def screenshot(page: Page, name: str, last: str) -> None:
    """The whole page once drawn: Streamlit scrolls inside its main block, so the viewport is
    made as tall as the content for the shot."""
    settle(page, last)
    height = page.get_by_test_id("stMainBlockContainer").evaluate("e => e.scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height) + 100})
    page.wait_for_function(CHARTS_DRAWN, timeout=PAGE_TIMEOUT_MS)
    page.screenshot(path=RESULTS / f"{name}.png")
    page.set_viewport_size(VIEWPORT)


def test_every_page_in_chromium(dashboard_url: str, expected: dict[str, str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(dashboard_url)
            page.get_by_label("Your name").fill("ci")
            page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()

            expect(page.get_by_role("heading", name="Overview").first).to_be_visible(
                timeout=PAGE_TIMEOUT_MS
            )
            shows_metric(page, "Acceptance rate", expected["Acceptance rate"])
            shows_metric(page, "Active users", expected["Active users"])
            screenshot(page, "overview", "Download overview per language (CSV)")

            open_page(page, "Experiments")
            shows_metric(page, "Users", expected["Users"])
            shows_metric(page, "Stage", "stage 3/4")
            expect(page.get_by_role("button", name="Ramp to 100%")).to_be_visible()
            shows_metric(page, "Health", expected["Health"])
            expect(page.get_by_text("Latest gate decision").first).to_be_visible()
            expect(page.get_by_role("heading", name="Health checks").first).to_be_visible()
            screenshot(page, "experiments", "Download context-window health checks (CSV)")

            open_page(page, "Feedback")
            shows_metric(page, "Comments", expected["Comments"])
            expect(page.get_by_role("button", name="Save corrections")).to_be_visible()
            screenshot(page, "feedback", "Save corrections")

            open_page(page, "Serving")
            shows_metric(page, "control: requests", expected["control: requests"])
            screenshot(page, "serving", "Download serving context-window by day (CSV)")
        finally:
            browser.close()
    for name in ("overview", "experiments", "feedback", "serving"):
        assert (RESULTS / f"{name}.png").stat().st_size > 10_000
