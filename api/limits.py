"""Per-key rate limits (Flask-Limiter on Redis): a fixed window and a burst window per key, a
key's own rate when it has one, and a separate budget for images submitted in batches.

Configured in ``create_app`` (RATELIMIT_* settings); the views declare their limits."""

from __future__ import annotations

from flask import current_app, g, request
from flask_limiter import Limiter

from .auth import client_id

limiter = Limiter(key_func=client_id)


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


def config(storage_uri: str) -> dict:
    return {"RATELIMIT_STORAGE_URI": storage_uri, "RATELIMIT_STRATEGY": "fixed-window",
            "RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_KEY_PREFIX": "aurum:limits",
            # Redis down: skip the limit rather than fail the request here; the request itself
            # then needs Redis and gets its clear 503.
            "RATELIMIT_SWALLOW_ERRORS": True,
            "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1}}
