"""Flask side of Aurum: a thin HTTP layer that validates uploads and hands jobs to Celery."""

from .app import create_app

__all__ = ["create_app"]
