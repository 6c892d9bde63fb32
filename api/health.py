"""Liveness, readiness and what the workers have loaded."""

from __future__ import annotations

import json
from typing import Any

import redis

from workers.app import app as celery_app
from workers.runtime import MODELS_PREFIX


class Health:
    def __init__(self, client: redis.Redis, ping_timeout: float = 0.5) -> None:
        self.redis = client
        self.ping_timeout = ping_timeout

    def live_workers(self) -> list[str]:
        # One retry: over Redis, a worker sometimes misses a broadcast that follows another
        # closely (seen with every other back-to-back ping to a solo-pool worker).
        for _ in range(2):
            replies = celery_app.control.ping(timeout=self.ping_timeout) or []
            if replies:
                break
        return sorted(name for reply in replies for name in reply)

    def worker_models(self, hostnames: list[str] | None = None) -> list[dict[str, Any]]:
        rows = []
        for hostname in self.live_workers() if hostnames is None else hostnames:
            for key in self.redis.scan_iter(f"{MODELS_PREFIX}{hostname}:*"):
                raw = self.redis.get(key)
                if raw:
                    rows.append(json.loads(raw))
        return sorted(rows, key=lambda r: (r["hostname"], r["child"]))

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        reasons = []
        try:
            self.redis.ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            reasons.append("REDIS_UNREACHABLE")
            return False, {"checks": checks, "reasons": reasons}
        workers = self.live_workers()
        checks["workers"] = workers
        if not workers:
            reasons.append("NO_WORKER")
        loaded = [row for row in self.worker_models(workers) if row["models"]]
        checks["children_with_models"] = len(loaded)
        if workers and not loaded:
            reasons.append("MODELS_NOT_LOADED")
        return not reasons, {"checks": checks, "reasons": reasons}
