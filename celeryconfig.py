"""Celery configuration, from environment variables with documented defaults (see README).

Broker and result backend default to ``AURUM_REDIS_URL``; ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` override them.
"""

import os

_redis = os.environ.get("AURUM_REDIS_URL", "redis://localhost:6379/0")

broker_url = os.environ.get("CELERY_BROKER_URL", _redis)
result_backend = os.environ.get("CELERY_RESULT_BACKEND", _redis)

# JSON: results are JSON documents anyway, and the API and Flower read them without pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# A job that was accepted must end in a result or a clear failure: acknowledge only when done,
# and re-queue when the worker process dies mid-job (a delivery counter stops poison images).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("AURUM_PREFETCH", "1"))

# Privacy: results are biometric derivatives and expire.
result_expires = int(os.environ.get("AURUM_RESULT_TTL", "3600"))
result_extended = True

task_soft_time_limit = int(os.environ.get("AURUM_TASK_SOFT_TIME_LIMIT", "20"))
task_time_limit = int(os.environ.get("AURUM_TASK_TIME_LIMIT", "30"))
# Redis redelivers unacknowledged messages after the visibility timeout: keep it above the hard
# time limit so a slow job is never delivered twice while it is still running.
broker_transport_options = {"visibility_timeout": task_time_limit * 4}
result_backend_transport_options = {"retry_policy": {"timeout": 1.0}}
broker_connection_retry_on_startup = True

task_routes = {
    "aurum.score_image": {"queue": "score"},
    "aurum.score_batch": {"queue": "score"},
    "aurum.score_fallback": {"queue": "fallback"},
}
task_default_queue = "score"
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
# Loading the ONNX sessions and one warm-up inference per model takes ~1 s; give it room.
worker_proc_alive_timeout = float(os.environ.get("AURUM_WORKER_INIT_TIMEOUT", "30"))
