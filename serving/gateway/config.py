"""Settings of the gateway deployable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import SHARED_ENV_PREFIX, DatabaseSettings, refuse_default_secrets
from experiments.variants import Variant
from serving.event_spool import DEFAULT_MAX_BYTES


class VllmBackendConfig(BaseModel):
    """One vLLM OpenAI server (one deployment per base model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    # Base models (and LoRA adapter names) this server answers for; empty means any.
    models: tuple[str, ...] = ()
    api_key: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    # Tokens per character when no tokenizer is at hand (the context budget is then estimated).
    chars_per_token: float = Field(default=3.5, gt=0)


class LocalBackendConfig(BaseModel):
    """The project's own torch engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Off when every variant is served by vLLM (the engine then never loads torch).
    enabled: bool = True
    # A checkpoint directory or file; unset means the one shipped in serving/local/checkpoints.
    checkpoint: str | None = None
    # LoRA adapter directories (or directories of them) served besides those found under
    # serving/local/checkpoints/adapters; one trained on another base stops the start.
    adapters: list[str] = Field(default_factory=list)


class GatewaySettings(DatabaseSettings):
    """Everything the gateway reads from the environment.

    Its own fields are ``CODELIFT_GATEWAY_<FIELD>`` (``CODELIFT_GATEWAY_PORT``); the shared ones
    keep their ``CODELIFT_`` names. The old ``CODELIFT_<FIELD>`` names (``CODELIFT_PORT``,
    ``CODELIFT_COLLECTOR_URL``) are still read, for one release, when the new name is unset.
    Nested values are JSON, e.g.
    ``CODELIFT_GATEWAY_DEFAULT_VARIANT='{"model": "codelift-fim-small"}'``.
    """

    model_config = SettingsConfigDict(env_prefix="CODELIFT_GATEWAY_")
    legacy_env_prefix = SHARED_ENV_PREFIX

    host: str = "127.0.0.1"
    port: int = Field(default=8200, ge=0, le=65535)
    log_level: str = "info"
    # Served when no experiment applies (or no assignment service is configured).
    default_variant: Variant = Variant(model="codelift-fim-small")
    # Where completion_served events go; unset means they are not logged.
    collector_url: str | None = None
    ingest_key: str | None = None
    # Events offered but not yet in the spool (memory; the spool's writer empties it every
    # flush interval, so it only fills when the disk stalls).
    event_queue_size: int = Field(default=10_000, ge=1)
    event_batch_size: int = Field(default=100, ge=1, le=100_000)
    # Under the collector's max_body_bytes (1 MiB by default), so a full batch is never a 413.
    event_batch_max_bytes: int = Field(default=512 * 1024, ge=1024)
    event_flush_interval_s: float = Field(default=0.2, gt=0)
    event_timeout_s: float = Field(default=2.0, gt=0)
    # Undelivered events wait on disk, retried for ever, so a collector outage or a gateway
    # restart costs no event until the spool is full. Unset means <data_dir>/gateway-spool:
    # there each collector URL has a directory and each gateway process a slot in it; the
    # slots of stopped gateways are replayed by the next one to start.
    event_spool_dir: Path | None = None
    # Per gateway process. 1 GiB holds ~1.5 million completion_served events (600-700 bytes
    # each): a 10-minute outage at 2,500 events/s, an hour at 400/s. Past it new events are
    # dropped and counted.
    event_spool_max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=64 * 1024)
    # The spool is fsynced at most this long after a write (0: after every write): a power
    # loss costs at most this long of events; a crash of the process costs none.
    event_spool_fsync_interval_s: float = Field(default=1.0, ge=0)
    # Back-off between attempts at a batch: doubling from event_backoff_s up to
    # event_max_backoff_s, with jitter, and never shorter than the collector's Retry-After.
    # A few seconds at most: events are delivered soon after the collector is back.
    event_backoff_s: float = Field(default=0.2, gt=0)
    event_max_backoff_s: float = Field(default=5.0, gt=0)
    # Requests per second allowed per API key (a token bucket of ``rate_limit_burst``).
    rate_limit_per_s: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Largest request body; more is a 413 (prompt and suffix are cut to the arm's token budget
    # anyway, so a bigger body only costs memory).
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # A body must arrive in full within this time, or the request is a 408.
    body_timeout_s: float = Field(default=10.0, gt=0)
    # Completions in progress at once; more are refused at once with 503 + Retry-After (load
    # shedding) rather than queued until clients time out.
    max_in_flight: int = Field(default=128, ge=1)
    # Whether requests need a key with the "serve" scope (keys live in the database).
    require_auth: bool = True
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    db_pool_min: int = Field(default=1, ge=1)
    db_pool_max: int = Field(default=4, ge=1)
    db_timeout_s: float = Field(default=2.0, gt=0)
    # Read experiment arms from the registry (needs the database); off means default variant.
    experiments: bool = True
    registry_refresh_s: float = Field(default=1.0, gt=0)
    # What a 503 asks the client to wait before retrying, unless the backend says otherwise.
    retry_after_s: int = Field(default=1, ge=1)
    # Stamp logged events and exposures with the request's ``client_ts`` instead of the gateway's
    # clock. Only for replays and the fleet simulator, whose developers live in simulated time;
    # in production the gateway's own clock is the one to trust.
    trust_client_time: bool = False
    local: LocalBackendConfig = LocalBackendConfig()
    vllm: tuple[VllmBackendConfig, ...] = ()

    @property
    def event_spool_root(self) -> Path:
        """Where undelivered events wait (a directory per collector below it)."""
        return self.event_spool_dir or self.data_dir / "gateway-spool"

    @model_validator(mode="after")
    def _no_default_secrets(self) -> GatewaySettings:
        secrets = {"ingest_key": self.ingest_key}
        secrets.update({f"vllm[{i}].api_key": s.api_key for i, s in enumerate(self.vllm)})
        refuse_default_secrets(self.environment, secrets)
        return self

    @model_validator(mode="after")
    def _auth_only_off_in_development(self) -> GatewaySettings:
        if not self.require_auth and self.environment != "development":
            raise ValueError(
                f"require_auth: completions without an API key are only allowed in the "
                f"development environment, not {self.environment}"
            )
        return self


def get_settings() -> GatewaySettings:
    """Read the gateway's settings from the environment."""
    return GatewaySettings()
