"""kombu's Redis transports (direct and Sentinel), reusing one Redis client per connection pool.

kombu's Redis channel builds a new ``redis.Redis`` object for every command it sends outside
its consumer connection: each publish (the API's submit) and each acknowledgement (the
worker's main process). The object shares the channel's pool, so no connection is opened, but
redis-py's constructor fills its case-insensitive table of ~200 response callbacks each time:
0.37 ms of CPU per publish here, ~10 % of an API submission (bench/profile_api.py). A client is
thread- and greenlet-safe over its pool, so one per pool serves them all; a new pool (kombu
drops its pools after a connection error, or Sentinel names a new primary) gets a new client.

Selected by ``broker_transport`` in celeryconfig.py for redis://, rediss:// and sentinel://
broker URLs (:func:`transport_for`); any other broker keeps its own transport.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class _OneClientPerPool:
    _aurum_client: tuple[object, object] | None = None  # (pool, client)

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
