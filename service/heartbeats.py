"""What the worker children tell the API about themselves through Redis, so that readiness and
model status are one read, never a Celery broadcast: a heartbeat per child with its models
loaded (a sorted set scored by time) and the record of what that child loaded."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import keyspace

INTERVAL = 5.0  # seconds between beats
TTL = 15.0      # a child whose last beat is older is gone (three beats missed)


def beat(client: redis.Redis, member: str) -> None:
    """One beat for ``member`` ("<hostname>:<child>"), and drop members long gone."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(keyspace.HEARTBEATS, {member: now})
        pipe.zremrangebyscore(keyspace.HEARTBEATS, "-inf", now - 20 * TTL)
        pipe.execute()


def live(client: redis.Redis, key: str = keyspace.HEARTBEATS) -> list[str]:
    """"<hostname>:<child>" of every child that beat within the TTL."""
    fresh = client.zrangebyscore(key, time.time() - TTL, "+inf")
    return sorted(m.decode() if isinstance(m, bytes) else m for m in fresh)


def publish_models(client: redis.Redis, hostname: str, child: int, info: dict[str, Any]) -> None:
    client.set(keyspace.models(hostname, child), json.dumps(info), ex=7 * 24 * 3600)


def models(client: redis.Redis, hostnames: list[str]) -> list[dict[str, Any]]:
    """What the children of ``hostnames`` loaded, as they published it."""
    rows = []
    for hostname in hostnames:
        for key in client.scan_iter(keyspace.models(hostname, "*")):
            raw = client.get(key)
            if raw:
                rows.append(json.loads(raw))
    return sorted(rows, key=lambda r: (r["hostname"], r["child"]))
