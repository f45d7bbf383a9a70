"""Schemathesis against the collector's and the gateway's own OpenAPI schemas, over real HTTP.

Every operation gets generated requests, valid and invalid by the schema, with a valid key; no
answer may be a 500, and every answer must match the schema (status, content type, headers,
body). The number of examples is bounded and generation derandomized, so CI runs the same cases
every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.auth.scopes import Scope
from serving.scripted_backend import ScriptedBackend
from tests.apikeys import Key, MakeKey
from tests.experiment_factories import DEFAULT_VARIANT
from tests.servers import running_gateway

EXAMPLES_PER_OPERATION = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)


def fuzz(base_url: str, headers: dict[str, str]) -> list[str]:
    """Run every operation of the schema at ``base_url``; return the operations run."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    done = []
    for result in schema.get_all_operations():
        # A part of the schema schemathesis cannot read is a failure, not something to skip.
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        # An operation that takes nothing has no invalid input to generate.
        takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if takes_input else [])
        for mode in modes:

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

            run()
        done.append(f"{operation.method.upper()} {operation.path}")
    return done


def test_the_collector_keeps_its_schema_under_fuzzing(
    collector_url: str, ingest_key: Key, clean_events: None
) -> None:
    operations = fuzz(collector_url, ingest_key.headers)
    assert "POST /v1/events" in operations


@pytest.fixture
def gateway_url(database_url: str) -> Iterator[str]:
    from serving.gateway.config import GatewaySettings

    settings = GatewaySettings.model_validate(
        {
            "database_url": database_url,
            "environment": "test",
            "default_variant": DEFAULT_VARIANT,
            "experiments": False,
            "rate_limit_per_s": 10_000.0,
            "rate_limit_burst": 10_000,
        }
    )
    with running_gateway(settings, {"local": ScriptedBackend("    return 1\n")}) as url:
        yield url


def test_the_gateway_keeps_its_schema_under_fuzzing(gateway_url: str, make_key: MakeKey) -> None:
    # A personal key: the schema cannot say "user is required unless the key names one", and
    # IDE clients that send no user are what such keys are for.
    key = make_key("fuzz-dev", [Scope.SERVE], user_id="dev-fuzz")
    operations = fuzz(gateway_url, key.headers)
    assert "POST /v1/completions" in operations
    answered = Counter[str]()
    for line in httpx.get(f"{gateway_url}/metrics").text.splitlines():
        if line.startswith("codelift_gateway_completions_total{"):
            answered[line.split('"')[1]] += int(float(line.split()[-1]))
    # The generated requests reached the endpoint, valid ones served and invalid ones refused.
    assert answered["200"] >= 5 and answered["400"] >= 5, answered
