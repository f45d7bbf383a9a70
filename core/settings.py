"""Settings shared by every deployable: where the database is and where local data lives.

One naming convention for the environment: a setting every deployable shares (the ones defined
here) is ``CODELIFT_<FIELD>``; a setting of one service is ``CODELIFT_<SERVICE>_<FIELD>``
(``CODELIFT_COLLECTOR_PORT``, ``CODELIFT_GATEWAY_PORT``, ``CODELIFT_DASHBOARD_PORT``), so one
environment configures every service. A service class sets its own ``env_prefix``; the shared
fields are pinned to their ``CODELIFT_`` names by ``validation_alias``, which no prefix changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

Environment = Literal["development", "test", "production"]

# The prefix of the settings every deployable shares.
SHARED_ENV_PREFIX = "CODELIFT_"

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
    """The database connection; each deployable's settings class extends this one.

    A subclass sets ``env_prefix`` to ``CODELIFT_<SERVICE>_`` for its own fields. It may also
    set ``legacy_env_prefix``: its fields are then read from ``<legacy prefix><FIELD>`` too
    when the new name is unset (the old names, kept for one release; the new name wins).
    """

    # hide_input_in_errors: a validation error must not echo the database password or a key.
    model_config = SettingsConfigDict(
        env_prefix=SHARED_ENV_PREFIX, extra="ignore", hide_input_in_errors=True
    )
    legacy_env_prefix: ClassVar[str | None] = None

    environment: Environment = Field(
        default="development", validation_alias=AliasChoices("CODELIFT_ENVIRONMENT")
    )
    # Both spellings are read: CODELIFT_DATABASE_URL wins, plain DATABASE_URL is what most
    # platforms inject. Unset means "start the embedded PostgreSQL in data_dir".
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CODELIFT_DATABASE_URL", "DATABASE_URL"),
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".codelift",
        validation_alias=AliasChoices("CODELIFT_DATA_DIR"),
    )
    # Events whose client_ts is older than this are rejected; partitions exist back this far.
    max_event_age_days: int = Field(
        default=7, ge=1, le=60, validation_alias=AliasChoices("CODELIFT_MAX_EVENT_AGE_DAYS")
    )
    # Daily partitions of the high-volume event tables: kept this many days back...
    retention_days: int = Field(
        default=90, ge=1, validation_alias=AliasChoices("CODELIFT_RETENTION_DAYS")
    )
    # ...and created this many days ahead, so a partition always exists before it is needed.
    partitions_ahead_days: int = Field(
        default=7, ge=1, le=90, validation_alias=AliasChoices("CODELIFT_PARTITIONS_AHEAD_DAYS")
    )

    @model_validator(mode="before")
    @classmethod
    def _shared_fields_by_name(cls, data: object) -> object:
        """In Python (``DashboardSettings(environment=...)``, ``model_validate``) a shared field
        goes by its name as well as its alias.

        Not ``validate_by_name``: that would also read ``<service prefix><FIELD>`` from the
        environment (``CODELIFT_COLLECTOR_ENVIRONMENT``), a name the convention does not have.
        A field name only comes from Python, never from the environment, so it wins.
        """
        if not isinstance(data, dict):
            return data
        named = dict(data)
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if name in named and isinstance(alias, AliasChoices):
                named[str(alias.choices[0])] = named.pop(name)
        return named

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        if cls.legacy_env_prefix is None:
            return sources
        # Last, so lowest priority: an old name only counts when the new one is unset.
        return (*sources, EnvSettingsSource(settings_cls, env_prefix=cls.legacy_env_prefix))

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
