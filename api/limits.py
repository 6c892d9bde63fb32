"""Per-key rate limits (Flask-Limiter on Redis): one budget per key across every /api/ endpoint
(a fixed window and a burst window: the key's own rate when it has one), and a separate budget
for images submitted in batches, declared on the batch view.

Configured in ``create_app`` (RATELIMIT_* settings)."""

from __future__ import annotations

from flask import Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter

from .auth import client_id


def _not_api() -> bool:
    """Health, metrics, docs, the page and CORS preflights spend no key's budget."""
    return not request.path.startswith("/api/") or request.method == "OPTIONS"


def key_rate() -> str:
    client = g.get("client")
    if client is not None and client.rate:
        return client.rate
    return current_app.extensions["aurum.settings"].rate_limit


def batch_image_rate() -> str:
    return current_app.extensions["aurum.settings"].batch_image_limit


def batch_image_count() -> int:
    """The cost of a batch request against the image budget: its number of images."""
    if request.is_json:
        body = request.get_json(silent=True)
        images = body.get("images") if isinstance(body, dict) else None
        return len(images) if isinstance(images, list) and images else 1
    return max(1, len(request.files.getlist("images")))


# The one budget a key spends on every /api/ request, whichever the endpoint.
limiter = Limiter(key_func=client_id, application_limits=[
    ApplicationLimit(key_rate, key_function=client_id, scope="key", exempt_when=_not_api)])


def standard_headers_only(response: Response) -> Response:
    """Retry-After belongs to 429 and 503 answers only (Flask-Limiter adds it to every one)."""
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def config(storage_uri: str, storage_options: dict) -> dict:
    """``storage_uri`` and ``storage_options``: :func:`service.connections.limiter_storage`."""
    return {"RATELIMIT_STORAGE_URI": storage_uri, "RATELIMIT_STRATEGY": "fixed-window",
            "RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_KEY_PREFIX": "aurum:limits",
            # Redis down: skip the limit rather than fail the request here; the request itself
            # then needs Redis and gets its clear 503.
            "RATELIMIT_SWALLOW_ERRORS": True,
            "RATELIMIT_STORAGE_OPTIONS": storage_options}
