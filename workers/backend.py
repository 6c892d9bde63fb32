"""The Redis result backend, minus the SUBSCRIBE at submit time.

Celery's Redis backend subscribes to a job's result channel when the job is *sent*, in case the
sender later calls ``AsyncResult.get()``. The API never does (it polls the result key) and the
workers hand jobs to the fallback task without waiting, so those subscriptions would only pile
up unread pub/sub traffic (and, at shutdown, reconnection attempts). ``get()`` still works: it
subscribes when it starts waiting and reads any result already stored first.
"""

from celery.backends.redis import RedisBackend


class SubmitOnlyRedisBackend(RedisBackend):
    def on_task_call(self, producer, task_id):  # noqa: D401 - Celery hook
        """Do not subscribe when a task is sent."""


def backend_url(redis_url: str) -> str:
    """A result_backend setting that selects this class for a redis:// URL (Celery's
    ``module:Class+url`` form); other URLs are left alone."""
    if redis_url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:SubmitOnlyRedisBackend+{redis_url}"
    return redis_url
