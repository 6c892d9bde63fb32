"""The Celery application. ``celery -A workers.app worker`` starts a worker."""

from celery import Celery

app = Celery("aurum", include=["workers.tasks", "workers.signals"])
app.config_from_object("celeryconfig")
