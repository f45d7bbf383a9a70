"""Who is looking: a password per role, or OIDC through ``st.login`` when configured."""

from __future__ import annotations

import dataclasses
import enum
import hmac
import math

import streamlit as st

from dashboard.login_throttle import LOGIN_THROTTLE, LoginThrottle, login_keys
from dashboard.settings import DashboardSettings

_SESSION_KEY = "codelift_identity"
_FAILURES_KEY = "codelift_login_failures"
# Failed logins one browser session may make. A reload starts a new session, so this only
# stops a single websocket from guessing on; the process-wide throttle stops the rest.
MAX_SESSION_FAILURES = 10
WRONG_PASSWORD = "Wrong password."
SESSION_LOCKED = (
    f"{MAX_SESSION_FAILURES} failed logins in this session: reload the page to try again."
)


class Role(enum.StrEnum):
    """A viewer reads; an admin may also ramp and pause experiments."""

    VIEWER = "viewer"
    ADMIN = "admin"


@dataclasses.dataclass(frozen=True)
class Identity:
    """The logged-in person, as recorded in the registry's audit log."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """Whether the registry buttons are offered."""
        return self.role is Role.ADMIN


def role_for_password(settings: DashboardSettings, password: str) -> Role | None:
    """The role this password opens, if any (compared in constant time)."""
    for role in (Role.ADMIN, Role.VIEWER):
        if hmac.compare_digest(password.encode(), settings.password(role.value).encode()):
            return role
    return None


def current_identity(settings: DashboardSettings) -> Identity | None:
    """The identity of this browser session, showing the login form when there is none."""
    if settings.oidc_provider:
        return _oidc_identity(settings, settings.oidc_provider)
    identity: Identity | None = st.session_state.get(_SESSION_KEY)
    if identity is not None:
        return identity
    st.title("CodeLift")
    if settings.uses_development_passwords:
        st.info("Development mode: the passwords are 'viewer' and 'admin'.")
    failures: int = st.session_state.get(_FAILURES_KEY, 0)
    if failures >= MAX_SESSION_FAILURES:
        st.error(SESSION_LOCKED)
        return None
    with st.form("login"):
        name = st.text_input("Your name", value="", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        result = log_in(settings, name=name, password=password, address=client_address())
        if isinstance(result, str):
            if result == WRONG_PASSWORD:
                st.session_state[_FAILURES_KEY] = failures + 1
            st.error(result)
            return None
        st.session_state[_SESSION_KEY] = result
        st.rerun()
    return None


def log_in(
    settings: DashboardSettings,
    *,
    name: str,
    password: str,
    address: str | None,
    throttle: LoginThrottle | None = None,
) -> Identity | str:
    """The identity this password opens, or why there is none (wrong, or throttled).

    A throttled attempt is refused before the password is looked at, so guessing on while
    throttled tells nothing. ``throttle`` defaults to the process-wide one.
    """
    # Looked up at each call, not bound as a default, so a test can swap in its own clock.
    throttle = LOGIN_THROTTLE if throttle is None else throttle
    attempt = throttle.attempt(
        login_keys(name, address), lambda: role_for_password(settings, password)
    )
    if attempt.throttled:
        return throttled_message(attempt.retry_after_s)
    if attempt.value is None:
        return WRONG_PASSWORD
    return Identity(name=name.strip() or attempt.value.value, role=attempt.value)


def throttled_message(retry_after_s: float) -> str:
    """What a throttled attempt is told: when to try again."""
    return f"Too many failed logins: try again in {math.ceil(retry_after_s)} s."


def client_address() -> str | None:
    """The browser's IP address, where Streamlit knows it.

    It does not on localhost, which includes a reverse proxy on this machine: such logins
    are throttled by name and with every other login, not by address.
    """
    address = st.context.ip_address
    # Under AppTest the runtime is a mock, whose attributes are mocks too: only a str counts.
    return address if isinstance(address, str) and address else None


def _oidc_identity(settings: DashboardSettings, provider: str) -> Identity | None:
    if not st.user.is_logged_in:
        st.title("CodeLift")
        st.button("Log in", on_click=st.login, args=(provider,))
        return None
    email = str(st.user.get("email") or "")
    admins = {address.lower() for address in settings.admin_emails}
    role = Role.ADMIN if email.lower() in admins else Role.VIEWER
    return Identity(name=email or str(st.user.get("name") or "oidc user"), role=role)


def log_out(settings: DashboardSettings) -> None:
    """Forget this session's identity."""
    st.session_state.pop(_SESSION_KEY, None)
    if settings.oidc_provider:
        st.logout()
