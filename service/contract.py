"""The job contract between the API and the workers: task names, message headers, and every code
a job can end with, each with its kind (the API maps kinds to HTTP statuses, api/errors.py).

The core's codes (``aurum.errors``: bad image, no face...) keep their own kinds; the codes below
are the job service's own."""

from __future__ import annotations

from typing import Any

import redis

from aurum import errors

SCORE_IMAGE = "aurum.score_image"        # args: image key, options, cache key
SCORE_BATCH = "aurum.score_batch"        # args: image keys, options, cache keys
SCORE_FALLBACK = "aurum.score_fallback"  # args: image keys, options, reason, batch
TASKS = (SCORE_IMAGE, SCORE_BATCH, SCORE_FALLBACK)
HEADERS = ("aurum_submitted_at", "aurum_request_id",  # custom message headers the API sets
           "aurum_identity",  # the result identity its cache keys were made with (service/cache.py)
           "aurum_route")  # the model versions that serve it, and any shadow (service/routing.py)

def time_limits(settings, images: int) -> dict[str, float]:
    """A job's soft and hard time limits: the task limits for one image, plus
    AURUM_TASK_IMAGE_SECONDS for each further image of a batch, so that a batch of large photos
    is not cut short by limits sized for one (each image has its own budget)."""
    extra = max(0, images - 1) * settings.task_image_seconds
    return {"soft_time_limit": settings.task_soft_time_limit + extra, "time_limit": settings.task_time_limit + extra}


JOB_CODES = {  # code -> kind
    "IMAGE_EXPIRED": "gone",          # the image's TTL passed before a worker took the job
    "JOB_CANCELLED": "gone",          # revoked by an operator (celery control revoke)
    "TIMEOUT": "timeout",             # the job overran its time limit
    "POISON_MESSAGE": "internal",     # its worker died on every delivery; set aside
    "WORKER_LOST": "internal",        # its worker died and the job was not redelivered
    "SERVICE_UNAVAILABLE": "unavailable",  # Redis unreachable past the retries
    "INTERNAL_ERROR": "internal",     # a bug: logged and reported to Sentry
}
_CORE_KINDS = {cls.code: cls.kind for cls in errors.ALL_ERRORS}


def kind_of(code: str) -> str:
    """The kind of any code a job or request can end with ("internal" if unknown)."""
    return _CORE_KINDS.get(code) or JOB_CODES.get(code, "internal")


class JobFailed(Exception):
    """A job's final failure. Its args (code, message, details) survive the JSON result backend,
    so the API reads the same stable code the worker raised, and its kind from the code."""

    def __init__(self, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(code, message, details or {})

    @property
    def code(self) -> str:
        return self.args[0]

    @property
    def kind(self) -> str:
        return kind_of(self.args[0])

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.args[0], "message": self.args[1], "details": self.args[2]}}


def failure(exc: Any) -> dict[str, Any]:
    """The error document of a failed job, whatever the worker raised or Celery stored."""
    from celery.exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError

    if isinstance(exc, JobFailed):
        return exc.to_dict()
    if isinstance(exc, TimeLimitExceeded):
        return {"error": {"code": "TIMEOUT", "message": "The job exceeded its time limit."}}
    if isinstance(exc, WorkerLostError):
        return {"error": {"code": "WORKER_LOST", "message": "The worker running the job died."}}
    if exc is None or isinstance(exc, (dict, TaskRevokedError)):  # a revoked job's stored state
        return {"error": {"code": "JOB_CANCELLED", "message": "The job was cancelled."}}
    if isinstance(exc, redis.RedisError):  # e.g. Redis full (maxmemory) when the outcome was stored
        return {"error": {"code": "SERVICE_UNAVAILABLE", "message": "Redis could not keep the job's outcome "
                          f"({type(exc).__name__}); send the photo again."}}
    return {"error": {"code": "INTERNAL_ERROR", "message": f"The job failed: {type(exc).__name__}."}}
