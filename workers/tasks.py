"""The scoring tasks. Messages carry image keys and options, never image bytes.

Outcomes (see :func:`job_outcome`): a result document (SUCCESS); :class:`JobFailed` with a
stable code for anything the client must know about (bad image, no face, expired image, poison
message); a retry with exponential backoff and jitter for retryable errors; the fallback task
when the models cannot serve.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from contextlib import contextmanager
from typing import Any, Iterator

import redis
from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from aurum import errors, fallback
from aurum.config import Settings
from aurum.schemas import load_options

from . import chaos, metrics, runtime
from .app import app
from aurum.cache import cache_key
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
        key = f"aurum:deliveries:{self.name}:{self.request.id}"
        store = runtime.images().redis
        attempts = store.incr(key)
        store.expire(key, 24 * 3600)
        deliveries = attempts - (self.request.retries or 0)
        if deliveries > MAX_DELIVERIES:
            store.lpush(DEAD_LETTERS, self.request.id)
            raise JobFailed("POISON_MESSAGE",
                            f"The job was delivered {deliveries - 1} times and its worker died each time; "
                            "it has been set aside.", {"deliveries": deliveries - 1})


class FallbackHandover(Exception):
    """Raised inside a job body: hand the job (same id, same images) to the fallback task."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def job_outcome(task: ScoringTask, keys: tuple[str, ...], options: dict | None, batch: bool) -> Iterator[None]:
    """Map what a job body raises to its outcome, once for every task:

    - bad input, no face, expired image: ``JobFailed`` with the stable code, at once;
    - ``INFERENCE_FAILED`` or a Redis hiccup: retry with backoff and jitter, ``MAX_RETRIES`` times;
    - models unavailable, or inference retries exhausted: the fallback task takes over the job
      (same job id, same images), and its result says ``degraded: true``.

    Images are kept across retries and hand-overs and released on every final outcome; every
    outcome is counted (``aurum_jobs_total``) and timed (queue and compute seconds)."""
    started = time.time()
    submitted = header(task, "aurum_submitted_at")
    if submitted and not task.request.retries:
        metrics.QUEUE_SECONDS.labels(task.name).observe(max(0.0, started - float(submitted)))
    outcome = "failed"
    try:
        try:
            yield
            outcome = "succeeded"
        except ImageExpired:
            raise JobFailed("IMAGE_EXPIRED", "The uploaded image expired before a worker took the job.") from None
        except SoftTimeLimitExceeded:
            limit = task.soft_time_limit or app.conf.task_soft_time_limit
            raise JobFailed("TIMEOUT", f"The job exceeded its time limit ({limit} s).") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if task.request.retries >= MAX_RETRIES:
                raise JobFailed("SERVICE_UNAVAILABLE", f"Redis unreachable after {MAX_RETRIES} retries.") from None
            outcome = "retried"
            raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=MAX_RETRIES)
        except errors.AurumError as exc:
            if isinstance(exc, errors.ModelUnavailable):
                raise FallbackHandover(f"{exc.code}: {exc.message}") from None
            if exc.retryable:
                if task.request.retries >= MAX_RETRIES:
                    raise FallbackHandover(f"{exc.code} after {MAX_RETRIES} retries: {exc.message}") from None
                outcome = "retried"
                raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=MAX_RETRIES)
            raise JobFailed(exc.code, exc.message, exc.details) from None
    except FallbackHandover as handover:
        outcome = "fallback"
        metrics.FALLBACKS.labels(task.name).inc()
        log.warning("job goes to the fallback: %s", handover.reason)
        score_fallback.apply_async(args=(list(keys), options, handover.reason, batch), task_id=task.request.id,
                                   headers=propagated_headers(task))
        raise Ignore() from None  # the fallback task writes this job's result
    except (Retry, Ignore):
        if outcome == "retried":
            metrics.RETRIES.labels(task.name).inc()
        raise
    except BaseException as exc:
        _release(keys)
        if isinstance(exc, JobFailed) and exc.code == "POISON_MESSAGE":
            metrics.DEAD_LETTERS.inc()
        raise
    else:
        _release(keys)
    finally:
        elapsed = time.time() - started
        metrics.JOBS.labels(task.name, outcome).inc()
        if outcome != "retried":
            metrics.COMPUTE_SECONDS.labels(task.name).observe(elapsed)
        log.info("job", extra={"task": task.name, "outcome": outcome, "compute_ms": round(elapsed * 1000, 2),
                               "images": len(keys), "attempt": task.request.retries + 1})


HEADERS = ("aurum_submitted_at", "aurum_request_id")


def header(task: Task, name: str) -> Any:
    """A custom message header the API set (Celery exposes them on the request)."""
    value = task.request.get(name) if hasattr(task.request, "get") else getattr(task.request, name, None)
    return value if value is not None else (getattr(task.request, "headers", None) or {}).get(name)


def propagated_headers(task: Task) -> dict[str, Any]:
    return {name: value for name in HEADERS if (value := header(task, name)) is not None}


def _release(keys: tuple[str, ...]) -> None:
    try:
        runtime.images().delete(*keys)
    except redis.RedisError:  # the TTL removes them anyway
        log.warning("could not delete %d image key(s); they expire with their TTL", len(keys))


def _batch_items(results: list, missing: set[int]) -> list[dict[str, Any]]:
    items = []
    for i, result in enumerate(results):
        if i in missing:
            items.append({"error": {"code": "IMAGE_EXPIRED", "message": "The image expired."}})
        elif isinstance(result, errors.AurumError):
            if result.retryable:
                raise result
            items.append(result.to_dict())
        else:
            items.append(result)
    return items


def _fetch(keys: list[str]) -> tuple[list[bytes], set[int]]:
    datas, missing = [], set()
    for i, key in enumerate(keys):
        try:
            datas.append(runtime.images().get(key))
        except ImageExpired:
            missing.add(i)
            datas.append(b"")
    return datas, missing


CACHEABLE_KINDS = {"input", "too_large", "unsupported", "unprocessable"}  # deterministic for an image


def _cached(key: str) -> dict[str, Any] | None:
    cache = runtime.cache()
    hit = cache.get(key) if cache is not None else None
    metrics.CACHE.labels("worker", "miss" if hit is None else "hit").inc()
    if hit is None:
        return None
    return hit if "error" in hit else {**hit, "cached": True}


def _remember(key: str, outcome: dict[str, Any] | errors.AurumError) -> None:
    cache = runtime.cache()
    if cache is None:
        return
    if isinstance(outcome, errors.AurumError):
        if outcome.kind in CACHEABLE_KINDS:
            cache.put(key, outcome.to_dict())
    else:
        cache.put(key, outcome)


def _key_for(data: bytes, opts) -> str:
    pipe = runtime.pipeline()
    return cache_key(hashlib.sha256(data).hexdigest(), pipe.versions(), opts, pipe.settings)


@app.task(name="aurum.score_image", bind=True, base=ScoringTask, throws=(JobFailed,))
def score_image(self: ScoringTask, image_key: str, options: dict | None = None) -> dict[str, Any]:
    with job_outcome(self, (image_key,), options, batch=False):
        self.count_delivery()
        opts = load_options(options)
        data = runtime.images().get(image_key)
        key = _key_for(data, opts)
        try:
            result = _score_or_recall(key, data, opts)
        except errors.AurumError as exc:
            if not exc.retryable:  # a retrying job keeps its claim: followers keep waiting on it
                _release_inflight(key)
            raise
        except BaseException:
            _release_inflight(key)
            raise
        _release_inflight(key)
        return result


def _score_or_recall(key: str, data: bytes, opts) -> dict[str, Any]:
    hit = _cached(key)
    if hit is not None:
        if "error" in hit:
            raise JobFailed(hit["error"]["code"], hit["error"]["message"], hit["error"].get("details"))
        return hit
    chaos.inject(data)  # tests only (AURUM_CHAOS); nothing happens otherwise
    try:
        result = {**runtime.pipeline().score(data, opts), "cached": False}
    except errors.AurumError as exc:
        _remember(key, exc)
        raise
    metrics.observe_result(result)
    _remember(key, result)
    return result


def _release_inflight(key: str) -> None:
    cache = runtime.cache()
    if cache is not None:
        cache.release(key)


@app.task(name="aurum.score_batch", bind=True, base=ScoringTask, throws=(JobFailed,))
def score_batch(self: ScoringTask, image_keys: list[str], options: dict | None = None) -> dict[str, Any]:
    """Several images with batched inference (all faces of a chunk through each model at once);
    images already in the cache are not run again; progress is published as state PROGRESS
    with ``done`` / ``total``."""
    with job_outcome(self, tuple(image_keys), options, batch=True):
        self.count_delivery()
        opts = load_options(options)
        pipe = runtime.pipeline()
        items: list[dict[str, Any]] = []
        total = len(image_keys)
        metrics.BATCH_SIZE.observe(total)
        for start in range(0, total, BATCH_CHUNK):
            datas, missing = _fetch(image_keys[start:start + BATCH_CHUNK])
            outcomes: list[Any] = [None] * len(datas)
            keys = [None if i in missing else _key_for(d, opts) for i, d in enumerate(datas)]
            run = []
            for i, key in enumerate(keys):
                if key is not None and (hit := _cached(key)) is not None:
                    outcomes[i] = hit
                elif key is not None:
                    run.append(i)
            for i, outcome in zip(run, pipe.score_many([datas[i] for i in run], opts)):
                if not isinstance(outcome, errors.AurumError):
                    outcome = {**outcome, "cached": False}
                    metrics.observe_result(outcome)
                if not (isinstance(outcome, errors.AurumError) and outcome.retryable):
                    _remember(keys[i], outcome)
                outcomes[i] = outcome
            items += _batch_items(outcomes, missing)
            self.update_state(state="PROGRESS", meta={"done": len(items), "total": total})
        return {"total": total, "done": total, "items": items}


@app.task(name="aurum.score_fallback", bind=True, base=ScoringTask, throws=(JobFailed,))
def score_fallback(self: ScoringTask, image_keys: list[str], options: dict | None, reason: str,
                   batch: bool) -> dict[str, Any]:
    """The degraded path (OpenCV Haar cascades, no ONNX Runtime); results say degraded: true."""
    with job_outcome(self, tuple(image_keys), options, batch):
        self.count_delivery()
        opts = load_options(options)
        settings = Settings.from_env()
        datas, missing = _fetch(image_keys)
        results: list = []
        for i, data in enumerate(datas):
            try:
                results.append(None if i in missing else fallback.score(data, opts, settings, reason))
            except errors.AurumError as exc:
                if not batch:
                    raise
                results.append(exc)
        if not batch:
            if missing:
                raise ImageExpired(image_keys[0])
            return results[0]
        items = _batch_items(results, missing)
        return {"total": len(items), "done": len(items), "items": items, "degraded": True}
