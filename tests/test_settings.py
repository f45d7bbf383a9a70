"""The settings convention: shared settings are ``CODELIFT_<FIELD>``, a service's own are
``CODELIFT_<SERVICE>_<FIELD>``, and the collector's and gateway's old ``CODELIFT_<FIELD>`` names
still work (for one release) when the new name is unset."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from collector.config import CollectorSettings
from core.settings import DatabaseSettings
from dashboard.settings import DashboardSettings
from serving.gateway.config import GatewaySettings
from tests.processes import free_port, service_process

ServiceSettings = CollectorSettings | GatewaySettings | DashboardSettings
SERVICES: list[tuple[str, type[ServiceSettings]]] = [
    ("COLLECTOR", CollectorSettings),
    ("GATEWAY", GatewaySettings),
    ("DASHBOARD", DashboardSettings),
]
SHARED_FIELDS = set(DatabaseSettings.model_fields)
# Fields both the collector and the gateway have, with a default of their own each: before the
# convention one CODELIFT_<FIELD> set both.
COMMON_FIELDS = sorted(
    (set(CollectorSettings.model_fields) & set(GatewaySettings.model_fields)) - SHARED_FIELDS
)

# The shared settings class and every service's, which must all read the shared names.
EVERY_SETTINGS_CLASS = pytest.mark.parametrize(
    "cls",
    [DatabaseSettings, CollectorSettings, GatewaySettings, DashboardSettings],
    ids=lambda cls: cls.__name__,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CODELIFT_ setting (or DATABASE_URL, PGPASSWORD) of the machine running the tests
    leaks in; these tests are about names, so they run in development, where no secret is
    asked for, unless they say otherwise."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("CODELIFT_") or upper in ("DATABASE_URL", "PGPASSWORD"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CODELIFT_ENVIRONMENT", "development")


def other_value(value: object) -> str:
    """A valid value other than ``value`` (a default), as the environment spells it."""
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int | float):
        return str(value + 1)
    if isinstance(value, str):
        return f"{value}-other" if value != "info" else "debug"
    raise AssertionError(f"no other value for {value!r}")


def test_the_services_shared_the_names_that_are_now_their_own() -> None:
    assert {"port", "host", "rate_limit_per_s", "max_in_flight", "db_pool_min"} <= set(
        COMMON_FIELDS
    )


@pytest.mark.parametrize(("service", "cls"), SERVICES, ids=[s for s, _ in SERVICES])
def test_each_service_reads_its_own_port(
    monkeypatch: pytest.MonkeyPatch, service: str, cls: type[ServiceSettings]
) -> None:
    monkeypatch.setenv(f"CODELIFT_{service}_PORT", "9123")
    assert cls().port == 9123


def test_one_environment_configures_collector_and_gateway_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector, gateway = CollectorSettings(), GatewaySettings()
    for field in COMMON_FIELDS:
        monkeypatch.setenv(
            f"CODELIFT_COLLECTOR_{field.upper()}", other_value(getattr(collector, field))
        )
        monkeypatch.setenv(
            f"CODELIFT_GATEWAY_{field.upper()}", other_value(getattr(gateway, field))
        )
    new_collector, new_gateway = CollectorSettings(), GatewaySettings()
    for field in COMMON_FIELDS:
        assert str(getattr(new_collector, field)).lower() == other_value(
            getattr(collector, field)
        ), field
        assert str(getattr(new_gateway, field)).lower() == other_value(getattr(gateway, field)), (
            field
        )


def test_a_service_does_not_pick_up_another_services_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODELIFT_GATEWAY_PORT", "9201")
    monkeypatch.setenv("CODELIFT_GATEWAY_RATE_LIMIT_PER_S", "7")
    monkeypatch.setenv("CODELIFT_DASHBOARD_PORT", "9501")
    monkeypatch.setenv("CODELIFT_DASHBOARD_HOST", "0.0.0.0")
    collector = CollectorSettings()
    assert (collector.port, collector.rate_limit_per_s, collector.host) == (
        8100,
        1000.0,
        "127.0.0.1",
    )
    monkeypatch.setenv("CODELIFT_COLLECTOR_PORT", "9101")
    monkeypatch.setenv("CODELIFT_COLLECTOR_MAX_IN_FLIGHT", "3")
    gateway = GatewaySettings()
    assert (gateway.port, gateway.rate_limit_per_s, gateway.max_in_flight) == (9201, 7.0, 128)
    dashboard = DashboardSettings()
    assert (dashboard.port, dashboard.host) == (9501, "0.0.0.0")
    # The old, shared names were never the dashboard's: CODELIFT_PORT is not its port.
    monkeypatch.delenv("CODELIFT_DASHBOARD_PORT")
    monkeypatch.setenv("CODELIFT_PORT", "9000")
    assert DashboardSettings().port == 8501


def test_the_old_names_still_work_when_the_new_one_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODELIFT_PORT", "9000")
    monkeypatch.setenv("CODELIFT_WORKERS", "3")
    monkeypatch.setenv("CODELIFT_RATE_LIMIT_PER_S", "5")
    monkeypatch.setenv("CODELIFT_COLLECTOR_URL", "http://collector.example:8100")
    monkeypatch.setenv("CODELIFT_INGEST_KEY", "an-ingest-key-of-its-own")
    monkeypatch.setenv("CODELIFT_LOCAL", '{"enabled": false}')
    monkeypatch.setenv("CODELIFT_VLLM", '[{"url": "http://gpu:8000", "models": ["qwen"]}]')
    collector = CollectorSettings()
    assert (collector.port, collector.workers, collector.rate_limit_per_s) == (9000, 3, 5.0)
    gateway = GatewaySettings()
    assert (gateway.port, gateway.rate_limit_per_s) == (9000, 5.0)
    assert gateway.collector_url == "http://collector.example:8100"
    assert gateway.ingest_key == "an-ingest-key-of-its-own"
    assert not gateway.local.enabled and gateway.vllm[0].models == ("qwen",)


def test_the_new_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODELIFT_PORT", "9000")
    monkeypatch.setenv("CODELIFT_COLLECTOR_PORT", "9100")
    monkeypatch.setenv("CODELIFT_GATEWAY_PORT", "9200")
    monkeypatch.setenv("CODELIFT_COLLECTOR_URL", "http://old.example")
    monkeypatch.setenv("CODELIFT_GATEWAY_COLLECTOR_URL", "http://new.example")
    monkeypatch.setenv("CODELIFT_LOCAL", '{"enabled": false}')
    monkeypatch.setenv("CODELIFT_GATEWAY_LOCAL", '{"enabled": true, "checkpoint": "/ckpt"}')
    assert CollectorSettings().port == 9100
    gateway = GatewaySettings()
    assert (gateway.port, gateway.collector_url) == (9200, "http://new.example")
    assert gateway.local.enabled and gateway.local.checkpoint == "/ckpt"


@EVERY_SETTINGS_CLASS
def test_shared_names_reach_every_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cls: type[DatabaseSettings]
) -> None:
    monkeypatch.setenv("CODELIFT_ENVIRONMENT", "test")
    monkeypatch.setenv("CODELIFT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CODELIFT_MAX_EVENT_AGE_DAYS", "3")
    monkeypatch.setenv("CODELIFT_RETENTION_DAYS", "30")
    monkeypatch.setenv("CODELIFT_PARTITIONS_AHEAD_DAYS", "5")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:platform-password@db/plain")
    # Outside development the dashboard wants real passwords.
    monkeypatch.setenv("CODELIFT_DASHBOARD_VIEWER_PASSWORD", "a-long-viewer-password")
    monkeypatch.setenv("CODELIFT_DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    settings = cls()
    assert settings.environment == "test"
    assert settings.data_dir == tmp_path
    assert (settings.max_event_age_days, settings.retention_days) == (3, 30)
    assert settings.partitions_ahead_days == 5
    assert settings.database_url == "postgresql://u:platform-password@db/plain"
    monkeypatch.setenv("CODELIFT_DATABASE_URL", "postgresql://u:own-password@db/own")
    assert cls().database_url == "postgresql://u:own-password@db/own"


@pytest.mark.parametrize(("service", "cls"), SERVICES, ids=[s for s, _ in SERVICES])
def test_shared_settings_have_no_service_name(
    monkeypatch: pytest.MonkeyPatch, service: str, cls: type[ServiceSettings]
) -> None:
    monkeypatch.setenv(f"CODELIFT_{service}_ENVIRONMENT", "production")
    monkeypatch.setenv(f"CODELIFT_{service}_RETENTION_DAYS", "30")
    settings = cls()
    assert (settings.environment, settings.retention_days) == ("development", 90)
    # Nor does a service's name for it make development: only CODELIFT_ENVIRONMENT does.
    monkeypatch.delenv("CODELIFT_ENVIRONMENT")
    monkeypatch.setenv(f"CODELIFT_{service}_ENVIRONMENT", "development")
    monkeypatch.setenv("CODELIFT_DASHBOARD_VIEWER_PASSWORD", "a-long-viewer-password")
    monkeypatch.setenv("CODELIFT_DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    assert cls().environment == "production"


@EVERY_SETTINGS_CLASS
def test_an_unset_environment_is_production(
    monkeypatch: pytest.MonkeyPatch, cls: type[DatabaseSettings]
) -> None:
    monkeypatch.delenv("CODELIFT_ENVIRONMENT")
    monkeypatch.setenv("CODELIFT_DASHBOARD_VIEWER_PASSWORD", "a-long-viewer-password")
    monkeypatch.setenv("CODELIFT_DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    assert cls().environment == "production"
    assert cls(environment="development").environment == "development"


@EVERY_SETTINGS_CLASS
def test_pgpassword_is_read_by_libpqs_name_only(
    monkeypatch: pytest.MonkeyPatch, cls: type[DatabaseSettings]
) -> None:
    monkeypatch.setenv("PGPASSWORD", "a-password-of-its-own")
    settings = cls()
    assert settings.libpq_password is not None
    assert settings.libpq_password.get_secret_value() == "a-password-of-its-own"
    # Never written out with the settings, nor shown.
    assert "libpq_password" not in settings.model_dump()
    assert "a-password-of-its-own" not in repr(settings)
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("CODELIFT_LIBPQ_PASSWORD", "not-its-name")
    assert cls().libpq_password is None


def test_the_dashboard_fields_lost_their_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODELIFT_ENVIRONMENT", "production")
    monkeypatch.setenv("CODELIFT_DASHBOARD_VIEWER_PASSWORD", "a-long-viewer-password")
    monkeypatch.setenv("CODELIFT_DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    monkeypatch.setenv("CODELIFT_DASHBOARD_OIDC_PROVIDER", "google")
    monkeypatch.setenv("CODELIFT_DASHBOARD_ADMIN_EMAILS", '["a@example.com"]')
    settings = DashboardSettings()
    assert settings.password("viewer") == "a-long-viewer-password"
    assert settings.password("admin") == "a-long-admin-password"
    assert (settings.oidc_provider, settings.admin_emails) == ("google", ("a@example.com",))
    # Given in Python, by the field names.
    viewer, admin = "viewer-given-in-python", "admin-given-in-python"
    given = DashboardSettings(viewer_password=SecretStr(viewer), admin_password=admin)
    assert given.password("viewer") == viewer and given.password("admin") == admin


def test_collector_and_gateway_run_side_by_side_from_one_environment(
    database_url: str, tmp_path: Path
) -> None:
    collector_port, gateway_port, old_port = free_port(), free_port(), free_port()
    env = {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        # The old, shared name of both ports: each service's own name wins over it.
        "CODELIFT_PORT": str(old_port),
        "CODELIFT_COLLECTOR_PORT": str(collector_port),
        "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
        "CODELIFT_GATEWAY_PORT": str(gateway_port),
        "CODELIFT_GATEWAY_LOG_LEVEL": "warning",
        "CODELIFT_GATEWAY_EXPERIMENTS": "false",
        # A vLLM server that is not there: /healthz is about the process, not its backend.
        "CODELIFT_GATEWAY_LOCAL": '{"enabled": false}',
        "CODELIFT_GATEWAY_VLLM": f'[{{"url": "http://127.0.0.1:{free_port()}"}}]',
        "CODELIFT_GATEWAY_DEFAULT_VARIANT": '{"backend": "vllm", "model": "side-by-side"}',
    }
    with (
        service_process(
            "collector",
            env,
            log=tmp_path / "collector.log",
            port=collector_port,
            port_option=False,
        ) as collector,
        service_process(
            "gateway", env, log=tmp_path / "gateway.log", port=gateway_port, port_option=False
        ) as gateway,
    ):
        for url in (collector.url, gateway.url):
            assert httpx.get(f"{url}/healthz", timeout=5.0).status_code == 200
        # Each is the service it should be: events go to the collector, models are the gateway's.
        for url, path, status in (
            (collector.url, "/v1/events", 401),
            (gateway.url, "/v1/events", 404),
            (gateway.url, "/v1/models", 401),
            (collector.url, "/v1/models", 404),
        ):
            method = "POST" if path == "/v1/events" else "GET"
            assert httpx.request(method, f"{url}{path}", timeout=5.0).status_code == status, path
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{old_port}/healthz", timeout=2.0)
    for service in (collector, gateway):
        assert service.process is not None and service.process.poll() is not None


@EVERY_SETTINGS_CLASS
def test_in_python_the_shared_fields_go_by_their_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cls: type[DatabaseSettings]
) -> None:
    monkeypatch.setenv("CODELIFT_ENVIRONMENT", "production")
    values = {
        "environment": "development",
        "data_dir": tmp_path,
        "max_event_age_days": 2,
        "retention_days": 20,
        "partitions_ahead_days": 4,
        "database_url": "postgresql://u@h/d",
    }
    given = cls(
        environment="development",
        data_dir=tmp_path,
        max_event_age_days=2,
        retention_days=20,
        partitions_ahead_days=4,
        database_url="postgresql://u@h/d",
    )
    for settings in (given, cls.model_validate(values)):
        assert settings.environment == "development" and settings.data_dir == tmp_path
        assert (settings.max_event_age_days, settings.retention_days) == (2, 20)
        assert (settings.partitions_ahead_days, settings.database_url) == (4, "postgresql://u@h/d")
