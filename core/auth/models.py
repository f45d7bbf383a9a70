"""API keys: stored as a hash, with a name, scopes, an optional user and a revocation time."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ARRAY, CheckConstraint, String, func
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class ApiKey(Base):
    """One API key. The secret itself is never stored, only its SHA-256."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "scopes <@ ARRAY['ingest', 'serve', 'admin', 'evaluate']::varchar[]",
            name="known_scopes",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # Shown in listings so people can tell keys apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    # The developer a personal key belongs to: requests made with it are that user's, whatever
    # the body says. None for a shared (service) key, whose requests must name their user.
    user_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[dt.datetime | None]
