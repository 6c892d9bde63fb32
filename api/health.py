"""Liveness, readiness and what the workers have loaded."""

from __future__ import annotations

from typing import Any

import redis

from service import heartbeats


class Health:
    """Readiness from the heartbeats the worker children keep fresh in Redis: one round trip,
    no Celery broadcast (a ping broadcast took 0.5-1 s per call and, with clients looping on
    /ready, slowed every other request)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def live_children(self) -> list[str]:
        """"<hostname>:<child>" of every pool child that beat within the TTL (models loaded)."""
        return heartbeats.live(self.redis)

    def live_workers(self) -> list[str]:
        return sorted({child.rsplit(":", 1)[0] for child in self.live_children()})

    def worker_models(self, hostnames: list[str] | None = None) -> list[dict[str, Any]]:
        return heartbeats.models(self.redis, self.live_workers() if hostnames is None else hostnames)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            children = self.live_children()  # also the Redis check: one round trip in all
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            return False, {"checks": checks, "reasons": ["REDIS_UNREACHABLE"]}
        # a child beats only once its models are loaded: a live child is a ready one
        checks["workers"] = sorted({child.rsplit(":", 1)[0] for child in children})
        checks["children_with_models"] = len(children)
        reasons = [] if children else ["NO_WORKER"]
        return not reasons, {"checks": checks, "reasons": reasons}
