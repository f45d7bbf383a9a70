"""Committed API keys for the tests (the collector must see them, so no savepoints here)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.auth.keys import create_api_key, revoke_api_key
from core.auth.scopes import Scope


@dataclasses.dataclass(frozen=True)
class Key:
    """A committed API key and its secret."""

    id: int
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header that presents this key."""
        return {"Authorization": f"Bearer {self.secret}"}


def commit_key(
    engine: Engine,
    name: str,
    scopes: list[Scope],
    *,
    revoked: bool = False,
    user_id: str | None = None,
) -> Key:
    """Create (and commit) an API key the running collector can see."""
    with Session(engine) as session:
        key, secret = create_api_key(session, name=name, scopes=scopes, user_id=user_id)
        if revoked:
            revoke_api_key(session, key_id=key.id)
        session.commit()
        return Key(id=key.id, secret=secret)


class MakeKey(Protocol):
    """The ``make_key`` fixture: commit a key that is deleted after the test."""

    def __call__(
        self, name: str, scopes: list[Scope], *, revoked: bool = False, user_id: str | None = None
    ) -> Key: ...
