"""Database URLs and engines: one URL, two spellings (SQLAlchemy's and libpq's)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url


def sqlalchemy_url(url: str) -> URL:
    """The URL with the psycopg 3 driver, whatever driver name it was given with."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(
            f"database_url must be a PostgreSQL URL, got backend {parsed.drivername!r}"
        )
    return parsed.set(drivername="postgresql+psycopg")


def libpq_conninfo(url: str) -> str:
    """The URL as psycopg/libpq wants it (no '+driver' part), for the COPY hot path."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine for the ORM paths (registry, admin, migrations)."""
    return create_engine(sqlalchemy_url(url), pool_size=pool_size, pool_pre_ping=True)
