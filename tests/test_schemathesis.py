"""schemathesis against /openapi.json: no server errors, and every answer conforms to the
document (status codes, content types, bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from aurum.config import Settings


@pytest.fixture(scope="module")
def worker(celery_app):
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["score", "fallback"], loglevel="WARNING"):
        yield celery_app


@pytest.fixture(scope="module")
def app_and_key(worker):
    from api import create_app

    app = create_app(Settings.from_env(rate_limit="1000000/minute", batch_image_limit="1000000/minute"))
    token, _ = app.extensions["aurum.keys"].create("schemathesis")
    return app, token


@pytest.fixture(scope="module")
def api_schema(app_and_key):
    app, _ = app_and_key
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, app_and_key) -> None:
    _, token = app_and_key
    # positive_data_acceptance is left out: a schema-valid upload (a 1 x 1 PNG, say) is rightly
    # refused for its pixels (IMAGE_TOO_SMALL, NO_FACE), which no OpenAPI schema can express.
    case.call_and_validate(headers={"X-API-Key": token},
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
