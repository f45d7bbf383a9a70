"""Who is looking: a password per role, or OIDC through ``st.login`` when configured."""

from __future__ import annotations

import dataclasses
import enum
import hmac

import streamlit as st

from dashboard.settings import DashboardSettings

_SESSION_KEY = "codelift_identity"


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
    with st.form("login"):
        name = st.text_input("Your name", value="", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        role = role_for_password(settings, password)
        if role is None:
            st.error("Wrong password.")
            return None
        identity = Identity(name=name.strip() or role.value, role=role)
        st.session_state[_SESSION_KEY] = identity
        st.rerun()
    return None


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
