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
from celery import Task, states
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from aurum import errors, fallback
from aurum.schemas import load_options
from service import config, keyspace, tracing
from service.contract import HEADERS, SCORE_BATCH, SCORE_FALLBACK, SCORE_IMAGE, JobFailed, time_limits
from service.cache import cache_key, routed_identity
from service.images import ImageExpired

from . import chaos, lifecycle, metrics, runtime
from .app import app

log = logging.getLogger(__name__)

SETTINGS = config.current()
MAX_DELIVERIES = SETTINGS.max_deliveries
MAX_RETRIES = SETTINGS.max_retries
DEAD_LETTERS_KEPT = 1000  # the newest poison job ids, for an operator to look at
BATCH_CHUNK = 8


def backoff(retries: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(cap, base * 2 ** retries))


def redis_backoff(retries: int, base: float = 1.0, cap: float = 10.0) -> float:
    """Backoff for Redis going away, with equal jitter (half the step fixed): the retries span at
    least 3.5 s, more than a Sentinel failover (~2.3 s measured), which full jitter may not."""
    step = min(cap, base * 2 ** retries)
    return step / 2 + random.uniform(0, step / 2)


def set_aside(store: redis.Redis, job_id: str, deliveries: int) -> JobFailed:
    """Dead-letter a job whose message keeps killing its worker; its final failure."""
    with store.pipeline(transaction=False) as pipe:
        pipe.lpush(keyspace.DEAD_LETTERS, job_id).ltrim(keyspace.DEAD_LETTERS, 0, DEAD_LETTERS_KEPT - 1).execute()
    return JobFailed("POISON_MESSAGE", f"The job was delivered {deliveries - 1} times and its worker died "
                     "each time; it has been set aside.", {"deliveries": deliveries - 1})


def image_expired() -> JobFailed:
    return JobFailed("IMAGE_EXPIRED", "The uploaded image expired before a worker took the job.")


class ScoringTask(Task):
    abstract = True

    def begin(self, image_key: str | None = None) -> None:
        """The start of every run. A job deleted through the API is dropped (acknowledged,
        nothing stored). A job whose message keeps coming back (its image kills the worker)
        fails POISON_MESSAGE instead of looping forever: executions minus our own retries are
        deliveries. A redelivered job whose outcome was stored before its worker died is not
        run again. ``image_key``: read in the same round trip, for :func:`image_of`."""
        job_id = self.request.id
        counter = keyspace.deliveries(self.name, job_id)
        store = runtime.images().redis
        with store.pipeline(transaction=False) as pipe:
            pipe.exists(keyspace.deleted(job_id)).incr(counter).expire(counter, 24 * 3600)
            if image_key:
                pipe.get(image_key)
            deleted, attempts, _, *blob = pipe.execute()
        self.request.aurum_image = (image_key, blob[0]) if image_key else None
        if deleted:
            store.delete(counter)
            self.backend.forget(job_id)  # the STARTED state Celery stored (task_track_started)
            self.request.aurum_deleted = True
            raise Ignore()
        deliveries = attempts - (self.request.retries or 0)
        if deliveries <= 1:
            return
        if self.backend.get_task_meta(job_id)["status"] in states.READY_STATES:
            raise Ignore()  # acknowledged, nothing stored again
        if deliveries > MAX_DELIVERIES:
            raise set_aside(store, job_id, deliveries)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Let the job's images and in-flight claims go. Celery calls this once a final outcome
        (SUCCESS or FAILURE) is stored; the images are named only then, never for a retry or a
        hand-over, so a job that has to run again (redelivered, or re-published by the API)
        still has them. A job deleted while it ran loses what it just stored."""
        keys = getattr(self.request, "aurum_release", None)
        if keys is not None and _release(task_id, keys, getattr(self.request, "aurum_claims", ())):
            self.request.aurum_deleted = True
            _forget(self, task_id, getattr(self.request, "aurum_cached", ()))


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
    task.request.aurum_started = started  # a shadow's time budget counts from here (workers/lifecycle.py)
    submitted = header(task, "aurum_submitted_at")
    if submitted and not task.request.retries:
        metrics.QUEUE_SECONDS.labels(task.name).observe(max(0.0, started - float(submitted)))
    tracing.annotate(job_id=task.request.id, request_id=header(task, "aurum_request_id"),
                     attempt=task.request.retries + 1,
                     queue_seconds=max(0.0, started - float(submitted)) if submitted else None)
    outcome = "dropped"
    try:
        try:
            # a deleted or already ended job is dropped here, a poison one fails; a single
            # image is read in the same round trip
            task.begin(keys[0] if task.name == SCORE_IMAGE else None)
            outcome = "failed"
            yield
            outcome = "succeeded"
        except ImageExpired:
            raise image_expired() from None
        except SoftTimeLimitExceeded:
            limit = task.soft_time_limit or app.conf.task_soft_time_limit
            raise JobFailed("TIMEOUT", f"The job exceeded its time limit ({limit} s).") from None
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError) as exc:
            # Redis unreachable, or full (maxmemory, noeviction): both pass; retry with backoff
            if task.request.retries >= MAX_RETRIES:
                raise JobFailed("SERVICE_UNAVAILABLE", f"Redis unreachable after {MAX_RETRIES} retries.") from None
            outcome = "retried"
            raise task.retry(exc=exc, countdown=redis_backoff(task.request.retries), max_retries=MAX_RETRIES)
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
                                   headers=propagated_headers(task), **time_limits(SETTINGS, len(keys)))
        raise Ignore() from None  # the fallback task writes this job's result
    except (Retry, Ignore):
        if outcome == "retried":
            metrics.RETRIES.labels(task.name).inc()
        raise
    except BaseException as exc:
        if isinstance(exc, JobFailed) and exc.code == "POISON_MESSAGE":
            # a dead letter keeps its (sealed) images until their TTL, so that an operator can
            # re-queue it (POST /api/admin/dead-letters/<id>/requeue); a DELETE removes them
            metrics.DEAD_LETTERS.inc()
        else:
            task.request.aurum_release = keys  # released by after_return, once the outcome is stored
        raise
    else:
        task.request.aurum_release = keys
    finally:
        elapsed = time.time() - started
        metrics.JOBS.labels(task.name, outcome).inc()
        if outcome != "retried":
            metrics.COMPUTE_SECONDS.labels(task.name).observe(elapsed)
        if outcome == "succeeded":
            runtime.account(len(keys), elapsed)
        log.info("job", extra={"task": task.name, "outcome": outcome, "compute_ms": round(elapsed * 1000, 2),
                               "images": len(keys), "attempt": task.request.retries + 1,
                               "models": getattr(task.request, "aurum_models", None)})


def header(task: Task, name: str) -> Any:
    """A custom message header the API set (Celery exposes them on the request)."""
    value = task.request.get(name) if hasattr(task.request, "get") else getattr(task.request, name, None)
    return value if value is not None else (getattr(task.request, "headers", None) or {}).get(name)


def image_of(task: Task, key: str) -> bytes:
    """The image ``key``, as :meth:`ScoringTask.begin` read it, or read now."""
    prefetched = getattr(task.request, "aurum_image", None)
    if prefetched is not None and prefetched[0] == key:
        return runtime.images().open(key, prefetched[1])
    return runtime.images().get(key)


def propagated_headers(task: Task) -> dict[str, Any]:
    return {name: value for name in HEADERS if (value := header(task, name)) is not None}


def _release(job_id: str, keys: tuple[str, ...], claims: tuple[str, ...]) -> bool:
    """Delete a finished job's images and its in-flight claims (identical uploads now hit the
    cache), in one round trip; whether the job was deleted meanwhile."""
    try:
        with runtime.images().redis.pipeline(transaction=False) as pipe:
            runtime.images().delete(*keys, pipe=pipe)
            cache = runtime.cache()
            if claims and cache is not None:
                cache.release(list(claims), job_id, pipe)
            pipe.exists(keyspace.deleted(job_id))
            return bool(pipe.execute()[-1])
    except redis.RedisError:  # the TTL removes them anyway
        log.warning("could not delete %d image key(s); they expire with their TTL", len(keys))
        return False


def _forget(task: Task, job_id: str, cached: tuple[str, ...]) -> None:
    """Remove what a job deleted while it ran stored after the DELETE: its result, cache entries,
    counters and stream (the job-ended announcement is skipped too, see workers/signals.py)."""
    try:
        task.backend.forget(job_id)
        cache = runtime.cache()
        if cache is not None and cached:
            cache.evict(*cached)
        runtime.images().redis.delete(*keyspace.of_job(job_id))
    except redis.RedisError:  # everything here expires with its TTL
        log.warning("could not remove a deleted job's result")


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
    """A cached result or failure for ``key``; None on a miss or with no key (caching off)."""
    cache = runtime.cache()
    if cache is None or not key:
        return None
    hit = cache.get(key)
    metrics.CACHE.labels("worker", "miss" if hit is None else "hit").inc()
    if hit is None:
        return None
    return hit if "error" in hit else {**hit, "cached": True}


def _remember(task: Task, key: str, outcome: dict[str, Any] | errors.AurumError) -> None:
    """Cache a result (or a deterministic failure); the job's request lists what it cached, for
    a DELETE that arrives while it runs."""
    cache = runtime.cache()
    if cache is None or not key:
        return
    if isinstance(outcome, errors.AurumError):
        if outcome.kind not in CACHEABLE_KINDS:
            return
        outcome = outcome.to_dict()
    try:
        cache.put(key, outcome)
    except redis.RedisError as exc:  # a cache entry is an optimisation: the result still stands
        log.warning("result not cached: %s", exc)
        return
    task.request.aurum_cached = (*getattr(task.request, "aurum_cached", ()), key)


def _key_for(data: bytes, opts, route: dict[str, Any] | None) -> str:
    """The unscoped key of a job published directly (not through the API)."""
    identity = routed_identity(runtime.identity(), route)
    return cache_key(hashlib.sha256(data).hexdigest(), identity, opts.resolve(runtime.settings()))


def _usable(task: Task, key: str, route: dict[str, Any] | None) -> str:
    """The API's cache key, or "" (no caching) when the API made it for another result identity
    than this child's (models or settings differ during a rolling upgrade): its entry would lie."""
    made_for = header(task, "aurum_identity")
    if getattr(task.request, "aurum_unrouted", False):
        return ""
    return "" if key and made_for and made_for != runtime.digest(route) else key


def _route(task: Task, first: bytes) -> dict[str, Any]:
    """The job's route (service/routing.py): the API's, or, for a job published directly, this
    worker's own decision from the policy."""
    route = header(task, "aurum_route")
    if route is None:
        route = runtime.router().decide(task.request.id or "", "", hashlib.sha256(first).hexdigest())
    return route


def _served(task: Task, route: dict[str, Any]):
    """The pipeline of the route's versions (their sessions loaded), and the route it really
    serves: a version this worker cannot serve (not in its manifest, or its file fails to load)
    is served by the default versions instead, uncached (the API's cache key names the route's
    versions), and logged; never the degraded fallback for a route's sake."""
    base = runtime.pipeline()
    pipe = base
    if route.get("models"):
        try:
            pipe = runtime.pipeline(route["models"])
            pipe.store.load(pipe.model_names(embedding=False), warm_up=False)  # loaded already: no-op
        except errors.ModelUnavailable as exc:
            log.warning("route %s not served here (%s): default versions, not cached", route["models"], exc.message)
            task.request.aurum_unrouted = True
            pipe, route = base, {"models": {}, "arms": {}}
    # the job's log line names the versions that served it (and any shadow)
    task.request.aurum_models = {**pipe.roles, **{f"shadow_{r}": v for r, v in route.get("shadow", {}).items()}}
    return pipe, route


def _shadow_budget(task: Task) -> float:
    """Seconds from the job's start within which a shadow may run the pipeline again: half its
    soft time limit."""
    soft = (task.request.timelimit or (None, None))[1] or task.soft_time_limit or app.conf.task_soft_time_limit
    return (soft or 60) / 2


@app.task(name=SCORE_IMAGE, bind=True, base=ScoringTask, throws=(JobFailed,))
def score_image(self: ScoringTask, image_key: str, options: dict | None = None,
                cache_key: str | None = None) -> dict[str, Any]:
    """One image, published as ``score_image.apply_async(args=(image_key, options, cache_key))``:
    a Celery task of its own, so Flower and ``celery inspect`` see it and its time limits are
    its own. ``cache_key`` is the API's (scoped to the submitting key; "" for no caching); a
    job published directly leaves it out and shares the unscoped entries."""
    with job_outcome(self, (image_key,), options, batch=False):
        opts = load_options(options)
        data = image_of(self, image_key)
        pipe, route = _served(self, _route(self, data))
        claim = _key_for(data, opts, route) if cache_key is None else cache_key
        self.request.aurum_claims = (claim,) if claim else ()  # identical submissions follow this job until it ends
        key = _usable(self, claim, route)
        hit = _cached(key)
        if hit is not None:
            if "error" in hit:
                raise JobFailed(hit["error"]["code"], hit["error"]["message"], hit["error"].get("details"))
            return hit
        chaos.inject(data)  # tests only (AURUM_CHAOS); nothing happens otherwise
        try:
            result = {**pipe.score(data, opts), "cached": False}
        except errors.AurumError as exc:
            if not exc.retryable:
                _remember(self, key, exc)
            raise
        metrics.observe_result(result, route.get("arms", {}).get("scorer", "live"))
        _remember(self, key, result)
        lifecycle.observe(self, route, pipe, [(data, result)], opts, _shadow_budget(self))
        return result


@app.task(name=SCORE_BATCH, bind=True, base=ScoringTask, throws=(JobFailed,))
def score_batch(self: ScoringTask, image_keys: list[str], options: dict | None = None,
                cache_keys: list[str] | None = None) -> dict[str, Any]:
    """Several images with batched inference (all faces of a chunk through each model at once);
    images already in the cache are not run again; progress is published as state PROGRESS
    with ``done`` / ``total``. ``cache_keys``: the API's, one per image (see score_image)."""
    with job_outcome(self, tuple(image_keys), options, batch=True):
        opts = load_options(options)
        items: list[dict[str, Any]] = []
        total = len(image_keys)
        route = pipe = None
        metrics.BATCH_SIZE.observe(total)
        for start in range(0, total, BATCH_CHUNK):
            if getattr(self.request, "aurum_shadow_stopped", False):
                raise SoftTimeLimitExceeded()  # it struck during a shadow: the batch ends TIMEOUT, as it would have
            datas, missing = _fetch(image_keys[start:start + BATCH_CHUNK])
            if route is None:  # the API's, or decided from the first image (as the API does)
                pipe, route = _served(self, _route(self, datas[0]))
            outcomes: list[Any] = [None] * len(datas)
            given = (cache_keys or [None] * total)[start:start + BATCH_CHUNK]
            keys = [None if i in missing else _key_for(d, opts, route) if given[i] is None
                    else _usable(self, given[i], route) for i, d in enumerate(datas)]
            run = []
            for i, key in enumerate(keys):
                if key is not None and (hit := _cached(key)) is not None:
                    outcomes[i] = hit
                elif key is not None:
                    run.append(i)
            for i in run:
                chaos.inject(datas[i])  # tests only (AURUM_CHAOS)
            computed = []
            for i, outcome in zip(run, pipe.score_many([datas[i] for i in run], opts)):
                if not isinstance(outcome, errors.AurumError):
                    outcome = {**outcome, "cached": False}
                    metrics.observe_result(outcome, route.get("arms", {}).get("scorer", "live"))
                    computed.append((datas[i], outcome))
                if not (isinstance(outcome, errors.AurumError) and outcome.retryable):
                    _remember(self, keys[i], outcome)
                outcomes[i] = outcome
            lifecycle.observe(self, route, pipe, computed, opts, _shadow_budget(self))
            items += _batch_items(outcomes, missing)
            self.update_state(state="PROGRESS", meta={"done": len(items), "total": total})
        return {"total": total, "done": total, "items": items}


@app.task(name=SCORE_FALLBACK, bind=True, base=ScoringTask, throws=(JobFailed,))
def score_fallback(self: ScoringTask, image_keys: list[str], options: dict | None, reason: str,
                   batch: bool) -> dict[str, Any]:
    """The degraded path (OpenCV Haar cascades, no ONNX Runtime); results say degraded: true."""
    with job_outcome(self, tuple(image_keys), options, batch):
        opts = load_options(options)
        settings = runtime.settings()
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
