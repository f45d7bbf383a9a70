"""Settings of the collector deployable."""

from __future__ import annotations

from pydantic import Field

from codelift.settings import DatabaseSettings


class CollectorSettings(DatabaseSettings):
    """Everything the collector reads from the environment (``CODELIFT_`` prefix)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    # Processes, each with its own SO_REUSEPORT socket; 0 means one per CPU core.
    workers: int = Field(default=1, ge=0, le=64)
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Tolerated client clock skew: events up to this far in the future are accepted.
    max_clock_skew_s: int = Field(default=600, ge=0, le=86_400)
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    # How long a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=2.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    # How long a key lookup is cached: also the longest a revoked key keeps working.
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    log_level: str = "info"


def get_settings() -> CollectorSettings:
    """Read the collector's settings from the environment."""
    return CollectorSettings()
