"""Encryption at rest for what Aurum keeps in Redis: AES-256-GCM with keys from configuration.

Image bytes, results (landmarks, embeddings), cached results and job records are sealed before
they reach Redis, so neither Redis's memory dumps nor its AOF/RDB files hold biometric data in
the clear, even for keys that were deleted a moment later. The keys never enter Redis.

``AURUM_ENCRYPTION_KEYS`` = ``id1:base64key1,id2:base64key2``: the first key seals, every key
unseals. Rotation: put a new key first, keep the old one until everything it sealed has expired
(the longest of AURUM_RESULT_TTL and AURUM_CACHE_TTL), then remove it. ``aurum keygen``
prints a new key. ``off`` stores plaintext (local development only; a warning says so).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aurum import errors

log = logging.getLogger(__name__)
MAGIC = b"AUR\x01"
OFF = "off"


class EncryptionNotConfigured(errors.AurumError):
    code = "ENCRYPTION_NOT_CONFIGURED"
    kind = "unavailable"
    default_message = ("AURUM_ENCRYPTION_KEYS is not set: give one or more 'id:base64key' entries "
                       "(aurum keygen), or 'off' for local development.")


class SealingError(errors.AurumError):
    code = "ENCRYPTION_ERROR"
    kind = "internal"
    default_message = "Stored data could not be decrypted (unknown key or tampered data)."


def new_key(key_id: str | None = None) -> str:
    """A fresh ``id:base64key`` entry for AURUM_ENCRYPTION_KEYS."""
    return f"{key_id or secrets.token_hex(4)}:{base64.urlsafe_b64encode(AESGCM.generate_key(256)).decode()}"


@dataclass(frozen=True)
class Sealer:
    keys: tuple[tuple[bytes, AESGCM], ...]  # (id, cipher); the first one seals
    fingerprints: tuple[str, ...] = ()     # "id:hash" per key, same order: tells two processes' keys apart
    configured: bool = True                # False: no keys given; every use raises EncryptionNotConfigured

    def _check(self) -> None:
        if not self.configured:
            raise EncryptionNotConfigured()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def identity(self) -> list[str]:
        """What two processes compare to know each opens what the other seals: the keys'
        fingerprints (sealing key first), or ["off"]."""
        self._check()
        return list(self.fingerprints) if self.keys else ["off"]

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        """``context`` (e.g. the Redis key) is authenticated: a blob moved elsewhere won't open."""
        if not self.keys:
            self._check()
            return data
        key_id, cipher = self.keys[0]
        nonce = os.urandom(12)
        return MAGIC + bytes([len(key_id)]) + key_id + nonce + cipher.encrypt(nonce, data, context)

    def seal_json(self, obj: object, context: bytes) -> bytes:
        return self.seal(json.dumps(obj).encode(), context)

    def unseal_json(self, blob: bytes, context: bytes) -> object:
        return json.loads(self.unseal(blob, context))

    def unseal(self, blob: bytes, context: bytes = b"") -> bytes:
        self._check()
        if not blob.startswith(MAGIC):
            if self.keys:
                raise SealingError("Stored data is not sealed although encryption is on.")
            return blob
        n = blob[len(MAGIC)]
        start = len(MAGIC) + 1
        key_id, nonce, body = blob[start:start + n], blob[start + n:start + n + 12], blob[start + n + 12:]
        for kid, cipher in self.keys:
            if kid == key_id:
                try:
                    return cipher.decrypt(nonce, body, context)
                except Exception:
                    raise SealingError() from None
        raise SealingError(f"Stored data was sealed with key {key_id.decode(errors='replace')!r}, "
                           "which is not configured.")


def parse_keys(spec: str) -> Sealer:
    spec = spec.strip()
    if spec.lower() == OFF:
        return Sealer(())
    if not spec:
        raise EncryptionNotConfigured()
    keys, prints = [], []
    for entry in spec.split(","):
        key_id, _, b64 = entry.strip().partition(":")
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)) if b64 else b""
        if not key_id or len(key_id) > 32 or len(raw) != 32:
            raise ValueError(f"AURUM_ENCRYPTION_KEYS: {entry.strip()[:12]}... is not 'id:base64 of 32 bytes'")
        keys.append((key_id.encode(), AESGCM(raw)))
        prints.append(f"{key_id}:{hashlib.sha256(b'aurum key fingerprint' + raw).hexdigest()[:16]}")
    return Sealer(tuple(keys), tuple(prints))


@lru_cache(maxsize=8)
def sealer(spec: str) -> Sealer:
    """The sealer for an ``AURUM_ENCRYPTION_KEYS`` value (parsed once per value). Without a
    value it raises EncryptionNotConfigured when used, not when made: readiness reports it."""
    try:
        result = parse_keys(spec)
    except EncryptionNotConfigured:
        return Sealer((), configured=False)
    if not result.enabled:
        log.warning("AURUM_ENCRYPTION_KEYS=off: images and results are stored in Redis unencrypted")
    return result
