"""ORM sessions for short-lived commands (the CLI, scripts)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.orm import Session

from core.db.connection import make_engine


@contextlib.contextmanager
def session_for(url: str) -> Iterator[Session]:
    """A session on its own engine, disposed at the end so no connection outlives the command."""
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()
