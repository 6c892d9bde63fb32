"""Shared fixtures: real photos, composites made from them, and one pipeline per session."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aurum.config import Settings
from aurum.pipeline import Pipeline

PHOTOS = Path(__file__).parent / "photos"
# One test key for the whole run (and the processes the tests start): what Aurum keeps in Redis
# is sealed with it, as in production.
os.environ.setdefault("AURUM_ENCRYPTION_KEYS", "test1:" + "dGVzdC1rZXktMzItYnl0ZXMtZm9yLWF1cnVtLXRlc3Q=")


def photo_bytes(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def photo_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def encode(rgb: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **params)
    return buf.getvalue()


def resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((round(img.width * factor), round(img.height * factor)), Image.LANCZOS))


def group_photo() -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """A 1280 x 640 canvas: astronaut (512) at (40, 64), camera (512) at (640, 64), and a 0.35x
    astronaut at (1090, 440) -> three faces at three scales. Returns the image and placements."""
    canvas = np.full((640, 1280, 3), 200, dtype=np.uint8)
    astro, cam = photo_rgb("astronaut.png"), photo_rgb("camera.png")
    small = resize(astro, 0.35)
    canvas[64:576, 40:552] = astro
    canvas[64:576, 640:1152] = cam
    canvas[440:440 + small.shape[0], 1090:1090 + small.shape[1]] = small
    return canvas, [(40, 64, 1.0), (640, 64, 1.0), (1090, 440, 0.35)]


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
    from .redis_server import RedisServer

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
