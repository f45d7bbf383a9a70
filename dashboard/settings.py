"""Settings of the dashboard deployable: its own are ``CODELIFT_DASHBOARD_<FIELD>``, like every
service's (``CODELIFT_<SERVICE>_<FIELD>``); the shared ones keep their ``CODELIFT_`` names."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import (
    DEVELOPMENT_HINT,
    MIN_PASSWORD_CHARS,
    DatabaseSettings,
    weak_password_reason,
)

ROLES = ("viewer", "admin")
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
        # With OIDC the passwords are never asked for, so they cannot be guessed.
        if self.oidc_provider:
            return self
        if self.environment != "development":
            for role in ROLES:
                secret = getattr(self, f"{role}_password")
                reason = weak_password_reason(secret.get_secret_value() if secret else None)
                if reason is not None:
                    raise ValueError(
                        f"{role}_password: CODELIFT_DASHBOARD_{role.upper()}_PASSWORD {reason}; "
                        f"set it to a secret of your own of at least {MIN_PASSWORD_CHARS} "
                        "characters, or log in with OIDC (CODELIFT_DASHBOARD_OIDC_PROVIDER), "
                        f"{DEVELOPMENT_HINT}; the environment is {self.environment!r}"
                    )
        # In every environment: the password decides the role, so one password for both (in
        # any case) would make every viewer an admin.
        if self.password("viewer").casefold() == self.password("admin").casefold():
            raise ValueError(
                "viewer_password, admin_password: CODELIFT_DASHBOARD_VIEWER_PASSWORD and "
                "CODELIFT_DASHBOARD_ADMIN_PASSWORD are the same, so every viewer could act as "
                "an admin; give the two roles different passwords"
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
