"""Settings of the dashboard deployable: its own are ``CODELIFT_DASHBOARD_<FIELD>``, like every
service's (``CODELIFT_<SERVICE>_<FIELD>``); the shared ones keep their ``CODELIFT_`` names."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import DatabaseSettings

# Refused outside development: a password anyone could guess is no password.
WEAK_PASSWORDS = frozenset({"", "admin", "viewer", "password", "changeme", "codelift", "secret"})
MIN_PASSWORD_CHARS = 12
# What development uses when no password is set (a banner says so).
DEVELOPMENT_PASSWORDS = {"viewer": "viewer", "admin": "admin"}


class DashboardSettings(DatabaseSettings):
    """Where the dashboard listens and who may log in.

    Two roles: a viewer reads every page; an admin may also ramp and pause experiments. Log in
    with a password per role, or with OIDC (``st.login``) when ``oidc_provider`` names a
    provider configured in Streamlit's secrets; then admins are listed by e-mail.

    The environment names (``CODELIFT_DASHBOARD_PORT``, ...) are those of the fields' former
    ``dashboard_`` names, so no old name needs an alias.
    """

    model_config = SettingsConfigDict(env_prefix="CODELIFT_DASHBOARD_")

    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=0, le=65535)
    viewer_password: SecretStr | None = None
    admin_password: SecretStr | None = None
    oidc_provider: str | None = None
    admin_emails: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _no_guessable_secret(self) -> DashboardSettings:
        if self.environment == "development" or self.oidc_provider:
            return self
        for role in ("viewer", "admin"):
            secret = getattr(self, f"{role}_password")
            value = secret.get_secret_value() if secret is not None else ""
            if value.lower() in WEAK_PASSWORDS or len(value) < MIN_PASSWORD_CHARS:
                raise ValueError(
                    f"{role}_password: set CODELIFT_DASHBOARD_{role.upper()}_PASSWORD "
                    f"to a secret of at least {MIN_PASSWORD_CHARS} characters (or configure "
                    f"OIDC) outside development; environment is {self.environment!r}"
                )
        return self

    def password(self, role: str) -> str:
        """The password of ``role``; development falls back to a well-known one."""
        secret: SecretStr | None = getattr(self, f"{role}_password")
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value()
        if self.environment != "development":
            raise ValueError(
                f"{role}_password is not set (CODELIFT_DASHBOARD_{role.upper()}_PASSWORD)"
            )
        return DEVELOPMENT_PASSWORDS[role]

    @property
    def uses_development_passwords(self) -> bool:
        """Whether a well-known password opens the dashboard."""
        return self.environment == "development" and not (
            self.viewer_password and self.admin_password
        )


def get_dashboard_settings() -> DashboardSettings:
    """Read the dashboard's settings from the environment."""
    return DashboardSettings()
