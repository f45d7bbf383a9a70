"""Settings of the collector deployable."""

from __future__ import annotations

from pydantic import Field, model_validator
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
    # ...and, after body_grace_s, at this average rate at least (else a 408 and the connection
    # closed): a client trickling a byte a second is refused in seconds, not at the timeout.
    # Any real link is a hundred times faster; 0 turns the floor off.
    body_min_bytes_per_s: float = Field(default=1024.0, ge=0)
    body_grace_s: float = Field(default=2.0, ge=0)
    # Bodies read at once per process, before a batch may take one of the max_in_flight slots
    # (so a slow client holds a reader, never a slot); past it a 503. A reader holds at most
    # max_body_bytes for at most body_timeout_s.
    max_body_readers: int = Field(default=128, ge=1)
    # The share of those one API key may hold (past it a 429 for that key): half, so even a
    # fleet's shared key, trickling on every connection, leaves readers to the other keys.
    max_body_readers_per_key: int = Field(default=64, ge=1)
    # Request line and headers: their bytes and fields (past either a 431), and the time from a
    # connection's start (or a request's first byte) to their end (past it a 408). Our clients
    # send under 1 KiB in one packet; httptools itself has no bound at all.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_fields: int = Field(default=100, ge=8)
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Tolerated client clock skew: events up to this far in the future are accepted.
    max_clock_skew_s: int = Field(default=600, ge=0, le=86_400)
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    # How long a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=2.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    # Batches in progress at once per process, counted once their body is read; more are
    # refused at once with 503 + Retry-After (load shedding). Memory holds at most this plus
    # max_body_readers bodies of max_body_bytes.
    max_in_flight: int = Field(default=32, ge=1)
    # Batches per second allowed per API key and process (a token bucket of rate_limit_burst);
    # over it a key gets 429 with Retry-After. Generous: one key often serves a whole fleet.
    rate_limit_per_s: float = Field(default=1000.0, gt=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    # How long a key lookup is cached: also the longest a revoked key keeps working.
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    # Keys cached that exist, and (apart, so random keys cannot evict real ones) that do not.
    auth_cache_max_keys: int = Field(default=10_000, ge=1)
    auth_cache_max_misses: int = Field(default=10_000, ge=1)
    # Database lookups of keys this process has not seen, per second (a token bucket of
    # auth_miss_burst); past it a 503 + Retry-After. A flood of random keys then costs the
    # database this many queries a second, not one a request; keys in use are not counted.
    auth_miss_lookups_per_s: float = Field(default=20.0, gt=0)
    auth_miss_burst: int = Field(default=100, ge=1)
    log_level: str = "info"

    @model_validator(mode="after")
    def _reader_share_within_readers(self) -> CollectorSettings:
        if self.max_body_readers_per_key > self.max_body_readers:
            raise ValueError(
                f"max_body_readers_per_key ({self.max_body_readers_per_key}) must not exceed "
                f"max_body_readers ({self.max_body_readers})"
            )
        return self


def get_settings() -> CollectorSettings:
    """Read the collector's settings from the environment."""
    return CollectorSettings()
