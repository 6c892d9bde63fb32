"""kombu's Redis transports (direct and Sentinel), reusing one Redis client per connection pool.

kombu's Redis channel builds a new ``redis.Redis`` object for every command it sends outside
its consumer connection: each publish (the API's submit) and each acknowledgement (the
worker's main process). The object shares the channel's pool, so no connection is opened, but
redis-py's constructor fills its case-insensitive table of ~200 response callbacks each time:
0.37 ms of CPU per publish here, ~10 % of an API submission (bench/profile_api.py). A client is
thread- and greenlet-safe over its pool, so one per pool serves them all; a new pool (kombu
drops its pools after a connection error, or Sentinel names a new primary) gets a new client.

It also lets a publish join a pipeline of the caller's (:func:`into`), and keeps the consumer
going while Redis is full (:class:`QoS`).

Selected by ``broker_transport`` in celeryconfig.py for redis://, rediss:// and sentinel://
broker URLs (:func:`transport_for`); any other broker keeps its own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
import logging

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)

# A pipeline of the broker's own Redis that this context's publishes are added to (see :func:`into`).
_INTO: ContextVar[redis.client.Pipeline | None] = ContextVar("aurum_publish_into", default=None)


@contextmanager
def into(pipe: redis.client.Pipeline) -> Iterator[None]:
    """Messages published here, in this thread or greenlet, are LPUSHed onto ``pipe`` (which must
    talk to the broker's Redis and database) instead of sent at once: a submission stores its
    images and record and queues its message in one round trip, and the message goes nowhere
    if that round trip fails. The caller executes ``pipe``."""
    token = _INTO.set(pipe)
    try:
        yield
    finally:
        _INTO.reset(token)


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, made to ride out a full Redis (maxmemory reached with
    noeviction: every command that may grow memory, and every MULTI, is refused with OOM).

    kombu's own raised OutOfMemoryError from the consumer's acks and fetches: a "channel error"
    that restarted the consumer, again every few milliseconds while Redis stayed full (50+
    restarts in 10 s). Each restart resets the event loop that also carries the pool's result
    pipes, and now and then the worker came back believing a job still ran whose outcome it
    had lost: it never acknowledged it, and with the prefetch count cut to one it fetched
    nothing more while the queue filled (tests/chaos/test_redis_full.py, about 1 run in 6 on
    a loaded machine). Here the consumer never sees the error:

    - an acknowledgement deletes its two index entries without MULTI (Redis lets deletes through
      when full);
    - a message popped when Redis cannot record it as unacknowledged runs, tracked in memory
      only (raising would lose it just the same: it is already off the queue); a job whose
      message is lost is published again by the API's status read (api/jobs.py ``_maybe_requeue``);
    - a requeue Redis refuses leaves the message where it is, unacknowledged in Redis, for the
      visibility timeout to restore; the consumer forgets it, so it holds no prefetch slot."""

    def _remove_from_indices(self, delivery_tag, pipe=None):
        if pipe is not None:  # part of kombu's restore transaction
            return super()._remove_from_indices(delivery_tag, pipe)
        with self.channel.conn_or_acquire() as client:
            return client.pipeline(transaction=False).zrem(self.unacked_index_key, delivery_tag) \
                .hdel(self.unacked_key, delivery_tag)

    def append(self, message, delivery_tag):
        try:
            super().append(message, delivery_tag)
        except redis.exceptions.OutOfMemoryError:
            logger.warning("Redis is full: message %s runs without its unacknowledged record", delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except redis.exceptions.OutOfMemoryError:
            logger.warning("Redis is full: message %s is left for the visibility timeout to restore", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, *args, **kwargs):
        try:
            super().restore_visible(*args, **kwargs)
        except redis.exceptions.OutOfMemoryError:
            pass  # its lock is a write: the next sweep tries again


class _OneClientPerPool:
    _aurum_client: tuple[object, object] | None = None  # (pool, client)

    def _put(self, queue, message, **kwargs):
        pipe = _INTO.get()
        if pipe is None or "_publish_batch" in kwargs or (self._expires and queue in self._expires):
            return super()._put(queue, message, **kwargs)
        # what kombu's _put sends for a queue without expiry
        pipe.lpush(self._q_for_pri(queue, self._get_message_priority(message, reverse=False)),
                   kombu_redis.dumps(message))

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the consumer's own connection (BRPOP): kombu creates it once anyway
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._aurum_client
        if cached is None or cached[0] is not pool:
            cached = self._aurum_client = (pool, super()._create_client())
        return cached[1]


class Channel(_OneClientPerPool, kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_OneClientPerPool, kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` setting for ``broker_url``: these classes for Redis, else None
    (the URL's scheme chooses, as usual)."""
    scheme = broker_url.split("://", 1)[0] if "://" in broker_url else ""
    if scheme in ("redis", "rediss"):
        return f"{__name__}:Transport"
    if scheme == "sentinel":
        return f"{__name__}:SentinelTransport"
    return None
