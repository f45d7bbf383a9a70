"""Settings of the collector deployable."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.settings import SHARED_ENV_PREFIX, DatabaseSettings


class CollectorSettings(DatabaseSettings):
    """Everything the collector reads from the environment.

    Its own fields are ``CODELIFT_COLLECTOR_<FIELD>`` (``CODELIFT_COLLECTOR_PORT``); the shared
    ones keep their ``CODELIFT_`` names. The old ``CODELIFT_<FIELD>`` names (``CODELIFT_PORT``)
    are still read, for one release, when the new name is unset.
    """

    model_config = SettingsConfigDict(env_prefix="CODELIFT_COLLECTOR_")
    legacy_env_prefix = SHARED_ENV_PREFIX

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    # Processes, each with its own SO_REUSEPORT socket; 0 means one per CPU core.
    workers: int = Field(default=1, ge=0, le=64)
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A body must arrive in full within this time, or the request is a 408.
    body_timeout_s: float = Field(default=10.0, gt=0)
    # Tolerated client clock skew: events up to this far in the future are accepted.
    max_clock_skew_s: int = Field(default=600, ge=0, le=86_400)
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    # How long a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=2.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    # Batches in progress at once per process; more are refused at once with 503 + Retry-After
    # (load shedding), which also bounds memory to about this many bodies of max_body_bytes.
    max_in_flight: int = Field(default=32, ge=1)
    # Batches per second allowed per API key and process (a token bucket of rate_limit_burst);
    # over it a key gets 429 with Retry-After. Generous: one key often serves a whole fleet.
    rate_limit_per_s: float = Field(default=1000.0, gt=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    # How long a key lookup is cached: also the longest a revoked key keeps working.
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    log_level: str = "info"


def get_settings() -> CollectorSettings:
    """Read the collector's settings from the environment."""
    return CollectorSettings()
