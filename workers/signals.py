"""Celery signal handlers: JSON logging, models loaded (and a metrics exporter started) in
every pool child after the fork, request and job ids around each task."""

from __future__ import annotations

import logging

from billiard.process import current_process
from celery.signals import (celeryd_init, setup_logging, task_postrun, task_prerun, worker_init,
                            worker_process_init, worker_process_shutdown, worker_shutdown)

from aurum import logs

from service import config, done

from . import runtime
from .app import app


@setup_logging.connect
def configure_logging(**_: object) -> None:
    logs.configure(config.current().log_level)  # connecting this signal also stops Celery from installing its own handlers
    # Celery's trace logger prints each task's return value at INFO: results hold landmarks and
    # embeddings, which never go to logs. Our own "job" line records every outcome instead.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


_nodename: str | None = None  # set in the main process, inherited by the pool children


@worker_init.connect
def remember_nodename(sender=None, **_: object) -> None:
    """The worker's node name (celery@host), before the pool starts: worker_process_init does
    not say it (Celery 5.6 sends it with no sender)."""
    global _nodename
    _nodename = getattr(sender, "hostname", None)


@celeryd_init.connect
def start_error_reporting(**_: object) -> None:
    """Sentry in the worker's main process (the pool children inherit it), when SENTRY_DSN is set."""
    from service.privacy import init_sentry

    settings = config.current()
    if settings.sentry_dsn:
        from sentry_sdk.integrations.celery import CeleryIntegration

        init_sentry(settings.sentry_dsn, [CeleryIntegration()], settings.sentry_environment)


@worker_process_init.connect
def load_models(sender: str | None = None, **_: object) -> None:
    # billiard numbers pool children 0..n-1 (and reuses a dead child's number for its successor),
    # which is what GPU pinning needs: child i takes AURUM_GPUS[i % n].
    index = getattr(current_process(), "index", 0) or 0
    start_metrics_exporter(index)
    runtime.load(child_index=index, concurrency=app.conf.worker_concurrency, hostname=sender or _nodename)


@worker_process_shutdown.connect
@worker_shutdown.connect
def stop_heartbeats(**_: object) -> None:
    """A child (or a solo worker) that stops says so by no longer beating: /ready drops it
    within the heartbeat TTL, without waiting for a broadcast to go unanswered."""
    runtime.stop_heartbeats()


@task_prerun.connect
def bind_ids(task_id: str | None = None, task=None, **_: object) -> None:
    from .tasks import header

    logs.job_id.set(task_id)
    logs.request_id.set(header(task, "aurum_request_id") if task is not None else None)


@task_postrun.connect
def announce_and_unbind(task_id: str | None = None, task=None, **_: object) -> None:
    """Wake the API requests waiting for this job (its state is stored by now); not for a job
    deleted meanwhile (nothing of it may remain)."""
    if task_id and not getattr(getattr(task, "request", None), "aurum_deleted", False):
        try:
            done.announce(runtime.images().redis, task_id)
        except Exception as exc:  # waiters fall back to re-reading the status every half second
            logging.getLogger(__name__).warning("could not announce job end: %s", exc)
    logs.job_id.set(None)
    logs.request_id.set(None)


def start_metrics_exporter(child_index: int) -> None:
    """An exporter port per pool child: AURUM_WORKER_METRICS_PORT + child index, bound to
    AURUM_METRICS_BIND (default 127.0.0.1). A replacement child takes over its predecessor's
    index, hence its port. (Multiprocess mode is not an option here: the celery command imports
    prometheus_client before any of our code could point it at a shared directory.)"""
    settings = config.current()
    if not settings.worker_metrics_port:
        return
    from prometheus_client import start_http_server

    port = settings.worker_metrics_port + child_index
    try:
        start_http_server(port, addr=settings.metrics_bind)
    except OSError as exc:  # metrics must never keep a worker from serving
        logging.getLogger(__name__).warning("metrics port %s unavailable: %s", port, exc)
