"""The dashboard app: log in, then navigate between the pages.

``streamlit run dashboard/streamlit_app.py`` runs ``main()``; tests call ``run()`` with their
own settings and database through ``AppTest.from_function``.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from pydantic import ValidationError

from dashboard.auth import current_identity, log_out
from dashboard.context import PageContext
from dashboard.settings import DashboardSettings, get_dashboard_settings
from dashboard.views import experiments, feedback, overview, serving

PageRenderer = Callable[[PageContext], None]
PageCallable = Callable[[], None]

# (url path, title, icon, renderer)
PAGES: tuple[tuple[str, str, str, PageRenderer], ...] = (
    ("overview", "Overview", ":material/insights:", overview.render),
    ("experiments", "Experiments", ":material/science:", experiments.render),
    ("feedback", "Feedback", ":material/forum:", feedback.render),
    ("serving", "Serving", ":material/dns:", serving.render),
)


def run(settings: DashboardSettings, *, database_url: str, start_page: str | None = None) -> None:
    """Render one run of the app for ``database_url``."""
    st.set_page_config(page_title="CodeLift", page_icon=":material/insights:", layout="wide")
    identity = current_identity(settings)
    if identity is None:
        return
    context = PageContext(database_url=database_url, identity=identity)
    with st.sidebar:
        st.caption(f"Logged in as **{identity.name}** ({identity.role.value})")
        if st.button("Log out", key="logout"):
            log_out(settings)
            st.rerun()
    default = start_page or PAGES[0][0]
    pages = [
        st.Page(
            _bind(render, context),
            title=title,
            icon=icon,
            url_path=path,
            default=path == default,
        )
        for path, title, icon, render in PAGES
    ]
    st.navigation(pages).run()


def _bind(render: PageRenderer, context: PageContext) -> PageCallable:
    def page() -> None:
        render(context)

    return page


def main() -> None:
    """The entry point of ``streamlit run``: settings from the environment."""
    try:
        settings = get_dashboard_settings()
    except ValidationError as exc:
        # Fail closed, and say why: no login form is offered on a weak or missing password.
        st.set_page_config(page_title="CodeLift", layout="wide")
        st.error("The dashboard's settings are refused:\n\n" + settings_errors(exc))
        return
    if not settings.database_url:
        st.error("CODELIFT_DATABASE_URL is not set; start the dashboard with `codelift dashboard`.")
        return
    run(settings, database_url=settings.database_url)


def settings_errors(exc: ValidationError) -> str:
    """The messages of a refused settings object, one bullet each (never the values)."""
    return "\n".join(f"- {error['msg'].removeprefix('Value error, ')}" for error in exc.errors())
