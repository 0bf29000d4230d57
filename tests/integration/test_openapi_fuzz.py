"""Property-based fuzzing of the live OpenAPI schema (schemathesis): every route, a bounded number
of generated requests each, on loopback. No 5xx; every status is one the schema documents; every
answer has the documented content type and conforms to its schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

EXAMPLES_PER_ROUTE = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(service: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{service}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_its_schema_says(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS, timeout=300)
