"""Where Redis is, for every user of it: one direct URL (``AURUM_REDIS_URL``) or a Sentinel group
(``AURUM_REDIS_SENTINELS`` + ``AURUM_REDIS_MASTER``), which then takes precedence.

Behind Sentinels each user follows a failover by itself, through the library it already uses:
redis-py's :class:`redis.sentinel.Sentinel` for our own keys (images, records, cache, keys,
heartbeats, announcements), kombu's ``sentinel://`` transport for the broker, Celery's
``SentinelBackend`` for results; the rate limiter (api/limits.py) uses our own client.
A connection to a primary that was demoted fails (redis-py turns READONLY into a connection
error) and the next one asks the Sentinels again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from .config import ServiceSettings, sentinels


def retry() -> Retry:
    """Two quick retries of a command whose connection failed (a primary gone, a failover): a
    caller must learn within about a second that Redis is away. redis-py's own default (3
    retries, backoff from 1 s to 10 s) held a command 11.6 s through a Sentinel failover
    (measured in bench/chaos.py's hosts), an API request with it; the callers retry themselves
    (the API's clients on a 503, the workers with their backoff)."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), 2)


def client(settings: ServiceSettings, timeout: float = 1.0) -> redis.Redis:
    """A client of the current primary; ``timeout`` bounds connecting and every command."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=retry())
    group = Sentinel(sentinels(settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs(settings, timeout),
                     socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry())
    return group.master_for(settings.redis_master, db=settings.redis_db,
                            password=settings.redis_password or None)


def _sentinel_kwargs(settings: ServiceSettings, timeout: float) -> dict[str, Any]:
    # password None, not absent: limits would otherwise send the primary's password to the Sentinels;
    # retry: a Sentinel whose host is gone is skipped at once (redis-py's default retried its
    # connection for 1 + 2 + 4 s before asking the next one: 5.7 s of a command, measured)
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "password": settings.redis_sentinel_password or None, "retry": retry()}


def celery_url(settings: ServiceSettings) -> str:
    """The broker / result-backend URL: ``AURUM_REDIS_URL``, or every Sentinel as a
    ``sentinel://`` URL joined by ``;`` (kombu's and Celery's form) carrying the primary's
    password and database."""
    if not settings.redis_sentinels:
        return settings.redis_url
    auth = f":{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""
    return ";".join(f"sentinel://{auth}{_host(host)}:{port}/{settings.redis_db}"
                    for host, port in sentinels(settings.redis_sentinels))


def celery_transport_options(settings: ServiceSettings) -> dict[str, Any]:
    """What kombu's and Celery's Sentinel clients need besides the URL (none without Sentinels)."""
    if not settings.redis_sentinels:
        return {}
    return {"master_name": settings.redis_master, "sentinel_kwargs": _sentinel_kwargs(settings, 1.0)}


def describe(settings: ServiceSettings) -> str:
    """Where Redis is, without secrets (for error messages and logs)."""
    if settings.redis_sentinels:
        return f"Sentinels {settings.redis_sentinels} (primary {settings.redis_master!r})"
    parts = urlsplit(settings.redis_url)
    if parts.password is None:
        return settings.redis_url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rsplit("@", 1)[1]))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
