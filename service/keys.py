"""API keys: random, shown once, stored only as SHA-256 hashes in Redis.

The keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed):
what is stored cannot be turned back into a key, and a lookup is one Redis read.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import keyspace

INDEX = keyspace.API_KEYS
TOKEN_PREFIX = "ak_"
ROLES = ("client", "admin")  # client: its own jobs; admin: keys, cache, dead letters, models (api/auth.py)


@dataclass(frozen=True)
class ApiKey:
    id: str              # sha256 of the key: what jobs and limits are keyed by
    name: str
    rate: str | None     # e.g. "600/minute;30/second"; None: the default
    created_at: float
    revoked: bool = False
    hint: str = ""       # the key's first characters, to tell keys apart in listings
    role: str = "client"  # keys made before roles existed are clients

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id[:16], "name": self.name, "rate": self.rate, "created_at": self.created_at,
                "revoked": self.revoked, "hint": self.hint, "role": self.role}


def check_rate(rate: str) -> None:
    """A rate-limit string as the limiter reads it ("600/minute;30/second"), or ValueError."""
    from limits import parse_many

    try:
        if not parse_many(rate):
            raise ValueError
    except ValueError:
        raise ValueError(f"not a rate limit: {rate!r} (for example \"600/minute;30/second\")") from None


def key_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def well_formed(token: str) -> bool:
    """Whether ``token`` could be a key at all (anything else is refused without a lookup)."""
    return token.startswith(TOKEN_PREFIX) and len(token) <= 100


class KeyStore:
    def __init__(self, client) -> None:  # a redis.Redis
        self.redis = client

    def create(self, name: str, rate: str | None = None, role: str = "client") -> tuple[str, ApiKey]:
        if not name or len(name) > 100:
            raise ValueError("a key needs a name of 1 to 100 characters")
        if role not in ROLES:
            raise ValueError(f"a key's role is one of {', '.join(ROLES)}, not {role!r}")
        if rate is not None:
            check_rate(rate)
        if any(k.name == name and not k.revoked for k in self.list()):
            raise ValueError(f"an active key named {name!r} exists; revoke it first or pick another name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=key_id(token), name=name, rate=rate, created_at=time.time(), hint=token[:7], role=role)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.api_key(key.id), json.dumps(key.__dict__))
            pipe.sadd(INDEX, key.id).sadd(keyspace.API_KEYS_ACTIVE, key.id).execute()
        return token, key

    def lookup(self, token: str) -> ApiKey | None:
        """The active key for ``token``, or None (unknown, malformed or revoked)."""
        if not well_formed(token):
            return None
        raw = self.redis.get(keyspace.api_key(key_id(token)))
        if raw is None:
            return None
        key = ApiKey(**json.loads(raw))
        return None if key.revoked else key

    def list(self) -> list[ApiKey]:
        ids = sorted(i.decode() if isinstance(i, bytes) else i for i in self.redis.smembers(INDEX))
        raws = self.redis.mget([keyspace.api_key(i) for i in ids]) if ids else []
        return sorted((ApiKey(**json.loads(r)) for r in raws if r), key=lambda k: k.created_at)

    def active_count(self) -> int:
        """How many keys are not revoked: one SCARD (an anonymous request asks it)."""
        count = self.redis.scard(keyspace.API_KEYS_ACTIVE)
        if count == 0 and self.redis.scard(INDEX):  # keys made before the active set existed
            active = [k.id for k in self.list() if not k.revoked]
            if active:
                self.redis.sadd(keyspace.API_KEYS_ACTIVE, *active)
            count = len(active)
        return count

    def revoke(self, name_or_id: str) -> list[ApiKey]:
        """Revoke the active keys whose name, id prefix or hint matches; returns them."""
        revoked = []
        for key in self.list():
            matches = name_or_id in (key.name, key.hint) or (len(name_or_id) >= 8 and key.id.startswith(name_or_id))
            if matches and not key.revoked:
                updated = ApiKey(**{**key.__dict__, "revoked": True})
                with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(keyspace.api_key(key.id), json.dumps(updated.__dict__))
                    pipe.srem(keyspace.API_KEYS_ACTIVE, key.id).execute()
                revoked.append(updated)
        return revoked
