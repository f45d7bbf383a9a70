"""The app as Streamlit's AppTest runs it (tests and the benchmark): passwords given, not read
from the environment."""

from __future__ import annotations


def app_with_passwords(database_url: str, page: str, viewer: str, admin: str) -> None:
    """One run of the dashboard on ``page`` with these passwords (``AppTest.from_function``)."""
    # AppTest runs this function's source as a script: the imports must be inside it.
    from dashboard.app import run
    from dashboard.settings import DashboardSettings

    settings = DashboardSettings(
        environment="test",
        database_url=database_url,
        viewer_password=viewer,
        admin_password=admin,
    )
    run(settings, database_url=database_url, start_page=page)
