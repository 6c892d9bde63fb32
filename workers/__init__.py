"""Celery side of Aurum: the app, the tasks and the worker signal handlers (the job-service issue)."""
