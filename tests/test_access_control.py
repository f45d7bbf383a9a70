"""Access: every non-public route of the collector and the gateway needs a key with its scope;
keys are hashed at rest and revocation is seen within seconds; rate limits are per key; no
secret reaches the logs; settings refuse well-known default secrets outside development.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from psycopg import sql
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute, Route

from collector.config import CollectorSettings
from collector.main import create_app as create_collector
from core.auth.keys import revoke_api_key
from core.auth.scopes import Scope
from core.settings import DatabaseSettings
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app as create_gateway
from serving.gateway.server import running
from serving.scripted_backend import ScriptedBackend
from tests import factories
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection
from tests.experiment_factories import DEFAULT_VARIANT
from tests.servers import collector_settings, run_collector

# Routes anyone may call: liveness, readiness, metrics and the API's own documentation.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
# Every other route, and the scope its key needs. A new route fails the test until it is
# listed here, so nobody adds an endpoint without deciding who may call it.
COLLECTOR_SCOPES = {("POST", "/v1/events"): Scope.INGEST}
GATEWAY_SCOPES = {
    ("POST", "/v1/completions"): Scope.SERVE,
    ("POST", "/v1/fim/completions"): Scope.SERVE,
    ("POST", "/infill"): Scope.SERVE,
    ("POST", "/generate"): Scope.SERVE,
    ("GET", "/v1/models"): Scope.SERVE,
    ("GET", "/v1/models/{model_id:path}"): Scope.SERVE,
}
# A request each protected route answers 200 to, given the right key (the model path below is
# the default variant's model).
BODIES: dict[str, dict[str, Any]] = {
    "/v1/completions": {"prompt": "x", "user": "u", "max_tokens": 4},
    "/v1/fim/completions": {"prompt": "x", "suffix": "", "user": "u", "max_tokens": 4},
    "/infill": {"input_prefix": "x", "input_suffix": "", "user": "u", "n_predict": 4},
    "/generate": {"inputs": "x", "user": "u", "parameters": {"max_new_tokens": 4}},
}


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """Every route, with included routers opened up (FastAPI wraps them)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from leaf_routes(included.routes)
        else:
            assert isinstance(route, Route), route
            yield route


def protected_routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for route in leaf_routes(app.routes):
        if route.path in PUBLIC:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def gateway_settings(database_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "default_variant": DEFAULT_VARIANT,
        "experiments": False,
        "auth_cache_ttl_s": 1.0,
        "rate_limit_per_s": 1000.0,
        "rate_limit_burst": 1000,
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


@pytest.fixture(scope="module")
def gateway_url(database_url: str) -> Iterator[str]:
    app = create_gateway(gateway_settings(database_url), {"local": ScriptedBackend("pass")})
    with running(app) as url:
        yield url


def call(base_url: str, method: str, path: str, key: Key | None) -> httpx.Response:
    body: dict[str, Any] | None = None
    if path == "/v1/events":
        body = factories.batch(factories.suggestion_shown())
    elif path in BODIES:
        body = BODIES[path]
    elif path == "/v1/models/{model_id:path}":
        path = f"/v1/models/{DEFAULT_VARIANT.model}"
    headers = key.headers if key else {}
    return httpx.request(method, f"{base_url}{path}", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("service", ["collector", "gateway"])
def test_every_protected_route_needs_a_key_with_its_scope(
    service: str,
    database_url: str,
    collector_url: str,
    gateway_url: str,
    make_key: MakeKey,
    clean_events: None,
) -> None:
    if service == "collector":
        app = create_collector(collector_settings(database_url))
        scopes, base_url = COLLECTOR_SCOPES, collector_url
    else:
        app = create_gateway(gateway_settings(database_url), {"local": ScriptedBackend("pass")})
        scopes, base_url = GATEWAY_SCOPES, gateway_url
    assert protected_routes(app) == set(scopes)
    for (method, path), needed in scopes.items():
        right = make_key(f"right-{needed}", [needed])
        # Every other scope together, admin included, still does not grant this one.
        wrong = make_key(f"wrong-{needed}", [s for s in Scope if s != needed])
        revoked = make_key(f"revoked-{needed}", [needed], revoked=True)
        unknown = Key(id=0, secret="cl_" + secrets.token_urlsafe(32))
        assert call(base_url, method, path, None).status_code == 401, (method, path)
        assert call(base_url, method, path, unknown).status_code == 401, (method, path)
        assert call(base_url, method, path, wrong).status_code == 403, (method, path)
        assert call(base_url, method, path, revoked).status_code == 403, (method, path)
        assert call(base_url, method, path, right).status_code == 200, (method, path)


def test_keys_are_stored_only_as_hashes(pg: PgConnection, make_key: MakeKey) -> None:
    key = make_key("hashed", [Scope.INGEST, Scope.SERVE, Scope.ADMIN])
    tables = [
        row["relname"]
        for row in pg.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
            " AND relkind IN ('r', 'p') AND NOT relispartition"
        )
    ]
    assert "api_keys" in tables
    for table in tables:
        found = pg.execute(
            sql.SQL("SELECT count(*) AS n FROM {} t WHERE t::text LIKE %s").format(
                sql.Identifier(table)
            ),
            (f"%{key.secret[3:]}%",),
        ).fetchone()
        assert found is not None and found["n"] == 0, table


@pytest.mark.parametrize("service", ["collector", "gateway"])
def test_revocation_takes_effect_within_seconds(
    service: str, engine: Engine, collector_url: str, gateway_url: str, make_key: MakeKey
) -> None:
    scope, path = (
        (Scope.INGEST, "/v1/events") if service == "collector" else (Scope.SERVE, "/v1/completions")
    )
    base_url = collector_url if service == "collector" else gateway_url
    key = make_key("to-revoke", [scope])
    assert call(base_url, "POST", path, key).status_code == 200
    with Session(engine) as session:
        revoke_api_key(session, key_id=key.id)
        session.commit()
    revoked_at = time.monotonic()
    while (status := call(base_url, "POST", path, key).status_code) == 200:
        assert time.monotonic() - revoked_at < 3.0, "revocation not seen within 3 s"
        time.sleep(0.05)
    assert status == 403


def test_collector_rate_limits_each_key_on_its_own(
    database_url: str, make_key: MakeKey, clean_events: None
) -> None:
    busy, quiet = make_key("busy", [Scope.INGEST]), make_key("quiet", [Scope.INGEST])
    settings = collector_settings(database_url, rate_limit_per_s=0.5, rate_limit_burst=2)
    with run_collector(settings) as url:
        statuses = [call(url, "POST", "/v1/events", busy).status_code for _ in range(3)]
        limited = call(url, "POST", "/v1/events", busy)
        other = call(url, "POST", "/v1/events", quiet)
    assert statuses == [200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other.status_code == 200


def test_gateway_rate_limits_each_key_on_its_own(database_url: str, make_key: MakeKey) -> None:
    busy, quiet = make_key("busy", [Scope.SERVE]), make_key("quiet", [Scope.SERVE])
    settings = gateway_settings(database_url, rate_limit_per_s=0.5, rate_limit_burst=2)
    with running(create_gateway(settings, {"local": ScriptedBackend("pass")})) as url:
        statuses = [call(url, "POST", "/v1/completions", busy).status_code for _ in range(3)]
        other = call(url, "POST", "/v1/completions", quiet)
    assert statuses == [200, 200, 429]
    assert other.status_code == 200


def test_no_secret_reaches_the_logs(
    database_url: str,
    make_key: MakeKey,
    caplog: pytest.LogCaptureFixture,
    clean_events: None,
) -> None:
    password = "pw-" + secrets.token_hex(8)
    # Trust authentication ignores the password, so the URL still connects.
    with_password = make_url(database_url).set(password=password).render_as_string(False)
    ingest = make_key("log-ingest", [Scope.INGEST])
    serve = make_key("log-serve", [Scope.SERVE])
    revoked = make_key("log-revoked", [Scope.INGEST, Scope.SERVE], revoked=True)
    unknown = Key(id=0, secret="cl_" + secrets.token_urlsafe(32))
    caplog.set_level(logging.DEBUG)
    with (
        run_collector(collector_settings(with_password)) as collector,
        run_collector(
            collector_settings(f"postgresql://u:{password}@127.0.0.1:1/x", db_timeout_s=0.3)
        ) as down,
    ):
        good = gateway_settings(with_password, collector_url=collector, ingest_key=ingest.secret)
        # A gateway whose events the collector refuses: that refusal is logged.
        refused = gateway_settings(
            with_password, collector_url=collector, ingest_key=unknown.secret
        )
        for settings in (good, refused):
            with running(create_gateway(settings, {"local": ScriptedBackend("pass")})) as url:
                for key in (serve, revoked, unknown, None):
                    call(url, "POST", "/v1/completions", key)
                    call(url, "GET", "/v1/models", key)
        for key in (ingest, revoked, unknown, None):
            call(collector, "POST", "/v1/events", key)
            call(down, "POST", "/v1/events", key)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    # The paths that log credentials' neighbours ran: refused events, a database outage.
    assert "collector refused" in logged and "Connection refused" in logged
    for secret in (password, ingest.secret, serve.secret, revoked.secret, unknown.secret):
        assert secret not in logged
        assert secret[3:20] not in logged


DEFAULT_DB_URL = "postgresql://codelift:postgres@db.internal:5432/codelift"


@pytest.mark.parametrize("environment", ["production", "test"])
@pytest.mark.parametrize(
    ("settings_class", "values", "field"),
    [
        (DatabaseSettings, {"database_url": DEFAULT_DB_URL}, "database_url"),
        (
            CollectorSettings,
            {"database_url": DEFAULT_DB_URL.replace("postgres@", "Password@")},
            "database_url",
        ),
        (
            GatewaySettings,
            {"database_url": "postgresql://u@h/d", "ingest_key": "changeme"},
            "ingest_key",
        ),
        (
            GatewaySettings,
            {
                "database_url": "postgresql://u@h/d",
                "vllm": [{"url": "http://v", "api_key": "secret"}],
            },
            "vllm[0].api_key",
        ),
    ],
    ids=["database password", "collector database password", "ingest key", "vLLM api key"],
)
def test_settings_refuse_default_secrets_outside_development(
    settings_class: type[DatabaseSettings], values: dict[str, Any], field: str, environment: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings_class.model_validate({**values, "environment": environment})
    message = str(refused.value)
    assert field in message
    # The refusal names the field, never the value.
    assert "changeme" not in message and "Password@" not in message and "secret'" not in message
    # Development keeps working with the defaults of a tutorial.
    assert settings_class.model_validate({**values, "environment": "development"})


def test_settings_accept_real_secrets_in_production() -> None:
    strong = "x9" + secrets.token_urlsafe(16)
    settings = GatewaySettings.model_validate(
        {
            "environment": "production",
            "database_url": f"postgresql://codelift:{strong}@db/codelift",
            "ingest_key": "cl_" + strong,
        }
    )
    assert settings.environment == "production"


@pytest.mark.parametrize("environment", ["production", "test"])
def test_the_gateway_cannot_run_without_keys_outside_development(environment: str) -> None:
    values = {"database_url": "postgresql://u@h/d", "require_auth": False}
    with pytest.raises(ValidationError, match="require_auth"):
        GatewaySettings.model_validate({**values, "environment": environment})
    assert not GatewaySettings.model_validate({**values, "environment": "development"}).require_auth
