"""Checking a request's ``Authorization: Bearer`` key on the hot path, with a short cache."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from psycopg_pool import AsyncConnectionPool

from core.auth.keys import hash_key
from core.auth.scopes import Scope


class AuthError(Exception):
    """A request that may not proceed; ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The key a request was made with."""

    key_id: int
    name: str
    scopes: frozenset[str]
    revoked: bool


_LOOKUP = "SELECT id, name, scopes, revoked_at IS NOT NULL FROM api_keys WHERE key_hash = %s"


class KeyVerifier:
    """Resolves bearer keys to principals, caching each answer for ``ttl_s`` seconds.

    The cache is what keeps a database round trip off every request; its TTL is also how long a
    revocation can take to be seen, so keep it at seconds.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, authorization: str | None, scope: Scope) -> Principal:
        """The principal behind an Authorization header, if it holds ``scope``."""
        secret = _bearer_secret(authorization)
        principal = await self._lookup(hash_key(secret))
        if principal is None:
            raise AuthError(401, "unknown API key")
        if principal.revoked:
            raise AuthError(403, f"API key {principal.name!r} has been revoked")
        if scope.value not in principal.scopes:
            raise AuthError(403, f"API key {principal.name!r} lacks the {scope.value!r} scope")
        return principal

    async def _lookup(self, key_hash: str) -> Principal | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._pool.connection() as conn:
            cur = await conn.execute(_LOOKUP, (key_hash,))
            row = await cur.fetchone()
        principal = None
        if row is not None:
            key_id, name, scopes, revoked = row
            principal = Principal(key_id, name, frozenset(scopes), revoked)
        if len(self._cache) >= self._max_entries:
            # Unknown keys are cached too (so a flood of bad keys can't hammer the database);
            # a bounded dict keeps such a flood from growing memory.
            self._cache.clear()
        self._cache[key_hash] = (now + self._ttl_s, principal)
        return principal


def _bearer_secret(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(401, "missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthError(401, "Authorization header must be 'Bearer <api key>'")
    return secret.strip()
