"""Uploaded image bytes live in Redis under a random key with a short TTL, never in broker
messages: the API puts them, the task carries only the key, the worker deletes them when done.
They are sealed (AES-GCM, :mod:`service.sealing`) so that Redis's AOF never holds them in clear."""

from __future__ import annotations

import secrets

import redis

from .sealing import Sealer
from . import keyspace


class ImageExpired(LookupError):
    """The image key is gone: its TTL passed or the job was deleted."""


class ImageStore:
    def __init__(self, client: redis.Redis, sealer: Sealer, ttl: int = 600) -> None:
        self.redis = client
        self.sealer = sealer
        self.ttl = ttl

    def put(self, data: bytes, pipe: redis.client.Pipeline | None = None) -> str:
        """Store one image under a new random key; on ``pipe`` when given (the caller executes it)."""
        key = keyspace.IMAGE + secrets.token_hex(16)
        (pipe or self.redis).set(key, self.sealer.seal(data, key.encode()), ex=self.ttl)
        return key

    def get(self, key: str) -> bytes:
        return self.open(key, self.redis.get(key))

    def open(self, key: str, blob: bytes | None) -> bytes:
        """The image in ``blob``, as read from ``key`` (None: it was gone)."""
        if blob is None:
            raise ImageExpired(key)
        return self.sealer.unseal(blob, key.encode())

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Several images in one round trip; None where a key is gone."""
        if not keys:
            return []
        blobs = self.redis.mget(keys)
        return [None if blob is None else self.sealer.unseal(blob, key.encode()) for key, blob in zip(keys, blobs)]

    def delete(self, *keys: str, pipe: redis.client.Pipeline | None = None) -> None:
        if keys:
            (pipe or self.redis).delete(*keys)
