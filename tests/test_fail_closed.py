"""Fail closed: an unset environment is production, which refuses every form of default or weak
secret; the dashboard throttles failed logins across every session of its process."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from typing import Any

import pytest
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import codelift.cli
import dashboard.auth
from collector.config import CollectorSettings
from collector.config import get_settings as collector_from_environment
from core.settings import (
    DatabaseSettings,
    get_database_settings,
    is_default_secret,
    weak_password_reason,
)
from dashboard.auth import (
    MAX_SESSION_FAILURES,
    SESSION_LOCKED,
    WRONG_PASSWORD,
    Identity,
    Role,
    log_in,
    throttled_message,
)
from dashboard.login_throttle import (
    ALL_LOGINS_POLICY,
    PER_KEY_POLICY,
    BackoffPolicy,
    LoginThrottle,
    login_keys,
)
from dashboard.settings import DashboardSettings, get_dashboard_settings
from serving.gateway.config import GatewaySettings
from serving.gateway.config import get_settings as gateway_from_environment

STRONG = "x9-" + secrets.token_urlsafe(18)
VIEWER, ADMIN = "viewer-password-fc-1", "admin-password-fc-12"
DASHBOARD_PASSWORDS = {"viewer_password": VIEWER, "admin_password": ADMIN}
NOT_DEVELOPMENT = pytest.mark.parametrize("environment", ["production", "test"])
SETTINGS_CLASSES = pytest.mark.parametrize(
    "cls",
    [DatabaseSettings, CollectorSettings, GatewaySettings, DashboardSettings],
    ids=lambda cls: cls.__name__,
)


def build(cls: type[DatabaseSettings], **values: Any) -> DatabaseSettings:
    """``cls`` from ``values``, with the dashboard's (strong) passwords where it needs them."""
    extra = DASHBOARD_PASSWORDS if cls is DashboardSettings else {}
    return cls.model_validate({**extra, **values})


def dashboard_settings(environment: str) -> DashboardSettings:
    """The dashboard's settings in ``environment``, with strong passwords."""
    return DashboardSettings.model_validate({"environment": environment, **DASHBOARD_PASSWORDS})


def refusal(cls: type[DatabaseSettings], **values: Any) -> str:
    """The message ``cls`` refuses ``values`` with."""
    with pytest.raises(ValidationError) as refused:
        build(cls, **values)
    return str(refused.value)


@pytest.fixture
def no_codelift_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's environment as a new deployment has it: no CODELIFT_ setting at all (nor
    DATABASE_URL, PGPASSWORD)."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("CODELIFT_") or upper in ("DATABASE_URL", "PGPASSWORD"):
            monkeypatch.delenv(name)


# --- An unset environment is production ---------------------------------------------------


def test_every_service_starts_in_production_unless_told(
    monkeypatch: pytest.MonkeyPatch, no_codelift_environment: None
) -> None:
    for settings in (
        get_database_settings(),
        collector_from_environment(),
        gateway_from_environment(),
    ):
        assert settings.environment == "production", type(settings).__name__
    # The dashboard then refuses to start on the development passwords, and says what to do.
    with pytest.raises(ValidationError) as refused:
        get_dashboard_settings()
    message = str(refused.value)
    assert "CODELIFT_DASHBOARD_VIEWER_PASSWORD is not set" in message
    assert "CODELIFT_ENVIRONMENT=development" in message and "means production" in message
    monkeypatch.setenv("CODELIFT_ENVIRONMENT", "development")
    assert get_dashboard_settings().uses_development_passwords


@pytest.mark.parametrize(
    ("given", "runs_in"), [(None, "development"), ("production", "production")]
)
def test_the_demo_runs_in_development_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, no_codelift_environment: None, given: str | None, runs_in: str
) -> None:
    seen: list[str | None] = []

    def demo(**options: object) -> None:
        # What the demo and the services it starts (its children) see.
        seen.append(os.environ.get("CODELIFT_ENVIRONMENT"))

    if given is not None:
        monkeypatch.setenv("CODELIFT_ENVIRONMENT", given)
    monkeypatch.setattr(codelift.cli, "demo_command", demo)
    result = CliRunner().invoke(codelift.cli.app, ["demo", "--no-serve"])
    assert result.exit_code == 0, result.output
    assert seen == [runs_in]


# --- Every form of a database password ----------------------------------------------------

DEFAULT_DATABASE_PASSWORDS = [
    pytest.param({"database_url": "postgresql://codelift:postgres@db/codelift"}, id="url"),
    pytest.param({"database_url": "postgresql://codelift:Change_Me@db/codelift"}, id="spelling"),
    pytest.param({"database_url": "postgresql://codelift:admin123@db/codelift"}, id="digits"),
    pytest.param({"database_url": "postgresql://codelift:@db/codelift"}, id="blank"),
    pytest.param({"database_url": "postgresql://codelift@db/x?password=postgres"}, id="query"),
    pytest.param(
        {"database_url": f"postgresql://u@db/x?password={STRONG}&password=secret"},
        id="second query",
    ),
    pytest.param({"database_url": "postgresql://app:App@db/x"}, id="user name"),
    pytest.param(
        {"database_url": "postgresql://u@db/x", "libpq_password": "postgres"}, id="PGPASSWORD"
    ),
]


@SETTINGS_CLASSES
@NOT_DEVELOPMENT
@pytest.mark.parametrize("values", DEFAULT_DATABASE_PASSWORDS)
def test_a_default_database_password_is_refused_in_every_form(
    cls: type[DatabaseSettings], environment: str, values: dict[str, str]
) -> None:
    message = refusal(cls, environment=environment, **values)
    named = "PGPASSWORD" if "libpq_password" in values else "database_url"
    assert named in message
    assert "set a" in message and "CODELIFT_ENVIRONMENT=development" in message
    for secret in ("postgres@", "Change_Me", "admin123", "App@", "=postgres", "=secret"):
        assert secret not in message
    # Development is a machine of one's own: a tutorial's defaults work there.
    assert build(cls, environment="development", **values)


@SETTINGS_CLASSES
def test_pgpassword_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, cls: type[DatabaseSettings]
) -> None:
    monkeypatch.setenv("PGPASSWORD", "postgres")
    assert "PGPASSWORD" in refusal(cls, environment="production")
    monkeypatch.setenv("PGPASSWORD", STRONG)
    assert build(cls, environment="production").environment == "production"


@SETTINGS_CLASSES
@pytest.mark.parametrize(
    "url",
    [None, "postgresql://codelift@db/codelift", "postgresql:///codelift?host=/run/postgresql"],
    ids=["embedded", "trust or cert", "peer"],
)
def test_no_database_password_at_all_is_fine(cls: type[DatabaseSettings], url: str | None) -> None:
    assert build(cls, environment="production", database_url=url).database_url == url


def test_a_strong_configuration_is_accepted_in_production() -> None:
    url = f"postgresql://codelift:{STRONG}@db/codelift?sslmode=require"
    for cls in (DatabaseSettings, CollectorSettings, DashboardSettings):
        assert build(cls, environment="production", database_url=url, libpq_password=STRONG)
    gateway = GatewaySettings.model_validate(
        {
            "environment": "production",
            "database_url": url,
            "ingest_key": "cl_" + STRONG,
            "vllm": [{"url": "http://gpu:8000", "api_key": "sk-" + STRONG}],
        }
    )
    assert gateway.require_auth
    dashboard = dashboard_settings("production")
    assert (dashboard.password("viewer"), dashboard.password("admin")) == (VIEWER, ADMIN)
    assert not dashboard.uses_development_passwords


# --- The dashboard's passwords ------------------------------------------------------------


@NOT_DEVELOPMENT
@pytest.mark.parametrize("role", ["viewer", "admin"])
@pytest.mark.parametrize(
    ("password", "reason"),
    [
        (None, "is not set"),
        ("   ", "is not set"),
        ("admin", "is a well-known default"),
        ("Password1234", "is a well-known default"),
        ("CHANGE-ME-2024", "is a well-known default"),
        ("short-pw", "is shorter than 12 characters"),
        ("abababababababab", "has fewer than 5 different characters"),
    ],
)
def test_a_weak_dashboard_password_is_refused(
    environment: str, role: str, password: str | None, reason: str
) -> None:
    other = "admin" if role == "viewer" else "viewer"
    values = {
        f"{role}_password": password,
        f"{other}_password": DASHBOARD_PASSWORDS[f"{other}_password"],
    }
    with pytest.raises(ValidationError) as refused:
        DashboardSettings.model_validate({"environment": environment, **values})
    message = str(refused.value)
    assert f"{role}_password: CODELIFT_DASHBOARD_{role.upper()}_PASSWORD {reason}" in message
    assert "at least 12 characters" in message and "OIDC" in message
    assert "CODELIFT_ENVIRONMENT=development" in message
    # Neither the value nor pydantic's echo of the input.
    assert "input_value" not in message
    if password and password.strip() and password != role:
        assert password not in message


@pytest.mark.parametrize("environment", ["production", "test", "development"])
@pytest.mark.parametrize("admin", [VIEWER, VIEWER.upper()], ids=["same", "same but case"])
def test_one_password_for_both_roles_is_refused_everywhere(environment: str, admin: str) -> None:
    with pytest.raises(ValidationError, match="viewer_password, admin_password: .* the same"):
        DashboardSettings(environment=environment, viewer_password=VIEWER, admin_password=admin)


def test_development_falls_back_to_the_well_known_passwords_only_there() -> None:
    development = DashboardSettings(environment="development")
    assert development.uses_development_passwords
    assert (development.password("viewer"), development.password("admin")) == ("viewer", "admin")
    # ...but a development viewer password equal to the admin's fallback is still one password.
    with pytest.raises(ValidationError, match="the same"):
        DashboardSettings(environment="development", viewer_password="admin")
    # OIDC asks for no password, so none is required.
    assert DashboardSettings(environment="production", oidc_provider="google").oidc_provider


@pytest.mark.parametrize(
    ("value", "default"),
    [
        ("postgres", True),
        ("Postgres", True),
        ("p@ssw0rd", True),
        ("change_me", True),
        ("secret-42", True),
        ("...", True),
        ("", True),
        ("postgres-prod-7f3a9c", False),
        ("correct horse battery staple", False),
        (STRONG, False),
    ],
)
def test_what_counts_as_a_default_secret(value: str, default: bool) -> None:
    assert is_default_secret(value) is default


def test_a_strong_password_has_no_weakness() -> None:
    assert weak_password_reason(STRONG) is None
    assert weak_password_reason("twelve-chars") is None


# --- The login throttle, by itself --------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Check:
    """A password check that counts its calls and opens nothing (or ``opens``)."""

    def __init__(self, opens: str | None = None) -> None:
        self.opens = opens
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.opens


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(clock=clock)


MALLORY = login_keys("mallory", "203.0.113.7")


def test_the_policies_are_as_documented() -> None:
    assert [PER_KEY_POLICY.delay_s(n) for n in range(1, 9)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert PER_KEY_POLICY.delay_s(15) == PER_KEY_POLICY.delay_s(10_000) == 15 * 60
    assert PER_KEY_POLICY.forget_after_s == 60 * 60
    assert ALL_LOGINS_POLICY.delay_s(49) == 0 and ALL_LOGINS_POLICY.delay_s(50) == 1
    assert ALL_LOGINS_POLICY.delay_s(1_000) == 10
    with pytest.raises(ValueError, match="forget_after_s"):
        BackoffPolicy(backoff_after=1, base_delay_s=1, max_delay_s=60, forget_after_s=30)


def test_after_five_failures_the_wait_doubles_up_to_the_lock_out(
    throttle: LoginThrottle, clock: Clock
) -> None:
    check = Check()
    for _ in range(4):
        assert not throttle.attempt(MALLORY, check).throttled
        assert throttle.retry_after_s(MALLORY) == 0
    waits = []
    for _ in range(12):
        assert not throttle.attempt(MALLORY, check).throttled
        waits.append(throttle.retry_after_s(MALLORY))
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
    assert check.calls == 16
    assert throttle.failures(MALLORY[0]) == 16


def test_a_throttled_attempt_is_not_checked_nor_counted(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(5):
        throttle.attempt(MALLORY, Check())
    right_password = Check(opens="admin")
    refused = throttle.attempt(MALLORY, right_password)
    assert refused.throttled and refused.value is None and refused.retry_after_s == 1
    assert right_password.calls == 0
    assert throttle.failures(MALLORY[0]) == 5
    clock.advance(0.5)
    assert throttle.attempt(MALLORY, right_password).retry_after_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert throttle.attempt(MALLORY, right_password).value == "admin"
    assert right_password.calls == 1


def test_a_success_erases_no_failure(throttle: LoginThrottle) -> None:
    # Knowing the viewer password must not reset the count of guesses at the admin one.
    for _ in range(4):
        throttle.attempt(MALLORY, Check())
        throttle.attempt(MALLORY, Check(opens="viewer"))
    throttle.attempt(MALLORY, Check())
    assert throttle.failures(MALLORY[0]) == 5 and throttle.retry_after_s(MALLORY) == 1


def test_failures_are_forgotten_an_hour_after_the_last(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(5):
        throttle.attempt(MALLORY, Check())
    clock.advance(60 * 60 - 1)
    assert throttle.failures(MALLORY[0]) == 5
    clock.advance(1)
    assert throttle.failures(MALLORY[0]) == 0 and throttle.retry_after_s(MALLORY) == 0


def test_failures_count_per_name_per_address_and_for_all(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(5):
        throttle.attempt(MALLORY, Check())
    # The same name from elsewhere waits; so does the same address under another name.
    assert throttle.retry_after_s(login_keys("Mallory ", "198.51.100.1")) == 1
    assert throttle.retry_after_s(login_keys("eve", "203.0.113.7")) == 1
    # Someone else, elsewhere, does not...
    assert throttle.retry_after_s(login_keys("ada", "198.51.100.1")) == 0
    # ...until every login together has failed 50 times, however many names and addresses.
    for i in range(45):
        throttle.attempt(login_keys(f"name-{i}", f"192.0.2.{i}"), Check())
    assert throttle.failures(("all", "")) == 50
    assert throttle.retry_after_s(login_keys("ada", "198.51.100.1")) == 1
    clock.advance(1)
    assert throttle.retry_after_s(login_keys("ada", "198.51.100.1")) == 0


def test_a_waiting_key_is_logged_without_the_name_typed(
    throttle: LoginThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dashboard.login_throttle")
    keys = login_keys("my-password-by-mistake", "203.0.113.7")
    for _ in range(4):
        throttle.attempt(keys, Check())
    assert not caplog.records
    throttle.attempt(keys, Check())
    assert "5 for address 203.0.113.7; the next is checked in 1 s" in caplog.text
    assert "5 for one name" in caplog.text
    assert "my-password-by-mistake" not in caplog.text


def test_the_keys_of_an_attempt() -> None:
    assert login_keys(" Ada ", "203.0.113.7") == (
        ("user", "ada"),
        ("address", "203.0.113.7"),
        ("all", ""),
    )
    # Unknown (localhost, a local proxy): no address key, the others still count.
    assert login_keys("ada", None) == (("user", "ada"), ("all", ""))
    # One IPv6 client holds a /64: every address in it is one key.
    first = login_keys("a", "2001:db8:1:2::1")[1]
    assert first == login_keys("a", "2001:db8:1:2:ffff::9")[1] == ("address", "2001:db8:1:2::/64")
    assert first != login_keys("a", "2001:db8:1:3::1")[1]


def test_concurrent_sessions_cannot_race_past_the_throttle(throttle: LoginThrottle) -> None:
    check = Check()
    start = threading.Barrier(32)

    def guess() -> None:
        start.wait()
        for _ in range(10):
            throttle.attempt(MALLORY, check)

    threads = [threading.Thread(target=guess) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The clock stands still: five checks, then the 1 s wait refuses the other 315 attempts.
    assert check.calls == 5


def test_the_store_sweeps_what_it_has_forgotten(throttle: LoginThrottle, clock: Clock) -> None:
    for i in range(1100):
        throttle.attempt((("user", f"u{i}"),), Check())
    clock.advance(60 * 60)
    throttle.attempt((("user", "late"),), Check())
    assert throttle.size() == 1


# --- The login throttle, through the dashboard --------------------------------------------


@pytest.fixture
def app_clock(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Clock:
    """The dashboard's process-wide throttle replaced by an empty one on the test's clock."""
    monkeypatch.setattr(dashboard.auth, "LOGIN_THROTTLE", LoginThrottle(clock=clock))
    return clock


def test_log_in_refuses_a_throttled_attempt_and_says_when_to_retry(
    app_clock: Clock,
) -> None:
    settings = dashboard_settings("test")
    for _ in range(5):
        assert log_in(settings, name="m", password="guess", address=None) == WRONG_PASSWORD
    refused = log_in(settings, name="m", password=ADMIN, address=None)
    assert refused == throttled_message(1) == "Too many failed logins: try again in 1 s."
    app_clock.advance(1)
    assert log_in(settings, name="m", password=ADMIN, address=None) == Identity("m", Role.ADMIN)


def app_from(database_url: str, viewer: str, admin: str, address: str | None) -> None:
    """The dashboard as a browser at ``address`` sees it (``AppTest.from_function``)."""
    from streamlit import runtime

    from dashboard.apptest import app_with_passwords

    if address is not None:
        # AppTest's runtime is a mock: its client's remote_ip is what st.context reads.
        mocked: Any = runtime.get_instance()
        mocked.get_client.return_value.client_context.remote_ip = address
    app_with_passwords(database_url, "overview", viewer, admin)


def browser(url: str, address: str | None = None) -> AppTest:
    """A new session (a new websocket) on the login form."""
    app = AppTest.from_function(app_from, args=(url, VIEWER, ADMIN, address), default_timeout=60)
    app.run()
    return app


def submit(app: AppTest, name: str, password: str) -> list[str]:
    """Log in on ``app``'s form; the errors shown."""
    app.text_input(key="login_name").input(name)
    app.text_input(key="login_password").input(password)
    app.button[0].click()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return [e.value for e in app.error]


def test_the_dashboard_throttles_across_sessions(
    dashboard_database_url: str, app_clock: Clock
) -> None:
    first = browser(dashboard_database_url)
    for _ in range(5):
        assert submit(first, "mallory", "guess") == [WRONG_PASSWORD]
    # A new session (a reload, another websocket) meets the same count, right password or not.
    second = browser(dashboard_database_url)
    assert submit(second, "mallory", ADMIN) == ["Too many failed logins: try again in 1 s."]
    assert "codelift_identity" not in second.session_state
    app_clock.advance(1)
    assert submit(second, "mallory", ADMIN) == []
    assert second.session_state["codelift_identity"] == Identity("mallory", Role.ADMIN)


def test_the_dashboard_throttles_an_address_under_any_name(
    dashboard_database_url: str, app_clock: Clock
) -> None:
    app = browser(dashboard_database_url, address="203.0.113.7")
    for i in range(5):
        assert submit(app, f"name-{i}", "guess") == [WRONG_PASSWORD]
    assert submit(browser(dashboard_database_url, address="203.0.113.7"), "ada", VIEWER) == [
        throttled_message(1)
    ]
    assert submit(browser(dashboard_database_url, address="198.51.100.1"), "ada", VIEWER) == []


def test_a_session_has_a_bounded_number_of_attempts(
    dashboard_database_url: str, app_clock: Clock
) -> None:
    app = browser(dashboard_database_url)
    # Another name each time, so no throttle key reaches five: only the session's bound acts.
    for i in range(MAX_SESSION_FAILURES):
        assert submit(app, f"name-{i}", "guess") == [WRONG_PASSWORD]
    app.run()
    assert [e.value for e in app.error] == [SESSION_LOCKED]
    assert not app.text_input


def dashboard_main() -> None:
    """The dashboard as ``streamlit run`` starts it: settings from the environment."""
    from dashboard.app import main

    main()


def test_refused_settings_offer_no_login_form(no_codelift_environment: None) -> None:
    app = AppTest.from_function(dashboard_main, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    [error] = [e.value for e in app.error]
    assert "CODELIFT_DASHBOARD_VIEWER_PASSWORD is not set" in error
    assert "CODELIFT_ENVIRONMENT=development" in error
    assert not app.text_input
