"""Celery signal handlers: load the models in every pool child, after the fork."""

from __future__ import annotations

from billiard.process import current_process
from celery.signals import worker_process_init

from . import runtime
from .app import app


@worker_process_init.connect
def load_models(sender: str | None = None, **_: object) -> None:
    # billiard numbers pool children 0..n-1 (and reuses a dead child's number for its successor),
    # which is what GPU pinning needs: child i takes AURUM_GPUS[i % n].
    index = getattr(current_process(), "index", 0) or 0
    runtime.load(child_index=index, concurrency=app.conf.worker_concurrency, hostname=sender)
