"""The scoring tasks. Messages carry image keys and options, never image bytes.

Outcomes (see :func:`job_outcome`): a result document (SUCCESS); :class:`JobFailed` with a
stable code for anything the client must know about (bad image, no face, expired image, poison
message); a retry with exponential backoff and jitter for retryable errors; the fallback task
when the models cannot serve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from contextlib import contextmanager
from typing import Any, Iterator

import redis
from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from aurum import errors, fallback, logs
from aurum.cache import INFLIGHT, cache_key
from aurum.config import Settings
from aurum.schemas import load_options

from . import chaos, done, metrics, runtime
from .app import app
from .imagestore import ImageExpired
from .microbatch import MicroBatchTask

log = logging.getLogger(__name__)

SETTINGS = Settings.from_env()
MAX_DELIVERIES = SETTINGS.max_deliveries
MAX_RETRIES = SETTINGS.max_retries
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


def delivery_key(task_name: str, job_id: str) -> str:
    """The counter of a job's executions (deliveries plus our own retries)."""
    return f"aurum:deliveries:{task_name}:{job_id}"


def set_aside(store: redis.Redis, job_id: str, deliveries: int) -> JobFailed:
    """Dead-letter a job whose message keeps killing its worker; its final failure."""
    store.lpush(DEAD_LETTERS, job_id)
    return JobFailed("POISON_MESSAGE", f"The job was delivered {deliveries - 1} times and its worker died "
                     "each time; it has been set aside.", {"deliveries": deliveries - 1})


def image_expired() -> JobFailed:
    return JobFailed("IMAGE_EXPIRED", "The uploaded image expired before a worker took the job.")


class ScoringTask(Task):
    abstract = True

    def count_delivery(self) -> None:
        """Fail a job whose message keeps coming back (its image kills the worker) instead of
        letting it loop forever. Executions minus our own retries = deliveries."""
        key = delivery_key(self.name, self.request.id)
        store = runtime.images().redis
        attempts = store.incr(key)
        store.expire(key, 24 * 3600)
        deliveries = attempts - (self.request.retries or 0)
        if deliveries > MAX_DELIVERIES:
            raise set_aside(store, self.request.id, deliveries)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Let the job's images go. Celery calls this only once a final outcome (SUCCESS or
        FAILURE) is stored: never for a retry or a hand-over, nor when the store itself failed,
        so a job that has to run again (redelivered, or re-published by the API) still has them."""
        keys = getattr(self.request, "aurum_release", None)
        if keys:
            _release(keys)


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

    Images are kept across retries and hand-overs and released once a final outcome is stored
    (:meth:`ScoringTask.after_return`); every outcome is counted (``aurum_jobs_total``) and timed (queue and compute seconds)."""
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
            raise image_expired() from None
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
        task.request.aurum_release = keys  # released by after_return, once the outcome is stored
        if isinstance(exc, JobFailed) and exc.code == "POISON_MESSAGE":
            metrics.DEAD_LETTERS.inc()
        raise
    else:
        task.request.aurum_release = keys
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
    found = runtime.images().get_many(keys)
    return [data or b"" for data in found], {i for i, data in enumerate(found) if data is None}


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


@app.task(name="aurum.score_image", bind=True, base=MicroBatchTask, max_batch=SETTINGS.micro_batch,
          policy=SETTINGS.micro_batch_policy, flush_interval=SETTINGS.micro_batch_interval)
def score_image(self: MicroBatchTask, requests: list) -> dict[str, Any]:
    """Single-image jobs, published as ``score_image.apply_async(args=(image_key, options))``
    and run several at a time when the queue is deep (micro-batching, :mod:`workers.microbatch`).
    Each job of the batch gets its own outcome, stored under its own id: a result, a
    ``JobFailed``, a retry (published again, same id, with backoff), or the fallback task."""
    return MicroBatch(self, requests).run()


class MicroBatch:
    """One micro-batch in a pool child: Redis work in a few pipelined round trips, the models
    once per group of jobs with the same options, then one outcome per job."""

    def __init__(self, task: MicroBatchTask, requests: list) -> None:
        self.task = task
        self.jobs = [_Job(r) for r in requests]
        self.redis = runtime.images().redis
        self.started = time.time()

    def run(self) -> dict[str, Any]:
        metrics.MICRO_BATCH_SIZE.observe(len(self.jobs))
        try:
            self._count_deliveries()
            self._fetch_images()
            groups: dict[str, list[_Job]] = {}
            for job in self._open():
                try:
                    job.opts = load_options(job.options)
                except errors.AurumError as exc:
                    self._settle(job, exc)
                    continue
                groups.setdefault(json.dumps(vars(job.opts), sort_keys=True), []).append(job)
            for group in groups.values():
                self._score(group)
        except SoftTimeLimitExceeded:
            limit = self.task.soft_time_limit or app.conf.task_soft_time_limit
            for job in self._open():
                self._settle(job, JobFailed("TIMEOUT", f"The job exceeded its time limit ({limit} s)."))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis failed mid-batch (%s): %d job(s) go back to the queue", exc, len(self._open()))
        except Exception:  # a bug: the jobs still end, with a clear failure (and a Sentry report)
            log.exception("micro-batch failed")
            for job in self._open():
                self._settle(job, JobFailed("INTERNAL_ERROR", "The job failed on an internal error."))
        unstored = self._finish()
        # Jobs without a stored outcome (Redis failed) are re-queued by the main process, not acked.
        return {"jobs": len(self.jobs), "requeue": [job.id for job in self._open()] + unstored}

    def _open(self) -> list["_Job"]:
        return [job for job in self.jobs if not job.settled]

    def _count_deliveries(self) -> None:
        """Deliveries = executions minus our own retries; a job that keeps killing its worker
        is set aside (POISON_MESSAGE). A redelivered job that already ended is not run again."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job in self.jobs:
                pipe.incr(job.delivery_key)
                pipe.expire(job.delivery_key, 24 * 3600)
            counts = pipe.execute()[::2]
        for job, attempts in zip(self.jobs, counts):
            job.deliveries = attempts - job.retries
            if job.deliveries <= 1:
                continue
            if self.task.backend.get_task_meta(job.id)["status"] in ("SUCCESS", "FAILURE"):
                job.settled = True  # its result was stored before the batch was lost
                job.outcome = "duplicate"
            elif job.deliveries > MAX_DELIVERIES:
                metrics.DEAD_LETTERS.inc()
                self._settle(job, set_aside(self.redis, job.id, job.deliveries))

    def _fetch_images(self) -> None:
        jobs = self._open()
        for job, data in zip(jobs, runtime.images().get_many([job.image_key for job in jobs])):
            if data is None:
                self._settle(job, image_expired())
            else:
                job.data = data

    def _score(self, group: list["_Job"]) -> None:
        try:
            pipe = runtime.pipeline()
        except errors.AurumError as exc:  # the models cannot load: the fallback takes the jobs
            for job in group:
                self._settle(job, exc)
            return
        run = []
        for job in group:
            job.cache_key = _key_for(job.data, job.opts)
            hit = _cached(job.cache_key)
            if hit is None:
                run.append(job)
            elif "error" in hit:
                self._settle(job, JobFailed(hit["error"]["code"], hit["error"]["message"], hit["error"].get("details")))
            else:
                self._settle(job, hit)
        if not run:
            return
        for job in run:
            chaos.inject(job.data)  # tests only (AURUM_CHAOS); nothing happens otherwise
        try:
            if len(run) == 1:
                try:
                    outcomes: list = [pipe.score(run[0].data, run[0].opts)]
                except errors.AurumError as exc:
                    outcomes = [exc]
            else:
                outcomes = pipe.score_many([job.data for job in run], run[0].opts)
        except errors.AurumError as exc:  # the whole model call failed: the same for every job
            outcomes = [exc] * len(run)
        for job, outcome in zip(run, outcomes):
            if not isinstance(outcome, errors.AurumError):
                outcome = {**outcome, "cached": False}
                metrics.observe_result(outcome)
            if not (isinstance(outcome, errors.AurumError) and outcome.retryable):
                _remember(job.cache_key, outcome)
            self._settle(job, outcome)

    def _settle(self, job: "_Job", outcome: dict[str, Any] | Exception) -> None:
        """Store one job's outcome under its own id (as ``job_outcome`` does for a task)."""
        job.settled = True
        if isinstance(outcome, dict):
            job.result, job.outcome = outcome, "succeeded"
            return
        if isinstance(outcome, errors.AurumError) and not isinstance(outcome, errors.ModelUnavailable):
            if not outcome.retryable:
                outcome = JobFailed(outcome.code, outcome.message, outcome.details)
            elif job.retries < MAX_RETRIES:
                job.outcome = "retried"
                metrics.RETRIES.labels(self.task.name).inc()
                self.task.apply_async(args=(job.image_key, job.options), task_id=job.id, retries=job.retries + 1,
                                      countdown=backoff(job.retries), headers=job.headers)
                return
        if isinstance(outcome, errors.AurumError):  # models unavailable, or retries exhausted
            reason = f"{outcome.code}: {outcome.message}"
            if outcome.retryable:
                reason = f"{outcome.code} after {MAX_RETRIES} retries: {outcome.message}"
            job.outcome = "fallback"
            metrics.FALLBACKS.labels(self.task.name).inc()
            log.warning("job goes to the fallback: %s", reason)
            score_fallback.apply_async(args=([job.image_key], job.options, reason, False), task_id=job.id,
                                       headers=job.headers)
            return
        job.result, job.outcome = outcome, "failed"

    def _finish(self) -> list[str]:
        """Store the ended jobs' outcomes, then release what they leave behind (images, in-flight
        claims) and wake the API requests waiting for them: one round trip for the last two.
        Storing first means a job whose outcome could not be stored (Redis failed) still has its
        image when it runs again; an image whose release failed expires with its TTL. Count and
        log every outcome; return the ids whose outcome is not stored (the caller re-queues them)."""
        elapsed = time.time() - self.started
        backend, unstored = self.task.backend, []
        ended = []
        for job in self.jobs:
            if not (job.settled and job.outcome in ("succeeded", "failed")):
                continue
            try:  # (no errbacks: nothing links callbacks to these jobs, and batch requests lack them)
                if job.outcome == "succeeded":
                    backend.mark_as_done(job.id, job.result, request=job.request)
                else:
                    backend.mark_as_failure(job.id, job.result, request=job.request, call_errbacks=False)
                ended.append(job)
            except (redis.ConnectionError, redis.TimeoutError):
                unstored.append(job.id)
            except Exception:  # one job's store must not keep the others from theirs
                log.exception("could not store a job's outcome")
                unstored.append(job.id)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for job in ended:
                    pipe.delete(job.image_key)
                    if job.cache_key and runtime.cache() is not None:
                        pipe.delete(INFLIGHT + job.cache_key)
                for job in self.jobs:
                    if job.settled and job.id not in unstored:
                        done.announce(pipe, job.id)
                pipe.execute()
        except redis.RedisError:  # images expire with their TTL; waiters re-read every half second
            log.warning("could not release or announce %d job(s)", len(self.jobs))
        for job in self.jobs:
            if not job.settled or job.outcome == "duplicate":
                continue
            metrics.JOBS.labels(self.task.name, job.outcome).inc()
            if job.submitted and not job.retries:
                metrics.QUEUE_SECONDS.labels(self.task.name).observe(max(0.0, self.started - job.submitted))
            if job.outcome != "retried":
                metrics.COMPUTE_SECONDS.labels(self.task.name).observe(elapsed)
            logs.job_id.set(job.id)
            logs.request_id.set(job.headers.get("aurum_request_id"))
            log.info("job", extra={"task": self.task.name, "outcome": job.outcome, "images": 1,
                                   "compute_ms": round(elapsed * 1000, 2), "batch": len(self.jobs),
                                   "attempt": job.retries + 1})
        logs.job_id.set(None)
        logs.request_id.set(None)
        return unstored


class _Job:
    """One single-image job of a micro-batch, from its celery-batches request."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.id: str = request.id
        args = list(request.args) + [None]
        self.image_key: str = args[0]
        self.options: dict | None = args[1]
        info = request.request_dict or {}
        self.retries: int = info.get("retries") or 0
        self.headers = {name: info[name] for name in HEADERS if info.get(name) is not None}
        self.submitted = float(self.headers.get("aurum_submitted_at") or 0)
        self.delivery_key = delivery_key(score_image.name, self.id)
        self.deliveries = 1
        self.data = b""
        self.opts = None
        self.cache_key: str | None = None
        self.result: Any = None
        self.settled = False
        self.outcome = ""


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
