"""JSON Web Tokens as credentials: ``Authorization: Bearer <JWT>``, signed RS256 or ES256 by a key
of the configured JWKS (``AURUM_JWT_JWKS``), with the configured issuer and audience, unexpired
(within ``AURUM_JWT_LEEWAY`` of clock skew). The tenant is ``sub``; the roles are the ``roles``
claim. Verification is PyJWT's; nothing here parses a token by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHMS = ["RS256", "ES256"]  # never "none", never HMAC: a public key must not become a secret


@dataclass(frozen=True)
class Claims:
    subject: str
    issuer: str
    roles: tuple[str, ...]


class TokenRejected(Exception):
    """Why a token is refused: ``expired`` or ``invalid`` (with PyJWT's reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class TokenVerifier:
    def __init__(self, jwks_path: str, issuer: str, audience: str, leeway: int) -> None:
        try:
            self.keys = jwt.PyJWKSet.from_dict(json.loads(Path(jwks_path).read_text()))
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise ValueError(f"AURUM_JWT_JWKS: cannot read a JWKS from {jwks_path!r}: {exc}") from None
        self.issuer, self.audience, self.leeway = issuer, audience, leeway

    def _key(self, token: str):
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError as exc:
            raise TokenRejected("invalid", f"not a JWT: {exc}") from None
        keys = [k for k in self.keys.keys if kid is None or k.key_id == kid]
        if not keys:
            raise TokenRejected("invalid", f"no key with kid {kid!r} in the JWKS")
        return keys

    def verify(self, token: str) -> Claims:
        last: Exception | None = None
        for key in self._key(token):  # a token without kid is tried against each key
            try:
                claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.audience,
                                    issuer=self.issuer, leeway=self.leeway,
                                    options={"require": ["exp", "iat", "sub", "iss", "aud"]})
            except jwt.ExpiredSignatureError:
                raise TokenRejected("expired", "the token has expired") from None
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.InvalidTokenError as exc:
                raise TokenRejected("invalid", str(exc)) from None
            roles = claims.get("roles", [])
            if isinstance(roles, str):
                roles = roles.split()
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise TokenRejected("invalid", "the roles claim is not a list of names")
            if not isinstance(claims["sub"], str) or not claims["sub"]:
                raise TokenRejected("invalid", "the sub claim is empty")
            return Claims(subject=claims["sub"], issuer=claims["iss"], roles=tuple(roles))
        raise TokenRejected("invalid", f"signature verification failed ({last})")
