"""The scoring tasks. Messages carry image keys and options, never image bytes.

Outcomes: a result document (SUCCESS); :class:`JobFailed` with a stable code for anything the
client must know about (bad image, no face, expired image, poison message); a retry with
exponential backoff and jitter for retryable errors (``INFERENCE_FAILED``, Redis hiccups).
"""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from typing import Any, Iterator

import redis
from celery import Task
from celery.exceptions import Retry

from aurum import errors
from aurum.config import Settings
from aurum.schemas import load_options

from . import runtime
from .app import app
from .imagestore import ImageExpired

log = logging.getLogger(__name__)

MAX_DELIVERIES = Settings.from_env().max_deliveries
MAX_RETRIES = Settings.from_env().max_retries
DEAD_LETTERS = "aurum:dead-letters"
BATCH_CHUNK = 8


class JobFailed(Exception):
    """A job's final failure. Its args (code, message, details) survive the JSON result backend,
    so the API reads the same stable code the core raised."""

    def __init__(self, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(code, message, details or {})

    @property
    def code(self) -> str:
        return self.args[0]

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.args[0], "message": self.args[1], "details": self.args[2]}}


def backoff(retries: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(cap, base * 2 ** retries))


class ScoringTask(Task):
    abstract = True

    def count_delivery(self) -> None:
        """Fail a job whose message keeps coming back (its image kills the worker) instead of
        letting it loop forever. Executions minus our own retries = deliveries."""
        key = f"aurum:deliveries:{self.request.id}"
        store = runtime.images().redis
        attempts = store.incr(key)
        store.expire(key, 24 * 3600)
        deliveries = attempts - (self.request.retries or 0)
        if deliveries > MAX_DELIVERIES:
            store.lpush(DEAD_LETTERS, self.request.id)
            raise JobFailed("POISON_MESSAGE",
                            f"The job was delivered {deliveries - 1} times and its worker died each time; "
                            "it has been set aside.", {"deliveries": deliveries - 1})

    def retry_later(self, exc: Exception) -> None:
        if self.request.retries >= MAX_RETRIES:
            code = getattr(exc, "code", "RETRIES_EXHAUSTED")
            raise JobFailed(code, f"Gave up after {MAX_RETRIES} retries: {exc}", {"retries": MAX_RETRIES})
        raise self.retry(exc=exc, countdown=backoff(self.request.retries), max_retries=MAX_RETRIES)


@contextmanager
def job_outcome(task: ScoringTask, keys: tuple[str, ...]) -> Iterator[None]:
    """Map what a job body raises to its outcome, once for every task: retryable errors retry
    (images kept), everything else ends the job with a stable code and releases its images."""
    try:
        try:
            yield
        except ImageExpired:
            raise JobFailed("IMAGE_EXPIRED", "The uploaded image expired before a worker took the job.") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            task.retry_later(exc)
        except errors.AurumError as exc:
            if exc.retryable:
                task.retry_later(exc)
            raise JobFailed(exc.code, exc.message, exc.details) from None
    except Retry:
        raise
    except BaseException:
        _release(keys)
        raise
    _release(keys)


def _release(keys: tuple[str, ...]) -> None:
    try:
        runtime.images().delete(*keys)
    except redis.RedisError:  # the TTL removes them anyway
        log.warning("could not delete %d image key(s); they expire with their TTL", len(keys))


@app.task(name="aurum.score_image", bind=True, base=ScoringTask)
def score_image(self: ScoringTask, image_key: str, options: dict | None = None) -> dict[str, Any]:
    with job_outcome(self, (image_key,)):
        self.count_delivery()
        opts = load_options(options)
        return runtime.pipeline().score(runtime.images().get(image_key), opts)


@app.task(name="aurum.score_batch", bind=True, base=ScoringTask)
def score_batch(self: ScoringTask, image_keys: list[str], options: dict | None = None) -> dict[str, Any]:
    """Several images with batched inference (all faces of a chunk through each model at once);
    progress is published as state PROGRESS with ``done`` / ``total``."""
    with job_outcome(self, tuple(image_keys)):
        self.count_delivery()
        opts = load_options(options)
        store, pipe = runtime.images(), runtime.pipeline()
        items: list[dict[str, Any]] = []
        total = len(image_keys)
        for start in range(0, total, BATCH_CHUNK):
            keys = image_keys[start:start + BATCH_CHUNK]
            datas, missing = [], set()
            for i, key in enumerate(keys):
                try:
                    datas.append(store.get(key))
                except ImageExpired:
                    missing.add(i)
                    datas.append(b"")
            for i, result in enumerate(pipe.score_many(datas, opts)):
                if i in missing:
                    items.append({"error": {"code": "IMAGE_EXPIRED", "message": "The image expired."}})
                elif isinstance(result, errors.AurumError):
                    if result.retryable:
                        raise result
                    items.append(result.to_dict())
                else:
                    items.append(result)
            self.update_state(state="PROGRESS", meta={"done": len(items), "total": total})
        return {"total": total, "done": total, "items": items}
