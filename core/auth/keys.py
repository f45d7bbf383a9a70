"""Making, listing and revoking API keys (the admin path, through the ORM)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth.models import ApiKey
from core.auth.scopes import Scope

KEY_PREFIX = "cl_"


class UnknownApiKeyError(LookupError):
    """No API key has the given id."""


def hash_key(secret: str) -> str:
    """The stored form of a key.

    A plain SHA-256 is enough here, unlike for passwords: the secret carries 256 random bits,
    so there is nothing to brute-force, and a fast hash keeps the per-request check cheap.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret() -> str:
    """A new random key: ``cl_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


# The same limit as the events' user_id (collector.schemas.Id).
MAX_USER_ID = 128


def create_api_key(
    session: Session, *, name: str, scopes: Sequence[Scope], user_id: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its secret, which is not kept anywhere.

    ``user_id`` binds the key to one developer: completions asked with it are that user's
    (IDE clients such as Continue or Tabby send no user of their own).
    """
    if not name.strip():
        raise ValueError("name: must not be empty")
    if not scopes:
        raise ValueError("scopes: a key needs at least one scope")
    if user_id is not None:
        user_id = user_id.strip()
        if not user_id or len(user_id) > MAX_USER_ID or any(ord(c) < 32 for c in user_id):
            raise ValueError(
                f"user: must be 1 to {MAX_USER_ID} printable characters, got {user_id!r}"
            )
    secret = generate_secret()
    key = ApiKey(
        name=name.strip(),
        prefix=secret[:10],
        key_hash=hash_key(secret),
        scopes=sorted({scope.value for scope in scopes}),
        user_id=user_id,
    )
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session) -> Sequence[ApiKey]:
    """Every key, newest first, revoked ones included."""
    return session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).all()


def revoke_api_key(session: Session, *, key_id: int, now: dt.datetime | None = None) -> ApiKey:
    """Mark a key revoked; revoking twice keeps the first time."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise UnknownApiKeyError(f"no API key with id {key_id}")
    if key.revoked_at is None:
        key.revoked_at = now or dt.datetime.now(dt.UTC)
    session.flush()
    return key
