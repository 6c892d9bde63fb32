"""Shared fixtures: one pipeline per session, our own Redis, the Celery app and a worker.
Helpers (photos, the API test client, the stack) live in tests/helpers/."""

from __future__ import annotations

import os

import pytest

from aurum.config import Settings
from aurum.pipeline import Pipeline

from tests.helpers.photos import photo_bytes

# One test key for the whole run (and the processes the tests start): what Aurum keeps in Redis
# is sealed with it, as in production.
os.environ.setdefault("AURUM_ENCRYPTION_KEYS", "test1:" + "dGVzdC1rZXktMzItYnl0ZXMtZm9yLWF1cnVtLXRlc3Q=")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env(ort_threads=1)


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> Pipeline:
    p = Pipeline(settings)
    p.load()
    return p


@pytest.fixture
def service_env(monkeypatch):
    """Set environment variables for one test; this process's settings
    (:func:`service.config.current`) are read again now and once the test is over."""
    from service import config

    def setenv(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        config.reset()

    yield setenv
    monkeypatch.undo()
    config.reset()


@pytest.fixture(scope="session")
def astronaut() -> bytes:
    return photo_bytes("astronaut.png")


@pytest.fixture(scope="session")
def astronaut_result(pipeline: Pipeline, astronaut: bytes) -> dict:
    from aurum.schemas import ScoreOptions

    return pipeline.score(astronaut, ScoreOptions(return_landmarks=True, return_embedding=True))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """Our own redis-server for the whole run (free port, temp dir); never a server we did not start."""
    from tests.helpers.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def celery_app(redis_server):
    """The project's Celery app, its broker, backend and image store pointed at our redis (DB 1).
    Workers started by the tests (in-process or as processes) share it one module at a time."""
    import os

    url = f"{redis_server.url}/1"
    old = os.environ.get("AURUM_REDIS_URL")
    os.environ["AURUM_REDIS_URL"] = url
    import gc

    import workers.tasks  # noqa: F401 - registers the tasks
    from workers import runtime
    from workers.app import app, point_at

    runtime.reset()
    # One backend per thread here, not per process as in the API (celeryconfig.py): these tests
    # wait with AsyncResult.get() in the thread beside an in-process worker thread, and Celery
    # cancels a wait when any AsyncResult of the same id is collected on the same backend (the
    # worker's retries make such ones).
    app.conf.result_backend_thread_safe = False
    point_at(url)
    yield app
    gc.collect()  # let pending AsyncResults unsubscribe while our redis-server still runs
    app.backend.result_consumer.stop()
    runtime.reset()
    if old is None:
        os.environ.pop("AURUM_REDIS_URL", None)
    else:
        os.environ["AURUM_REDIS_URL"] = old


@pytest.fixture(scope="module")
def worker(celery_app):
    """A solo-pool Celery worker thread for one test module, consuming both queues. The solo
    pool sends worker_process_init too, so it loads its own models as in production."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["score", "fallback"], loglevel="WARNING"):
        yield celery_app
