"""schemathesis against /openapi.json: no server errors, and every answer conforms to the
document (status codes, content types, bodies). Driven through hypothesis directly (not the
pytest plugin, which breaks across pytest releases)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from service.config import ServiceSettings


@pytest.fixture(scope="module")
def app_and_key(worker):
    from api import create_app

    app = create_app(ServiceSettings.from_env(rate_limit="1000000/minute", batch_image_limit="1000000/minute"))
    token, _ = app.extensions["aurum.keys"].create("schemathesis")
    return app, token


def test_api_conforms_to_its_openapi_document(app_and_key) -> None:
    app, token = app_and_key
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # positive_data_acceptance is left out: a schema-valid upload (a 1 x 1 PNG, say) is
            # rightly refused for its pixels (IMAGE_TOO_SMALL, NO_FACE), which no schema can express.
            case.call_and_validate(headers={"X-API-Key": token},
                                   excluded_checks=[schemathesis.checks.positive_data_acceptance])

        check()
