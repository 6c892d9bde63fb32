"""The Celery application. ``celery -A workers.app worker`` starts a worker."""

from celery import Celery

from .backend import backend_url

app = Celery("aurum", include=["workers.tasks", "workers.signals"])
app.config_from_object("celeryconfig")


def point_at(redis_url: str) -> Celery:
    """Re-point an app whose configuration was already loaded at another Redis (tests, tools)."""
    app.conf.update(broker_url=redis_url, result_backend=backend_url(redis_url))
    return app
