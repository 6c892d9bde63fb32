"""Who is calling, and may they: an API key (``X-API-Key``, or ``Authorization: Bearer ak_...``)
or a JWT (``Authorization: Bearer <JWT>``, when ``AURUM_JWT_JWKS`` is set), each with a role;
nobody when ``AURUM_AUTH=off`` (local development; never the default).

Roles: ``client`` submits, reads and deletes its own jobs; ``admin`` also reaches ``/api/admin``
(keys, cache, dead letters, models, any tenant's job metadata, never images). Missing, unknown,
expired or wrongly signed credentials are 401; valid ones without the role are 403.
:data:`REQUIRED_ROLES` is the one table: enforced here, written into the OpenAPI document."""

from __future__ import annotations

import hashlib

from apispec import BasePlugin
from flask import current_app, g, request

from aurum import errors
from service.keys import ApiKey, KeyStore, TOKEN_PREFIX, key_id, well_formed

from .tokens import TokenRejected, TokenVerifier

ANONYMOUS = ApiKey(id="anonymous", name="anonymous", rate=None, created_at=0.0)
RANK = {"client": 1, "admin": 2}  # an admin may do what a client may
REQUIRED_ROLES = (("/api/admin/", "admin"), ("/api/", "client"))  # first match; other paths are open


class Unauthenticated(errors.AurumError):
    code = "UNAUTHENTICATED"
    kind = "unauthenticated"
    default_message = "Send an API key in the X-API-Key header (or Authorization: Bearer)."


class InvalidApiKey(Unauthenticated):
    code = "INVALID_API_KEY"
    default_message = "The API key is not valid (unknown or revoked)."


class InvalidToken(Unauthenticated):
    code = "INVALID_TOKEN"
    default_message = "The bearer token is not valid here (signature, issuer, audience or claims)."


class TokenExpired(Unauthenticated):
    code = "TOKEN_EXPIRED"
    default_message = "The bearer token has expired; get a new one."


class Forbidden(errors.AurumError):
    code = "FORBIDDEN"
    kind = "forbidden"
    default_message = "Your credentials do not carry the role this endpoint needs."


def required_role(path: str) -> str | None:
    for prefix, role in REQUIRED_ROLES:
        if path.startswith(prefix):
            return role
    return None


def presented_credentials() -> tuple[str, str] | None:
    """("key", token) or ("jwt", token) from the request's headers, or None."""
    token = request.headers.get("X-API-Key")
    if token:
        return "key", token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return ("key" if value.startswith(TOKEN_PREFIX) or value.count(".") != 2 else "jwt"), value


def verifier(settings) -> TokenVerifier | None:
    """The JWT verifier of ``settings`` (the app factory makes it once), or None without a JWKS."""
    if not settings.jwt_jwks:
        return None
    return TokenVerifier(settings.jwt_jwks, settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway)


def _verifier() -> TokenVerifier | None:
    return current_app.extensions["aurum.tokens"]


def _from_token(token: str) -> ApiKey:
    tokens = _verifier()
    if tokens is None:
        raise InvalidToken("Bearer tokens (JWT) are not enabled here; send an API key.")
    try:
        claims = tokens.verify(token)
    except TokenRejected as exc:
        raise (TokenExpired() if exc.reason == "expired" else InvalidToken(f"The bearer token is not valid: {exc}")) \
            from None
    role = max((r for r in claims.roles if r in RANK), key=RANK.get, default=None)
    if role is None:
        raise Forbidden(f"The token's roles ({', '.join(claims.roles) or 'none'}) include neither client nor admin.")
    # the tenant: jobs and limits are keyed by it, as by an API key's hash
    tenant = hashlib.sha256(f"jwt\0{claims.issuer}\0{claims.subject}".encode()).hexdigest()
    return ApiKey(id=tenant, name=claims.subject, rate=None, created_at=0.0, role=role)


def authenticate() -> None:
    """before_request: sets ``g.client`` and checks its role for the path. An API key is looked
    up by the rate limiter's check, in the round trip that counts the request (api/limits.py):
    this leaves its id in ``g.key_id``, and the limiter sets ``g.client`` and calls
    :func:`authorize`."""
    needed = required_role(request.path)
    if needed is None or request.method == "OPTIONS":
        return  # a CORS preflight carries no credentials by design (flask-cors answers it)
    if current_app.extensions["aurum.settings"].auth == "off":
        g.client = ANONYMOUS
    else:
        store: KeyStore = current_app.extensions["aurum.keys"]
        presented = presented_credentials()
        if presented is None:
            if store.active_count() == 0 and _verifier() is None:
                raise Unauthenticated("No API key exists yet: create one with `aurum keys create --name NAME` "
                                      "(or set AURUM_AUTH=off for local development).")
            raise Unauthenticated()
        kind, token = presented
        if kind == "jwt":
            g.client = _from_token(token)
        elif not well_formed(token):
            raise InvalidApiKey()
        else:
            g.key_id = key_id(token)
            return
    authorize()


def authorize() -> None:
    """403 unless ``g.client``'s role reaches the one the path needs."""
    needed = required_role(request.path)
    if needed is not None and RANK.get(g.client.role, 0) < RANK[needed]:
        raise Forbidden(f"This endpoint needs the {needed} role; these credentials carry {g.client.role}.")


def client_id() -> str:
    """The rate-limit and ownership key of the current request."""
    client = g.get("client")
    return client.id if client is not None else (request.remote_addr or "unknown")


SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "API key (ak_...) or JWT (RS256/ES256)"},
}


class RolesPlugin(BasePlugin):
    """apispec: each operation's credentials and role in the OpenAPI document
    (``x-required-role``, ``security``, its 401 and 403), from :data:`REQUIRED_ROLES`."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        role = required_role(path or "")
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for operation in (operations or {}).values():
            if role is None:
                operation["security"] = []
                continue
            operation["x-required-role"] = role
            operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {"description": "Missing, invalid or expired credentials", **error})
            responses.setdefault("403", {"description": f"Credentials without the {role} role", **error})
