"""The worker's Celery application: the service's (:mod:`service.queue`) with the tasks and
signal handlers. ``celery -A workers.app worker`` starts a worker."""

from service.queue import app, point_at  # noqa: F401 - point_at: for tests and tools

app.conf.include = ["workers.tasks", "workers.signals"]
