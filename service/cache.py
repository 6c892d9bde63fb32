"""The result cache: L1 a bounded in-process LRU with TTL, L2 Redis; and in-flight coalescing.

An L1 hit is confirmed with a Redis EXISTS, so a clear or a deleted job's eviction done by any
process takes effect everywhere at once; L1 saves the transfer and parsing of the document.

Key: sha256 of the image bytes, the result identity of the workers (the versions of every model,
the settings that change a result), the resolved options, and the scope: the API key that submitted it. A model
version change therefore misses naturally. Scoping per API key means one tenant never learns,
from ``cached: true`` or from the timing, that another tenant sent the same photo, and a
tenant's DELETE can remove every entry its job made. Entries expire after ``AURUM_CACHE_TTL``
(privacy: results are biometric derivatives). Deterministic failures (``NO_FACE``, a corrupt
image...) are cached too, as ``{"error": ...}`` documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

import redis
from cachetools import TTLCache

from aurum.config import Settings
from aurum.schemas import ScoreOptions
from . import keyspace
from .sealing import Sealer


# Settings that change a result without changing a model version: the detector's input, the
# landmark passes, and every quality threshold (they decide the reasons and whether a score is
# withheld). Part of the key, so changing one misses instead of serving stale results.
RESULT_SETTINGS = ("detector", "detector_size", "detector_first_size", "work_max_side", "mesh_passes", "mesh_placement",
                   "mirror_symmetric")


def result_identity(versions: dict[str, str], settings: Settings) -> dict[str, Any]:
    """What decides a result besides the image and the options: the model versions, the settings
    that change a result, and the features' version. Each worker child publishes its own with
    its heartbeat (service/heartbeats.py); the API keys the cache with the one its workers share."""
    from aurum.scoring.features import FEATURES_VERSION

    return {"models": versions, "features": FEATURES_VERSION,
            "settings": {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                         if f.name in RESULT_SETTINGS or f.name.startswith("q_")}}


def routed_identity(identity: dict[str, Any], route: dict[str, Any] | None) -> dict[str, Any]:
    """The identity of a job's result when its route chooses model versions (service/routing.py):
    results of different versions never share a cache entry. A shadow changes nothing returned."""
    models = (route or {}).get("models")
    return {**identity, "route": dict(sorted(models.items()))} if models else identity


def identity_digest(identity: dict[str, Any]) -> str:
    """A short name for an identity: the API sends it with a job whose cache keys it made, and a
    worker with another identity (a rolling upgrade) then neither reads nor writes those keys."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cache_key(image_sha256: str, identity: dict[str, Any], options: ScoreOptions, scope: str = "") -> str:
    """The cache key of an image's result; ``options`` resolved (:meth:`ScoreOptions.resolve`),
    ``scope`` the submitting API key's id ("" for jobs published directly, not through the API)."""
    material = json.dumps({"image": image_sha256, "identity": identity, "scope": scope,
                           "options": vars(options)}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


class ResultCache:
    def __init__(self, client: redis.Redis, sealer: Sealer, ttl: int, l1_size: int = 1024, l1_ttl: int = 300) -> None:
        self.redis = client
        self.sealer = sealer
        self.ttl = ttl
        self._l1: TTLCache = TTLCache(maxsize=l1_size, ttl=max(1, min(ttl, l1_ttl)))
        self._lock = threading.Lock()  # cachetools caches are not thread-safe (a worker's threads, the API's greenlets)
        self._release = client.register_script(_RELEASE)  # made once: a script's sha is computed here
        self._take_over = client.register_script(_TAKE_OVER)
        self._store_if = client.register_script(_STORE_IF)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._l1.get(key)
        if doc is not None:
            # An EXISTS (tiny) instead of GET + parse of a large document; and it honours a clear
            # or a job deletion done by any other process at once.
            if self.redis.exists(keyspace.cache(key)):
                return doc
            with self._lock:
                self._l1.pop(key, None)
            return None
        return self._read(key)

    def _read(self, key: str) -> dict[str, Any] | None:
        """The entry from Redis (L2), kept in L1 too."""
        raw = self.redis.get(keyspace.cache(key))
        if raw is None:
            return None
        doc = self.sealer.unseal_json(raw, keyspace.cache(key).encode())
        with self._lock:
            self._l1[key] = doc
        return doc

    def answer(self, key: str, sealed_record: Callable[[dict[str, Any]], tuple[str, bytes, int]]
               ) -> dict[str, Any] | None:
        """:meth:`get`, and on a hit the record of the job it answers stored too
        (``sealed_record(doc)``: its key, sealed value and TTL). An L1 hit is one script (the
        entry's EXISTS, then the record's SET): one round trip; an L2 hit reads, then writes."""
        with self._lock:
            doc = self._l1.get(key)
        if doc is None:
            doc = self._read(key)
            if doc is not None:
                name, blob, ttl = sealed_record(doc)
                self.redis.set(name, blob, ex=ttl)
            return doc
        name, blob, ttl = sealed_record(doc)
        if self._store_if(keys=[keyspace.cache(key), name], args=[blob, ttl]):
            return doc
        with self._lock:
            self._l1.pop(key, None)
        return None

    def put(self, key: str, doc: dict[str, Any]) -> None:
        name = keyspace.cache(key)
        self.redis.set(name, self.sealer.seal_json(doc, name.encode()), ex=self.ttl)
        with self._lock:
            self._l1[key] = doc

    def evict(self, *keys: str) -> None:
        """Forget results (a deleted job's), in Redis and in this process."""
        if keys:
            self.redis.delete(*map(keyspace.cache, keys))
        with self._lock:
            for key in keys:
                self._l1.pop(key, None)

    def clear(self) -> int:
        """Drop every cached result (L2 for everyone, L1 of this process); returns the count."""
        removed = 0
        for batch in _chunks(self.redis.scan_iter(keyspace.CACHE + "*", count=500), 500):
            removed += self.redis.delete(*batch)
        with self._lock:
            self._l1.clear()
        return removed

    # --- coalescing ---------------------------------------------------------------------------
    def claim(self, key: str, job_id: str, ttl: int) -> str | None:
        """Become the job computing ``key`` (returns None), or get the id of the one that is."""
        if self.redis.set(keyspace.inflight(key), job_id, nx=True, ex=ttl):
            return None
        return self.leader(key)

    def leader(self, key: str) -> str | None:
        """The id of the job computing ``key`` now, if any."""
        leader = self.redis.get(keyspace.inflight(key))
        return leader.decode() if leader else None

    def release(self, keys: list[str], job_id: str, pipe: redis.client.Pipeline | None = None) -> None:
        """Drop the claims on ``keys`` that ``job_id`` holds (never another job's); on ``pipe``
        when given (the caller executes it)."""
        if keys:
            self._release(keys=[keyspace.inflight(k) for k in keys], args=[job_id], client=pipe or self.redis)


    def take_over(self, keys: list[str], old: str, new: str, ttl: int) -> None:
        """Move the claims ``old`` holds on ``keys`` to ``new`` (a follower promoted in place of
        a deleted or cancelled leader), so that later identical uploads follow ``new``."""
        if keys:
            self._take_over(keys=[keyspace.inflight(k) for k in keys], args=[old, new, ttl])


# KEYS: a cache entry, a job record; ARGV: the record's sealed value and TTL. The record is
# stored only while the entry exists (cleared, or evicted by a DELETE elsewhere: a miss).
_STORE_IF = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"""


_TAKE_OVER = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('SET', key, ARGV[2], 'EX', ARGV[3]) end
end
return 0
"""
# Compare-and-delete: the claim may have expired and been taken by a newer job meanwhile.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
