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

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

Environment = Literal["development", "test", "production"]
# Unset means production: a service refuses well-known secrets unless the machine says, with
# CODELIFT_ENVIRONMENT=development, that it is somebody's own (the demo, `make run`).
DEFAULT_ENVIRONMENT: Environment = "production"
DEVELOPMENT_HINT = (
    "or set CODELIFT_ENVIRONMENT=development on a machine that is only for development "
    "(an unset CODELIFT_ENVIRONMENT means production)"
)

# The prefix of the settings every deployable shares.
SHARED_ENV_PREFIX = "CODELIFT_"

# Secrets that ship in images, tutorials and examples, and the first guesses of any attacker: a
# deployment still using one has not set its own. Spelled as ``_normalized`` leaves them.
DEFAULT_SECRETS = frozenset(
    """
    postgres postgresql password passw0rd pssw0rd pass passwd changeme changeit secret admin
    administrator root toor viewer user guest test demo default example codelift letmein qwerty
    welcome 123456 12345678 123456789 1234567890
    """.split()
)
# What the project asks of a password it checks itself (the dashboard's), outside development:
# with the login throttle, a dozen characters that are not a known default nor a few repeated
# are out of reach of online guessing.
MIN_PASSWORD_CHARS = 12
MIN_DISTINCT_CHARS = 5


def _normalized(value: str) -> str:
    """``value`` without case and separators: "Change_Me" and "change-me" are "changeme"."""
    return "".join(char for char in value.casefold() if char.isalnum())


def is_default_secret(value: str) -> bool:
    """Whether ``value`` is blank or a well-known default, whatever its case, its separators
    and any digits appended ("Postgres", "change-me", "admin123")."""
    normalized = _normalized(value)
    if not normalized:
        return True
    return bool({normalized, normalized.rstrip("0123456789")} & DEFAULT_SECRETS)


def weak_password_reason(value: str | None) -> str | None:
    """Why ``value`` is too weak for a password the project checks itself, or None."""
    if value is None or not value.strip():
        return "is not set"
    if is_default_secret(value):
        return "is a well-known default"
    if len(value) < MIN_PASSWORD_CHARS:
        return f"is shorter than {MIN_PASSWORD_CHARS} characters"
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"has fewer than {MIN_DISTINCT_CHARS} different characters"
    return None


def refuse_default_secrets(environment: str, secrets: Mapping[str, str | None]) -> None:
    """Outside development, raise ValueError naming the first secret left at a known default.

    ``secrets`` maps each setting's name to its value; unset (None) values are not checked.
    The message names the setting, never the value.
    """
    if environment == "development":
        return
    for name, value in secrets.items():
        if value is not None and is_default_secret(value):
            raise ValueError(
                f"{name}: a blank or well-known default secret is not allowed in the "
                f"{environment} environment; set a secret of your own, {DEVELOPMENT_HINT}"
            )


def database_passwords(url: str | None, libpq_password: str | None) -> dict[str, str | None]:
    """Every password the database connection may send, by the setting it comes from."""
    passwords: dict[str, str | None] = {"PGPASSWORD (in the environment)": libpq_password}
    if not url:
        return passwords
    parsed = make_url(url)
    passwords["database_url (the password of CODELIFT_DATABASE_URL or DATABASE_URL)"] = (
        str(parsed.password) if parsed.password is not None else None
    )
    for key, values in parsed.query.items():
        if key.casefold() != "password":
            continue
        # libpq reads ?password=... as it reads user:password@; a repeated one is a tuple.
        for i, value in enumerate((values,) if isinstance(values, str) else values):
            passwords[f"database_url (its ?password= parameter{f' #{i + 1}' if i else ''})"] = value
    return passwords


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
        default=DEFAULT_ENVIRONMENT, validation_alias=AliasChoices("CODELIFT_ENVIRONMENT")
    )
    # Both spellings are read: CODELIFT_DATABASE_URL wins, plain DATABASE_URL is what most
    # platforms inject. Unset means "start the embedded PostgreSQL in data_dir".
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CODELIFT_DATABASE_URL", "DATABASE_URL"),
    )
    # libpq sends PGPASSWORD when the URL has none; read only to refuse a default one.
    libpq_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PGPASSWORD"), exclude=True
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
        # No form of the password may be a default one; none at all is fine (trust, peer or
        # certificate authentication, the embedded database).
        if self.environment == "development":
            return self
        libpq = self.libpq_password.get_secret_value() if self.libpq_password else None
        refuse_default_secrets(self.environment, database_passwords(self.database_url, libpq))
        url = make_url(self.database_url) if self.database_url else None
        if url is not None and url.password is not None and url.username is not None:
            if _normalized(str(url.password)) == _normalized(url.username):
                raise ValueError(
                    "database_url: the password of CODELIFT_DATABASE_URL (or DATABASE_URL) is "
                    f"its user name, which is not allowed in the {self.environment} "
                    f"environment; set a password of your own, {DEVELOPMENT_HINT}"
                )
        return self


def get_database_settings() -> DatabaseSettings:
    """Read the database settings from the environment."""
    return DatabaseSettings()
