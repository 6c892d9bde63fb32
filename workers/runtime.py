"""Per-process state of a worker: the pipeline (loaded after fork) and the image store."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any, Callable


from aurum.pipeline import Pipeline
from aurum.store import gpu_for_child

from service import config, connections, heartbeats, routing, tracing
from service.cache import ResultCache, identity_digest, result_identity, routed_identity
from service.config import ServiceSettings
from service.images import ImageStore

log = logging.getLogger(__name__)

_pipeline: Pipeline | None = None
_settings: ServiceSettings | None = None  # the process's, with this child's threads and GPU
_identity: tuple[dict[str, Any], str] | None = None  # this child's result identity and its digest
_images: ImageStore | None = None
_cache: ResultCache | None = None
_router: routing.Router | None = None
_variants: dict[tuple, Pipeline] = {}  # model versions (role, ref) -> the pipeline serving them
_work = {"done": 0, "busy_s": 0.0}  # images computed and seconds spent: the autoscaler's service rate


def ort_threads(concurrency: int | None, cores: int | None = None) -> int:
    """Threads per process so that processes x threads <= cores."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, concurrency or cores))


_beating: dict[str, tuple[threading.Event, threading.Thread]] = {}


def start_heartbeat(member: str, info: Callable[[], dict[str, Any]]) -> None:
    """Beat for this child (:mod:`service.heartbeats`) from a daemon thread: a busy child keeps
    beating, a dead one stops.

    The thread has its own connection, closed when it stops: a daemon thread frozen at
    interpreter exit inside a shared pool's lock would deadlock whoever closes that pool."""
    stop_heartbeats()  # a process beats for one child: the one it is now
    stop = threading.Event()
    client = connections.client(settings(), timeout=2)

    def beat() -> None:
        try:
            while not stop.is_set():
                try:
                    heartbeats.beat(client, member, info())  # read again: a routed version loads later
                except Exception as exc:  # Redis away: beat again when it is back
                    log.debug("heartbeat not sent: %s", exc)
                stop.wait(heartbeats.INTERVAL)
            try:
                heartbeats.stop(client, member)
            except Exception:  # the TTL says it anyway
                pass
        finally:
            client.close()

    thread = threading.Thread(target=beat, name="aurum-heartbeat", daemon=True)
    _beating[member] = (stop, thread)
    thread.start()


def stop_heartbeats() -> None:
    """Stop this process's heartbeat and wait for it (a beat in flight ends within its timeout)."""
    for stop, thread in _beating.values():
        stop.set()
        if thread is not threading.current_thread():
            thread.join(5)
    _beating.clear()


def load(child_index: int = 0, concurrency: int | None = None, hostname: str | None = None) -> Pipeline:
    """Create this process's ONNX sessions (call after fork) and warm every model up once."""
    global _pipeline, _settings, _identity
    base = config.current()
    overrides = {}
    if not base.ort_threads:
        overrides["ort_threads"] = ort_threads(concurrency)
    if base.device == "cuda":
        overrides["gpus"] = (gpu_for_child(child_index, base.gpus),)
    _settings = child = dataclasses.replace(base, **overrides)
    from .metrics import MODEL_LOAD_FAILURES, MODEL_LOAD_SECONDS

    start = time.perf_counter()
    tracing.setup(child, "aurum-worker")  # after fork; off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        pipeline = Pipeline(child, tracer=tracing.tracer())
        pipeline.load(embedding=True)
        preload(pipeline)
    except Exception:  # the child lives on, its jobs go to the fallback; an operator is paged
        MODEL_LOAD_FAILURES.inc()
        raise
    _pipeline = pipeline
    _identity = None
    _variants.clear()
    MODEL_LOAD_SECONDS.observe(time.perf_counter() - start)
    if hostname:
        start_heartbeat(f"{hostname}:{child_index}", lambda: child_record(hostname, child_index, pipeline))
    log.info("child %d: models loaded in %.0f ms (device %s, gpu %s, %d ORT threads)",
             child_index, (time.perf_counter() - start) * 1000, child.device,
             child.gpus[0] if child.device == "cuda" else "-", child.ort_threads)
    return pipeline


def preload(pipeline: Pipeline) -> None:
    """Load the versions the routing policy names now, so that their first jobs do not pay for
    it (a version routed to later is loaded by its first job). Redis away: later, then."""
    client = connections.client(settings(), timeout=2)
    try:
        refs = routing.load(client).refs()
    except Exception as exc:  # Redis away, or a policy written by a newer release
        log.info("routing policy not read at start: %s", exc)
        return
    finally:
        client.close()
    for ref in sorted(refs):
        try:
            pipeline.store.load([ref], warm_up=True)
        except Exception as exc:  # a version this worker's manifest lacks: its jobs fail over
            log.warning("routed model %s not loaded: %s", ref, exc)


def account(images: int, seconds: float) -> None:
    """Images this child computed in ``seconds`` (told with each beat: workers/autoscale.py)."""
    _work["done"] += images
    _work["busy_s"] += seconds


def child_record(hostname: str, child_index: int, pipeline: Pipeline) -> dict[str, Any]:
    """What this child tells the API with each beat: what it loaded (model status), the queues
    its worker consumes and its encryption keys' fingerprints (readiness), and its result
    identity (the API makes cache keys with it)."""
    from service.queue import app

    try:
        keys = settings().sealer.identity
    except Exception:  # no keys configured: the API's readiness says so
        keys = []
    return {"hostname": hostname, "child": child_index, "pid": os.getpid(), "loaded_at": time.time(),
            "device": pipeline.settings.device,
            "models": [m for m in pipeline.store.describe() if m["provider"] is not None],
            "queues": sorted(app.amqp.queues.consume_from or app.amqp.queues),
            "keys": keys,
            "result": identity(),
            "done": _work["done"], "busy_s": round(_work["busy_s"], 3),
            # what it can serve (the API has no models folder: it checks routes against this)
            "catalogue": {"defaults": pipeline.roles,
                          "names": {n: f"{n}@{spec['version']}" for n, spec in pipeline.store.specs.items()},
                          "versions": {ref: pipeline.store.spec(ref).get("task") for ref in pipeline.store.all_refs()}}}


def settings() -> ServiceSettings:
    """This child's settings: the process's (:func:`service.config.current`), with the ONNX
    Runtime threads and GPU it was given when its models were loaded."""
    return _settings or config.current()


def identity() -> dict[str, Any]:
    """This child's result identity (service/cache.py): what its cache keys are made with."""
    return _identity_and_digest()[0]


def digest(route: dict[str, Any] | None = None) -> str:
    """The short name of :func:`identity` (of a job routed by ``route``): what the job's
    ``aurum_identity`` header is compared with."""
    if route and route.get("models"):
        return identity_digest(routed_identity(identity(), route))
    return _identity_and_digest()[1]


def _identity_and_digest() -> tuple[dict[str, Any], str]:
    global _identity
    if _identity is None:
        p = pipeline()
        made = result_identity(p.versions(), p.settings)
        _identity = (made, identity_digest(made))
    return _identity


def pipeline(models: dict[str, str] | None = None) -> Pipeline:
    """The loaded pipeline; loads it on first use where no worker_process_init ran (solo pool).
    ``models``: role -> version (a job's route): the pipeline of those versions, on the same
    sessions (a version not loaded yet is loaded by its first job)."""
    base = _pipeline or load()
    if not models:
        return base
    chosen = tuple(sorted((role, base.store.ref(ref)) for role, ref in models.items()))
    if all(base.roles[role] == ref for role, ref in chosen):
        return base
    variant = _variants.get(chosen)
    if variant is None:
        _prune(base)
        variant = _variants.setdefault(chosen, base.variant(dict(chosen)))
    return variant


def _prune(base: Pipeline) -> None:
    """Drop the pipelines and sessions of versions the routing policy no longer names (a
    candidate stopped, a version promoted away), before another is made."""
    try:
        named = router().policy().refs()
    except Exception:  # noqa: BLE001 - keep everything rather than guess
        return
    keep = named | set(base.roles.values())
    for key in [k for k in _variants if any(ref not in keep for _, ref in k)]:
        del _variants[key]
    used = set(base.model_names()) | {ref for k in _variants for _, ref in k}
    base.store.unload([ref for ref in base.store.loaded() if ref not in used and ref.partition("@")[0]
                       in {r.partition("@")[0] for r in keep}])


def router() -> routing.Router:
    """The routing policy as this process reads it (jobs published without a route)."""
    global _router
    if _router is None:
        _router = routing.Router(images().redis, settings().routing_refresh)
    return _router


def images() -> ImageStore:
    global _images
    if _images is None:
        s = settings()
        _images = ImageStore(connections.client(s), s.sealer, ttl=s.image_ttl)
    return _images


def cache() -> ResultCache | None:
    """This process's result cache (L1 here, L2 in Redis); None when AURUM_CACHE_TTL is 0."""
    global _cache
    if _cache is None:
        s = settings()
        if s.cache_ttl <= 0:
            return None
        _cache = ResultCache(images().redis, s.sealer, s.cache_ttl, s.cache_l1_size, s.cache_l1_ttl)
    return _cache


def reset() -> None:
    """Forget per-process state (tests, and after a configuration change)."""
    global _pipeline, _settings, _identity, _images, _cache, _router
    stop_heartbeats()
    config.reset()
    _pipeline = _settings = _identity = None
    _images = None
    _cache = None
    _router = None
    _variants.clear()
