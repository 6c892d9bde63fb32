"""The Celery application as both sides use it: the API publishes jobs by task name through it
(:func:`publish`) and reads their results from its backend; ``workers/app.py`` adds the tasks.
Configured by ``celeryconfig.py``."""

from __future__ import annotations

from typing import Any

from celery import Celery

from . import broker, connections
from .backend import backend_url
from .broker import transport_for
from .config import ServiceSettings

app = Celery("aurum")
app.config_from_object("celeryconfig")


def point_at(redis_url: str) -> Celery:
    """Re-point an app whose configuration was already loaded at another Redis (tests, tools)."""
    app.conf.update(broker_url=redis_url, broker_transport=transport_for(redis_url),
                    result_backend=backend_url(redis_url))
    return app


def publish(task_name: str, args: tuple, job_id: str, headers: dict[str, Any],
            limits: dict[str, float] | None = None) -> None:
    """Send a job to its queue (celeryconfig's task_routes) under its own id, with its time
    limits (:func:`service.contract.time_limits`; default: the task limits)."""
    # argsrepr (what Flower and `celery inspect` show): the args are image handles, options and
    # a cache key, plain and small, so the builtin repr does what Celery's saferepr would, at a
    # tenth of its cost (~0.3 ms per publish, bench/profile_api.py).
    app.send_task(task_name, args=args, task_id=job_id, headers=headers,
                  argsrepr=repr(args)[:app.amqp.argsrepr_maxsize], kwargsrepr="{}", **(limits or {}))


def shares_redis(settings: ServiceSettings) -> bool:
    """Whether the broker is ``settings``' own Redis and database, through service/broker.py's
    transport: then a publish may join a pipeline of that Redis's clients (:func:`broker.into`)."""
    conf = app.conf
    return conf.broker_url == connections.celery_url(settings) and \
        conf.broker_transport is not None and conf.broker_transport == transport_for(conf.broker_url)
