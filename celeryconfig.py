"""Celery configuration. Values come from this process's settings (:func:`service.config.current`:
environment variables with documented defaults); ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` override
``AURUM_REDIS_URL`` for the broker and the result backend."""

import os

from service.config import current
from service.backend import SEALED, backend_url  # noqa: F401 - registers the sealed serializer
from service.broker import transport_for
from service.connections import celery_transport_options, celery_url

try:
    _s = current()  # this process's settings, shared with the rest of the worker (or the API)
except ValueError as exc:  # one clear line at start, not a traceback
    raise SystemExit(f"aurum: invalid setting: {exc}") from None

# AURUM_REDIS_URL, or sentinel:// URLs when AURUM_REDIS_SENTINELS is set (service/connections.py).
broker_url = os.environ.get("CELERY_BROKER_URL", celery_url(_s))
# kombu's Redis transport, reusing one client per pool instead of building one per publish and
# per acknowledgement (service/broker.py); other brokers keep their own.
broker_transport = transport_for(broker_url)
# Redis, without subscribing to every result channel at submit time (see service/backend.py).
result_backend = backend_url(os.environ.get("CELERY_RESULT_BACKEND", celery_url(_s)))
# One backend object (and Redis pool) per process: Celery's default makes one per thread, and the
# API's server threads come and go (under gevent it was one per greenlet, i.e. per request: entry
# points scanned, a new pool and a new Redis connection, ~5 % of the API's CPU under load,
# bench/profile_stack.py). redis-py's pools are thread-safe; the API only reads and forgets
# results (never AsyncResult.get(), whose pub/sub consumer is not shared).
result_backend_thread_safe = True
# Behind Sentinels: the primary's name and the Sentinels' own credentials.
result_backend_transport_options = celery_transport_options(_s)

# JSON by default (measured: msgpack is no faster end to end, see bench/queue.py); never pickle.
task_serializer = _s.serializer
# Results are JSON sealed with AES-GCM (service/backend.py); messages carry only keys and options.
result_serializer = "aurum-sealed"
accept_content = ["json", "msgpack"] if _s.serializer == "msgpack" else ["json"]
result_accept_content = ["aurum-sealed"]

# A job that was accepted must end in a result or a clear failure: acknowledge only when done,
# and re-queue when the worker process dies mid-job (a delivery counter stops poison images).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = _s.prefetch
# with `--autoscale MAX,MIN` (or CELERY_WORKER_AUTOSCALE): sized from the service's arrivals,
# backlog and measured service rate, not from this worker's reserved messages (workers/autoscale.py)
worker_autoscaler = "workers.autoscale:Forecasting"

# Privacy: results are biometric derivatives and expire.
result_expires = _s.result_ttl
result_extended = True

task_soft_time_limit = _s.task_soft_time_limit
task_time_limit = _s.task_time_limit
# Redis redelivers unacknowledged messages after the visibility timeout: keep it above the hard
# time limit so a slow job is never delivered twice while it is still running.
# A worker that dies holds AURUM_PREFETCH x concurrency reserved messages: kombu restores them
# once they are older than the visibility timeout, in a sweep that by default runs only every
# 10 x 10 s; every 10 s here (one ZRANGE on a small index).
# A batch's limits grow with its images (service.contract.time_limits): cover the largest batch.
_longest = _s.task_time_limit + (_s.max_batch - 1) * _s.task_image_seconds
broker_transport_options = {"visibility_timeout": max(_s.task_time_limit * 4, round(_longest * 2)),
                            "unacked_restore_throttle": 1, **celery_transport_options(_s)}
# Fail fast when Redis is down: the API must answer 503 within a second, not hang.
broker_connection_timeout = 1.0
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
redis_socket_timeout = 2.0
redis_socket_connect_timeout = 1.0
broker_connection_retry_on_startup = True
# Redis refusing writes (maxmemory with noeviction: OutOfMemoryError, a "channel error" to kombu)
# must not end the worker: without this the consumer's ack of a finished job raised it and the
# main process exited ("Unrecoverable error"), leaving accepted jobs until someone restarted it.
# Retried like a lost connection instead (tests/chaos/test_redis_full.py).
broker_channel_error_retry = True

task_routes = {
    "aurum.score_image": {"queue": "score"},
    "aurum.score_batch": {"queue": "score"},
    "aurum.score_fallback": {"queue": "fallback"},
}
task_default_queue = "score"
task_track_started = True
# Task events feed Flower, which turns them on in the workers itself (`enable_events`, every
# minute) while it runs; sending them when nobody listens cost ~40 % of the worker main
# process's CPU (bench/profile_stack.py).
worker_send_task_events = _s.task_events
task_send_sent_event = _s.task_events
# Loading the ONNX sessions and one warm-up inference per model takes ~1 s; give it room.
worker_proc_alive_timeout = _s.worker_init_timeout
