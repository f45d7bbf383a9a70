"""What routes take from the app: the completion service, the verifier, the rate limiter."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from core.auth.scopes import Scope
from core.auth.verify import AuthError, KeyVerifier, Principal
from core.ratelimit import RateLimiter
from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.errors import (
    GatewayError,
    backend_unavailable,
    bad_request,
    forbidden,
    from_auth_error,
    rate_limited,
)
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.serving import CompletionService

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
# Scopes that may name a variant instead of being assigned one (offline backtests).
VARIANT_SCOPES = frozenset({Scope.EVALUATE.value, Scope.ADMIN.value})


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: a key's principal, or ``None`` when auth is off."""

    principal: Principal | None

    def may_choose_variant(self) -> GatewayError | None:
        """``None`` when the caller may send ``variant``, else the 403 naming the field."""
        if self.principal is None or not self.principal.scopes.isdisjoint(VARIANT_SCOPES):
            return None
        return forbidden(
            f"variant: API key {self.principal.name!r} may not choose a variant; that needs "
            "the 'evaluate' (or 'admin') scope",
            param="variant",
        )

    def user_for(self, body_user: str | None) -> str | GatewayError:
        """Whose request this is: a personal key's developer, else the body's ``user``.

        A key bound to a user wins over the body (an IDE client cannot serve one developer's
        completions as another's); a shared key, or auth turned off, needs the body to say.
        """
        if self.principal is not None and self.principal.user_id is not None:
            return self.principal.user_id
        if body_user is not None:
            return body_user
        return bad_request(
            "user is required: send it in the body (the developer's id), or use a personal "
            "API key bound to the developer (codelift keys create NAME --scope serve "
            "--user ID), which IDE clients that send no user need",
            param="user",
        )


_OPEN = Caller(None)


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

    async def admit(self, authorization: str | None) -> Caller | GatewayError:
        """Authenticate the key (scope "serve") and take a token from its rate limit."""
        key: object = ANONYMOUS
        caller = _OPEN
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
            caller = Caller(principal)
        wait = self.limiter.acquire(key)
        if wait > 0:
            return rate_limited(wait)
        return caller

    def note_extra_fields(self, names: list[str]) -> None:
        """Log unknown request fields: each new name at info, repeats at debug."""
        new = [name for name in names if name not in self.extra_fields_seen]
        if new:
            self.extra_fields_seen.update(new[:1000])
            log.info("ignoring unknown completion request field(s): %s", ", ".join(sorted(new)))
        else:
            log.debug("ignoring unknown completion request field(s): %s", ", ".join(names))
