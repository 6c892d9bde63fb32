"""Liveness, readiness and what the workers have loaded."""

from __future__ import annotations

from typing import Any

import redis

from aurum import errors
from service import heartbeats
from service.config import ServiceSettings

QUEUES = ("score", "fallback")  # celeryconfig.task_routes: each must have a live consumer


class Health:
    """Readiness from what the worker children keep fresh in Redis (service/heartbeats.py): one
    round trip, no Celery broadcast (a ping broadcast took 0.5-1 s per call and, with clients
    looping on /ready, slowed every other request)."""

    def __init__(self, client: redis.Redis, settings: ServiceSettings) -> None:
        self.redis = client
        self.settings = settings

    def live_children(self) -> dict[str, dict[str, Any]]:
        """"<hostname>:<child>" -> record of every pool child that beat within the TTL."""
        return heartbeats.live(self.redis)

    def worker_models(self) -> list[dict[str, Any]]:
        rows = [{k: v for k, v in info.items() if k not in ("keys", "beat_at", "result")}
                for info in self.live_children().values() if info]
        return sorted(rows, key=lambda r: (r["hostname"], r["child"]))

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when a request would be served: Redis reachable, this API able to seal, a live
        child with its models loaded, every queue consumed, and the children's keys matching
        this API's (a job sealed here must open there, and its result here)."""
        checks: dict[str, Any] = {}
        reasons: list[str] = []
        try:
            children = self.live_children()  # also the Redis check: one round trip in all
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            return False, {"checks": checks, "reasons": ["REDIS_UNREACHABLE"]}
        try:
            mine = self.settings.sealer.identity
            checks["encryption"] = "off" if mine == ["off"] else "ok"
        except (errors.AurumError, ValueError) as exc:
            mine = []
            checks["encryption"] = f"not configured ({exc})"
            reasons.append("NO_ENCRYPTION_KEY")
        # a child beats only once its models are loaded: a live child is a ready one
        checks["workers"] = _hosts(children)
        checks["children_with_models"] = len(children)
        if not children:
            reasons.append("NO_WORKER")
        consumed = {q for info in children.values() for q in info.get("queues", QUEUES)}
        checks["queues"] = {q: q in consumed for q in QUEUES}
        if children and not all(checks["queues"].values()):
            reasons.append("QUEUE_NOT_CONSUMED")
        mismatched = sorted(child for child, info in children.items() if mine and not _keys_agree(mine, info.get("keys")))
        if mismatched:
            checks["key_mismatch"] = mismatched
            reasons.append("KEY_MISMATCH")
        return not reasons, {"checks": checks, "reasons": reasons}


def _hosts(children: dict[str, Any]) -> list[str]:
    """The worker node names of "<hostname>:<child>" members."""
    return sorted({child.rsplit(":", 1)[0] for child in children})


def _keys_agree(mine: list[str], theirs: list[str] | None) -> bool:
    """Each side can open what the other seals (its first key); "off" only with "off"."""
    if not theirs:
        return False
    if "off" in (mine[0], theirs[0]):
        return mine == theirs
    return mine[0] in theirs and theirs[0] in mine
