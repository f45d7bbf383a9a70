"""What routes take from the app: the completion service, the verifier, the rate limiter."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from codelift.auth.models import Scope
from codelift.auth.verify import AuthError, KeyVerifier
from codelift.ratelimit import RateLimiter
from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.errors import GatewayError, backend_unavailable, from_auth_error, rate_limited
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.serving import CompletionService

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


@dataclasses.dataclass(slots=True)
class GatewayState:
    """Everything a request needs, made in the app's lifespan and kept on ``app.state.gateway``."""

    settings: GatewaySettings
    service: CompletionService
    events: EventLogger
    metrics: GatewayMetrics
    limiter: RateLimiter
    verifier: KeyVerifier | None
    # Names of unknown request fields already logged (each is logged once at info level).
    extra_fields_seen: set[str] = dataclasses.field(default_factory=set)

    async def admit(self, authorization: str | None) -> GatewayError | None:
        """Authenticate the key (scope "serve") and take a token from its rate limit."""
        key: object = ANONYMOUS
        if self.verifier is not None:
            try:
                principal = await self.verifier.authenticate(authorization, Scope.SERVE)
            except AuthError as exc:
                return from_auth_error(exc)
            except psycopg.OperationalError:
                # Keys live in the database: an outage is a 503 to retry, not a 500.
                return backend_unavailable(
                    "API key store unavailable; retry later", self.settings.retry_after_s
                )
            key = principal.key_id
        wait = self.limiter.acquire(key)
        if wait > 0:
            return rate_limited(wait)
        return None

    def note_extra_fields(self, names: list[str]) -> None:
        """Log unknown request fields: each new name at info, repeats at debug."""
        new = [name for name in names if name not in self.extra_fields_seen]
        if new:
            self.extra_fields_seen.update(new[:1000])
            log.info("ignoring unknown completion request field(s): %s", ", ".join(sorted(new)))
        else:
            log.debug("ignoring unknown completion request field(s): %s", ", ".join(names))
