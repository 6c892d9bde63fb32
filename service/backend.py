"""The Redis result backend, minus the SUBSCRIBE at submit time and the read before a SUCCESS.

Celery's Redis backend subscribes to a job's result channel when the job is *sent*, in case the
sender later calls ``AsyncResult.get()``. The API never does (it polls the result key) and the
workers hand jobs to the fallback task without waiting, so those subscriptions would only pile
up unread pub/sub traffic (and, at shutdown, reconnection attempts). ``get()`` still works: it
subscribes when it starts waiting and reads any result already stored first.
"""

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from kombu.serialization import register

from .config import current

SEALED = "aurum-sealed"


def _dumps(obj) -> bytes:
    return current().sealer.seal_json(obj, b"celery-result")


def _loads(blob) -> object:
    return current().sealer.unseal_json(bytes(blob) if not isinstance(blob, bytes) else blob, b"celery-result")


# Results (landmarks, embeddings) are sealed like everything else Aurum keeps in Redis.
register(SEALED, _dumps, _loads, content_type="application/x-aurum-sealed", content_encoding="binary")


class _Aurum:
    def on_task_call(self, producer, task_id):  # noqa: D401 - Celery hook
        """Do not subscribe when a task is sent."""

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        """Celery reads a job's stored state before each store, so that nothing overwrites a
        SUCCESS (a lost worker's late FAILURE, say). A SUCCESS itself may overwrite one (a
        job's results are idempotent), so that read, a round trip and an unseal in every job's
        pool child, is skipped for it; every other state keeps Celery's check."""
        if state != states.SUCCESS:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result


class SubmitOnlyRedisBackend(_Aurum, RedisBackend):
    pass


class SubmitOnlySentinelBackend(_Aurum, SentinelBackend):
    pass


def backend_url(redis_url: str) -> str:
    """A result_backend setting that selects these classes for a redis:// or sentinel:// URL
    (Celery's ``module:Class+url`` form); other URLs are left alone."""
    if redis_url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:SubmitOnlyRedisBackend+{redis_url}"
    if redis_url.startswith("sentinel://"):
        return f"{__name__}:SubmitOnlySentinelBackend+{redis_url}"
    return redis_url
