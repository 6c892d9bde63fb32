"""kombu's Redis transports (direct and Sentinel), reusing one Redis client per connection pool.

kombu's Redis channel builds a new ``redis.Redis`` object for every command it sends outside
its consumer connection: each publish (the API's submit) and each acknowledgement (the
worker's main process). The object shares the channel's pool, so no connection is opened, but
redis-py's constructor fills its case-insensitive table of ~200 response callbacks each time:
0.37 ms of CPU per publish here, ~10 % of an API submission (bench/profile_api.py). A client is
thread- and greenlet-safe over its pool, so one per pool serves them all; a new pool (kombu
drops its pools after a connection error, or Sentinel names a new primary) gets a new client.

It also lets a publish join a pipeline of the caller's (:func:`into`).

Selected by ``broker_transport`` in celeryconfig.py for redis://, rediss:// and sentinel://
broker URLs (:func:`transport_for`); any other broker keeps its own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import redis
from kombu.transport import redis as kombu_redis

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
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_OneClientPerPool, kombu_redis.SentinelChannel):
    pass


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
