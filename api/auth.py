"""Who is calling: an API key from ``X-API-Key`` or ``Authorization: Bearer``, or nobody when
``AURUM_AUTH=off`` (local development; never the default)."""

from __future__ import annotations

from flask import current_app, g, request

from aurum import errors
from service.keys import ApiKey, KeyStore

ANONYMOUS = ApiKey(id="anonymous", name="anonymous", rate=None, created_at=0.0)


class Unauthenticated(errors.AurumError):
    code = "UNAUTHENTICATED"
    kind = "unauthenticated"
    default_message = "Send an API key in the X-API-Key header (or Authorization: Bearer)."


class InvalidApiKey(Unauthenticated):
    code = "INVALID_API_KEY"
    default_message = "The API key is not valid (unknown or revoked)."


def presented_token() -> str | None:
    token = request.headers.get("X-API-Key")
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return token or None


def authenticate() -> None:
    """before_request for the scoring API: sets ``g.client``."""
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return  # a CORS preflight carries no key by design (Flask answers it, flask-cors adds the headers)
    if current_app.extensions["aurum.settings"].auth == "off":
        g.client = ANONYMOUS
        return
    store: KeyStore = current_app.extensions["aurum.keys"]
    token = presented_token()
    if token is None:
        if store.active_count() == 0:
            raise Unauthenticated("No API key exists yet: create one with `aurum keys create --name NAME` "
                                  "(or set AURUM_AUTH=off for local development).")
        raise Unauthenticated()
    key = store.lookup(token)
    if key is None:
        raise InvalidApiKey()
    g.client = key


def client_id() -> str:
    """The rate-limit and ownership key of the current request."""
    client = g.get("client")
    return client.id if client is not None else (request.remote_addr or "unknown")
