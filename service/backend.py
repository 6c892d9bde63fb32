"""The Redis result backend, minus the SUBSCRIBE at submit time.

Celery's Redis backend subscribes to a job's result channel when the job is *sent*, in case the
sender later calls ``AsyncResult.get()``. The API never does (it polls the result key) and the
workers hand jobs to the fallback task without waiting, so those subscriptions would only pile
up unread pub/sub traffic (and, at shutdown, reconnection attempts). ``get()`` still works: it
subscribes when it starts waiting and reads any result already stored first.
"""

from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.serialization import register

from .config import current

SEALED = "aurum-sealed"


def _dumps(obj) -> bytes:
    return current().sealer.seal_json(obj, b"celery-result")


def _loads(blob) -> object:
    return current().sealer.unseal_json(bytes(blob) if not isinstance(blob, bytes) else blob, b"celery-result")


# Results (landmarks, embeddings) are sealed like everything else Aurum keeps in Redis.
register(SEALED, _dumps, _loads, content_type="application/x-aurum-sealed", content_encoding="binary")


class SubmitOnlyRedisBackend(RedisBackend):
    def on_task_call(self, producer, task_id):  # noqa: D401 - Celery hook
        """Do not subscribe when a task is sent."""


class SubmitOnlySentinelBackend(SentinelBackend):
    on_task_call = SubmitOnlyRedisBackend.on_task_call


def backend_url(redis_url: str) -> str:
    """A result_backend setting that selects these classes for a redis:// or sentinel:// URL
    (Celery's ``module:Class+url`` form); other URLs are left alone."""
    if redis_url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:SubmitOnlyRedisBackend+{redis_url}"
    if redis_url.startswith("sentinel://"):
        return f"{__name__}:SubmitOnlySentinelBackend+{redis_url}"
    return redis_url
