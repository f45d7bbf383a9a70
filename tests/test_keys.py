"""Making, listing and revoking API keys through the ORM (each test rolled back)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.auth.keys import (
    UnknownApiKeyError,
    create_api_key,
    generate_secret,
    hash_key,
    list_api_keys,
    revoke_api_key,
)
from core.auth.models import ApiKey
from core.auth.scopes import Scope
from tests.database import PgConnection

SECRET = re.compile(r"^cl_[A-Za-z0-9_-]{43}$")


def test_a_new_key_is_stored_as_a_hash_with_its_prefix(db_session: Session) -> None:
    key, secret = create_api_key(db_session, name="  vscode-plugin ", scopes=[Scope.INGEST])
    assert SECRET.match(secret)
    assert key.id is not None
    assert key.name == "vscode-plugin"
    assert key.prefix == secret[:10]
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest() == hash_key(secret)
    assert key.scopes == ["ingest"]
    assert key.revoked_at is None
    db_session.refresh(key)
    assert key.created_at.tzinfo is not None
    stored = db_session.execute(select(ApiKey.__table__)).all()
    assert all(secret not in map(str, row) for row in stored)


def test_scopes_are_sorted_and_deduplicated(db_session: Session) -> None:
    key, _ = create_api_key(
        db_session, name="gateway", scopes=[Scope.SERVE, Scope.INGEST, Scope.SERVE]
    )
    assert key.scopes == ["ingest", "serve"]


def test_every_key_gets_its_own_secret() -> None:
    secrets = {generate_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(SECRET.match(secret) for secret in secrets)


@pytest.mark.parametrize("name", ["", "   "])
def test_a_key_needs_a_name(db_session: Session, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        create_api_key(db_session, name=name, scopes=[Scope.INGEST])


def test_a_key_needs_a_scope(db_session: Session) -> None:
    with pytest.raises(ValueError, match="scope"):
        create_api_key(db_session, name="nothing", scopes=[])


def test_keys_are_listed_newest_first_revoked_ones_included(db_session: Session) -> None:
    first, _ = create_api_key(db_session, name="first", scopes=[Scope.INGEST])
    second, _ = create_api_key(db_session, name="second", scopes=[Scope.SERVE])
    revoke_api_key(db_session, key_id=first.id)
    listed = [key.name for key in list_api_keys(db_session) if key.id in {first.id, second.id}]
    assert listed == ["second", "first"]


def test_revoking_sets_the_time_once(db_session: Session) -> None:
    key, _ = create_api_key(db_session, name="leaked", scopes=[Scope.INGEST])
    when = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert revoke_api_key(db_session, key_id=key.id, now=when).revoked_at == when
    later = when + dt.timedelta(days=1)
    assert revoke_api_key(db_session, key_id=key.id, now=later).revoked_at == when
    db_session.expire_all()
    assert db_session.get(ApiKey, key.id) is not None
    assert db_session.get_one(ApiKey, key.id).revoked_at == when


def test_revoking_defaults_to_now(db_session: Session) -> None:
    key, _ = create_api_key(db_session, name="old", scopes=[Scope.INGEST])
    before = dt.datetime.now(dt.UTC)
    revoked_at = revoke_api_key(db_session, key_id=key.id).revoked_at
    assert revoked_at is not None
    assert before <= revoked_at <= dt.datetime.now(dt.UTC)


def test_revoking_an_unknown_key_raises(db_session: Session) -> None:
    with pytest.raises(UnknownApiKeyError, match="no API key with id 987654"):
        revoke_api_key(db_session, key_id=987654)


def test_the_database_refuses_unknown_scopes(db_session: Session) -> None:
    db_session.add(ApiKey(name="root", prefix="cl_x", key_hash="0" * 64, scopes=["root"]))
    with pytest.raises(IntegrityError, match="ck_api_keys_known_scopes"):
        db_session.flush()
    db_session.rollback()


def test_the_database_refuses_a_hash_twice(db_session: Session) -> None:
    key, _ = create_api_key(db_session, name="one", scopes=[Scope.INGEST])
    db_session.add(ApiKey(name="two", prefix=key.prefix, key_hash=key.key_hash, scopes=["serve"]))
    with pytest.raises(IntegrityError, match="uq_api_keys_key_hash"):
        db_session.flush()
    db_session.rollback()


def test_a_commit_inside_the_test_stays_inside_the_test(
    db_session: Session, pg: PgConnection
) -> None:
    key, _ = create_api_key(db_session, name="savepoint", scopes=[Scope.INGEST])
    db_session.commit()
    # Visible to the session after its commit, invisible to every other connection: the
    # commit only released a savepoint of the outer transaction, rolled back after the test.
    assert db_session.get(ApiKey, key.id) is not None
    seen = pg.execute("SELECT count(*) AS n FROM api_keys WHERE id = %s", (key.id,)).fetchone()
    assert seen is not None
    assert seen["n"] == 0
