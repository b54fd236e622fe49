"""A property-based run of schemathesis against the live server, from the committed OpenAPI document:
generated bodies, parameters and headers for every operation, and never a 5xx."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from rest_api.api import OPENAPI_PATH

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 15


def test_generated_requests_never_get_a_server_error(api):
    client = api(requests_per_minute=10_000, max_active_generations=5)
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call(base_url=client.base, headers={"Authorization": f"Bearer {client.key}"})
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        run()
    # The run reached the handlers with the key (successes), and bad input was refused, never a 5xx.
    assert any(200 <= status < 300 for status in statuses) and any(400 <= status < 500 for status in statuses)
