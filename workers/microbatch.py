"""Micro-batching of single-image jobs, on top of celery-batches.

celery-batches buffers a task's messages in the worker's main process and hands a list of
requests to one pool child. Its own flush policy is a count or a timer; ours (``policy="pool"``,
the default) is Triton-style dynamic batching with no queue delay:

- a message that arrives while a pool child is free goes to it at once (a lone request is
  never held back waiting for company);
- messages that arrive while every child is busy wait in the buffer, and go, up to
  ``max_batch`` at a time and shared among the free children, as soon as a child is done.

So batches form exactly when the queue is deep, and their size follows the load. The stock
policy (``policy="timer"``: flush every ``max_batch`` messages or ``flush_interval`` seconds) is
kept for comparison (bench/load.py measures both).

What Celery's own request handling does and celery-batches does not, this class does: time
limits on the pool call, revoked jobs dropped, and the worker-lost path. When a child dies
mid-batch (a crash, an OOM kill, a poison image) every job of the batch is re-queued, and this
worker runs each of them alone from then on, so that one poison image cannot take innocent
jobs with it to the dead-letter list. Acknowledgement is late: when the batch returns, or
re-queued when it is lost.
"""

from __future__ import annotations

import logging
import math
from itertools import count
from queue import Queue
from typing import Any, Callable

from cachetools import TTLCache
from celery.exceptions import TimeLimitExceeded
from celery.worker import state as worker_state
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = logging.getLogger(__name__)


class MicroBatchTask(Batches):
    abstract = True
    max_batch = 16
    policy = "pool"  # or "timer": celery-batches' own flush_every / flush_interval
    flush_interval = 0.25  # pool policy: only a safety net; timer policy: the batching window

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable:
        # A fresh start per consumer: the task object outlives a worker (tests start several),
        # and a timer reference left from an earlier one would never fire again.
        self._buffer, self._pending, self._count, self._tref = Queue(), Queue(), count(1), None
        self._in_flight = 0
        self._suspects: TTLCache = TTLCache(maxsize=100_000, ttl=3600)  # ids of jobs whose batch was lost
        self.flush_every = self.max_batch if self.policy == "timer" else 10 ** 9
        handler = super().Strategy(task, app, consumer)
        if self.policy == "timer":
            return handler

        def on_message(*args: Any, **kwargs: Any) -> None:
            handler(*args, **kwargs)
            if self._in_flight < self._pool.limit:
                self._do_flush()

        return on_message

    def flush(self, requests: Any) -> None:
        ready = [r for r in requests if not (r.id in worker_state.revoked and r.revoked())]
        if self.policy == "timer":
            for start in range(0, len(ready), self.max_batch):
                self._dispatch(ready[start:start + self.max_batch])
            return
        alone = [r for r in ready if r.id in self._suspects]
        together = [r for r in ready if r.id not in self._suspects]
        while alone or together:
            free = self._pool.limit - self._in_flight
            if free <= 0:
                break
            if alone:
                chunk, alone = alone[:1], alone[1:]
            else:
                size = min(self.max_batch, math.ceil(len(together) / free))
                chunk, together = together[:size], together[size:]
            self._dispatch(chunk)
        for request in alone + together:  # every child is busy: they go when one is done
            self._buffer.put(request)

    def _dispatch(self, requests: list) -> None:
        self._in_flight += 1
        pending = [True]  # the pool calls one of the two callbacks; count the batch's end once

        def ended() -> bool:
            if not pending:
                return False
            pending.clear()
            self._in_flight -= 1
            return True

        def returned(outcome: Any) -> None:
            if not ended():
                return
            requeue = set(outcome.get("requeue", ())) if isinstance(outcome, dict) else set()
            for request in requests:
                if request.id in requeue:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()
            self._more()

        def lost(exc_info: Any) -> None:
            if not ended():
                return
            exc = getattr(exc_info, "exception", exc_info)
            if isinstance(exc, TimeLimitExceeded):
                self._timed_out(requests)
            else:  # the child died (WorkerLostError): every job of the batch goes back, to run alone
                log.warning("a micro-batch of %d job(s) was lost (%r); re-queued, each to run alone",
                            len(requests), exc)
                for request in requests:
                    self._suspects[request.id] = True
                    request.reject(requeue=True)
            self._more()

        limit_soft = self.soft_time_limit or self.app.conf.task_soft_time_limit
        limit_hard = self.time_limit or self.app.conf.task_time_limit
        self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            callback=returned, error_callback=lost, soft_timeout=limit_soft, timeout=limit_hard,
        )

    def _timed_out(self, requests: list) -> None:
        """The hard time limit killed the child: jobs without a final state fail with TIMEOUT."""
        from .tasks import JobFailed

        backend = self.app.backend
        limit = self.time_limit or self.app.conf.task_time_limit
        for request in requests:
            try:
                if backend.get_task_meta(request.id)["status"] not in ("SUCCESS", "FAILURE"):
                    backend.mark_as_failure(request.id, JobFailed(
                        "TIMEOUT", f"The job exceeded its time limit ({limit} s)."), request=request,
                        call_errbacks=False)
                request.acknowledge()
            except Exception as exc:  # Redis down: leave it unacknowledged, Redis redelivers it
                log.warning("could not record a timed-out job: %s", exc)

    def _more(self) -> None:
        if not self._buffer.empty():
            self._do_flush()
