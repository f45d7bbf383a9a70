"""Settings shared by every deployable: where the database is and where local data lives."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class DatabaseSettings(BaseSettings):
    """The database connection; each deployable's settings class extends this one."""

    model_config = SettingsConfigDict(env_prefix="CODELIFT_", extra="ignore")

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


def get_database_settings() -> DatabaseSettings:
    """Read the database settings from the environment."""
    return DatabaseSettings()
