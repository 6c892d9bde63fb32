"""Job records: what the API keeps of each job it accepted (kind, owner, image keys, options,
cache keys, the job it follows...), sealed JSON under ``aurum:job:<id>`` for the result TTL."""

from __future__ import annotations

from typing import Any

import redis

from . import keyspace
from .sealing import Sealer


class JobRecords:
    def __init__(self, client: redis.Redis, sealer: Sealer, ttl: int) -> None:
        self.redis = client
        self.sealer = sealer
        self.ttl = ttl

    def save(self, job_id: str, record: dict[str, Any], pipe: redis.client.Pipeline | None = None,
             keep_ttl: bool = False) -> None:
        """Store (or replace) a record; on ``pipe`` when given. ``keep_ttl``: an update that
        does not extend the job's life."""
        key, sealed, _ = self.sealed(job_id, record)
        if keep_ttl:
            (pipe or self.redis).set(key, sealed, keepttl=True)
        else:
            (pipe or self.redis).set(key, sealed, ex=self.ttl)

    def sealed(self, job_id: str, record: dict[str, Any]) -> tuple[str, bytes, int]:
        """What :meth:`save` stores: the record's key, its sealed value and its TTL."""
        key = keyspace.job(job_id)
        return key, self.sealer.seal_json(record, key.encode()), self.ttl

    def load(self, job_id: str) -> dict[str, Any] | None:
        key = keyspace.job(job_id)
        raw = self.redis.get(key)
        return self.sealer.unseal_json(raw, key.encode()) if raw is not None else None  # type: ignore[return-value]

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(keyspace.job(job_id)))
