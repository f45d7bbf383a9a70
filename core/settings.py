"""Settings shared by every deployable: where the database is and where local data lives."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

Environment = Literal["development", "test", "production"]

# Secrets that ship in images, tutorials and examples: a deployment still using one has not
# set its own. Compared case-insensitively.
DEFAULT_SECRETS = frozenset(
    {"postgres", "password", "changeme", "change-me", "secret", "admin", "codelift", "example"}
)


def refuse_default_secrets(environment: str, secrets: Mapping[str, str | None]) -> None:
    """Outside development, raise ValueError naming the first secret left at a known default.

    ``secrets`` maps each setting's name to its value; unset (None) values are not checked.
    """
    if environment == "development":
        return
    for name, value in secrets.items():
        if value is not None and (not value.strip() or value.strip().lower() in DEFAULT_SECRETS):
            raise ValueError(
                f"{name}: a well-known default secret is not allowed in the {environment} "
                "environment; set a secret of your own"
            )


class DatabaseSettings(BaseSettings):
    """The database connection; each deployable's settings class extends this one."""

    # hide_input_in_errors: a validation error must not echo the database password or a key.
    model_config = SettingsConfigDict(
        env_prefix="CODELIFT_", extra="ignore", hide_input_in_errors=True
    )

    environment: Environment = "development"
    # Both spellings are read: CODELIFT_DATABASE_URL wins, plain DATABASE_URL is what most
    # platforms inject. Unset means "start the embedded PostgreSQL in data_dir".
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CODELIFT_DATABASE_URL", "DATABASE_URL"),
    )
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".codelift")
    # Events whose client_ts is older than this are rejected; partitions exist back this far.
    max_event_age_days: int = Field(default=7, ge=1, le=60)
    # Daily partitions of the high-volume event tables: kept this many days back...
    retention_days: int = Field(default=90, ge=1)
    # ...and created this many days ahead, so a partition always exists before it is needed.
    partitions_ahead_days: int = Field(default=7, ge=1, le=90)

    @model_validator(mode="after")
    def _retention_outlasts_ingest_window(self) -> DatabaseSettings:
        if self.retention_days <= self.max_event_age_days:
            raise ValueError(
                "retention_days must be greater than max_event_age_days, or accepted events "
                "would land in partitions that maintenance drops"
            )
        return self

    @model_validator(mode="after")
    def _no_default_database_password(self) -> DatabaseSettings:
        password = make_url(self.database_url).password if self.database_url else None
        refuse_default_secrets(
            self.environment, {"database_url": str(password) if password is not None else None}
        )
        return self


def get_database_settings() -> DatabaseSettings:
    """Read the database settings from the environment."""
    return DatabaseSettings()
