"""The worker's Celery application: the service's (:mod:`service.queue`) with the tasks and
signal handlers. ``celery -A workers.app worker`` starts a worker."""

from service.queue import app, point_at  # noqa: F401 - point_at: for tests and tools

app.conf.include = ["workers.tasks", "workers.signals"]

# A worker storing an outcome while Redis fails over (Sentinel: ~2.3 s measured) retries on the
# new primary instead of failing the job SERVICE_UNAVAILABLE; ~10 s at most (0.1 s doubling to
# 2 s). The API does not retry its reads: it answers 503 within a second (RELIABILITY.md).
app.conf.update(result_backend_always_retry=True, result_backend_max_retries=8,
                result_backend_base_sleep_between_retries_ms=100,
                result_backend_max_sleep_between_retries_ms=2000)
