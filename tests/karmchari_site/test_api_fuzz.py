"""schemathesis over the OpenAPI schema: no request, however odd, gets a 5xx, and
every answer matches the schema. Bounded so it fits in CI.

Three of schemathesis' phases run: the schema's examples, 5 random cases per operation
(fuzzing) and the coverage phase, every boundary and invalid value the schema defines
(about 4,500 requests, 95% of this test's time). KARMCHARI_FUZZ_PHASES (comma-separated)
picks fewer: CI's first pass, on SQLite, leaves coverage to its second, on PostgreSQL,
where the database's stricter types turn bad input into 500s.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fuzz]


def _raw_schema() -> dict[str, Any]:
    import django

    django.setup()
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


schema = schemathesis.openapi.from_dict(_raw_schema())
schema.app = get_wsgi_application()  # type: ignore[attr-defined]
PHASES = os.environ.get("KARMCHARI_FUZZ_PHASES", "examples,coverage,fuzzing")
schema.config.phases.update(phases=[p.strip() for p in PHASES.split(",") if p.strip()])


@pytest.fixture
def token(admin_user: Any) -> str:
    from tests.tokens import make_token

    return make_token(admin_user).key


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_it_never_answers_5xx(case: Any, token: str) -> None:
    with mock.patch("jobs.tasks.run_execution.apply_async"):
        response = case.call(headers={"Authorization": f"Token {token}"})
    # Authenticated for real: the fuzzing reaches the views, not just the login wall.
    assert response.status_code != 401, response.text
    case.validate_response(
        response, checks=[not_a_server_error, response_schema_conformance]
    )
