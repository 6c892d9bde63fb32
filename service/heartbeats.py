"""What the worker children tell the API about themselves through Redis, so that readiness and
model status are one read, never a Celery broadcast.

Each pool child with its models loaded beats every :data:`INTERVAL` seconds: its member
("<hostname>:<child>") in a sorted set scored by the time, and its record in a hash (what it
loaded, the queues its worker consumes, the fingerprints of its encryption keys, the result
identity its cache keys are made with). A member
whose last beat is older than :data:`TTL` is gone, and so is what its record says.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import keyspace

INTERVAL = 5.0  # seconds between beats
TTL = 15.0      # a child whose last beat is older is gone (three beats missed)
FORGET = 20 * TTL  # members (and records) older than this are removed


def beat(client: redis.Redis, member: str, info: dict[str, Any]) -> None:
    """One beat for ``member``, with its record; drops members long gone."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(keyspace.HEARTBEATS, {member: now})
        pipe.hset(keyspace.WORKERS, member, json.dumps({**info, "beat_at": now}))
        pipe.zrangebyscore(keyspace.HEARTBEATS, "-inf", now - FORGET)
        gone = pipe.execute()[-1]
    if gone:
        with client.pipeline(transaction=False) as pipe:
            pipe.zrem(keyspace.HEARTBEATS, *gone).hdel(keyspace.WORKERS, *gone).execute()


def stop(client: redis.Redis, member: str) -> None:
    """A child shutting down leaves at once, without waiting out the TTL."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrem(keyspace.HEARTBEATS, member).hdel(keyspace.WORKERS, member).execute()


def live(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Member -> record of every child that beat within the TTL: one round trip."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keyspace.HEARTBEATS, time.time() - TTL, "+inf").hgetall(keyspace.WORKERS)
        members, records = pipe.execute()
    records = {(k.decode() if isinstance(k, bytes) else k): v for k, v in records.items()}
    out = {}
    for m in members:
        member = m.decode() if isinstance(m, bytes) else m
        raw = records.get(member)
        out[member] = json.loads(raw) if raw else {}
    return dict(sorted(out.items()))
