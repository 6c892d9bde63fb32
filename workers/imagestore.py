"""Uploaded image bytes live in Redis under a random key with a short TTL, never in broker
messages: the API puts them, the task carries only the key, the worker deletes them when done."""

from __future__ import annotations

import secrets

import redis

PREFIX = "aurum:image:"


class ImageExpired(LookupError):
    """The image key is gone: its TTL passed or the job was deleted."""


class ImageStore:
    def __init__(self, client: redis.Redis, ttl: int = 600) -> None:
        self.redis = client
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "ImageStore":
        return cls(redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0), **kwargs)

    def put(self, data: bytes) -> str:
        key = PREFIX + secrets.token_hex(16)
        self.redis.set(key, data, ex=self.ttl)
        return key

    def get(self, key: str) -> bytes:
        data = self.redis.get(key)
        if data is None:
            raise ImageExpired(key)
        return data

    def delete(self, *keys: str) -> None:
        if keys:
            self.redis.delete(*keys)
