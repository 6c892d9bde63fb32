"""Keep biometric data and secrets out of error reports: the Sentry ``before_send`` scrubber.

Request bodies (they carry photos), credentials in headers, image/embedding/landmark fields and
any long base64-looking string or bytes are removed wherever they appear in an event, stack
frame variables included.
"""

from __future__ import annotations

import re
from typing import Any

REMOVED = "[removed]"
SENSITIVE_KEYS = {"image", "images", "image_base64", "data", "embedding", "landmarks", "x-api-key",
                  "authorization", "cookie", "set-cookie", "api_key", "token", "key"}
_BASE64ISH = re.compile(r"^(data:[\w/+.-]*;base64,)?[A-Za-z0-9+/=_-]{200,}$")


def scrub(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return REMOVED
    if isinstance(value, (bytes, bytearray, memoryview)):
        return REMOVED
    if isinstance(value, str):
        return REMOVED if len(value) > 2000 or _BASE64ISH.match(value) else value
    if isinstance(value, dict):
        return {k: REMOVED if str(k).lower() in SENSITIVE_KEYS else scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > 64 and all(isinstance(v, (int, float)) for v in value[:64]):
            return REMOVED  # an embedding or a landmark array
        return [scrub(v, depth + 1) for v in value]
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry ``before_send``: returns the event with sensitive content removed."""
    request = event.get("request")
    if isinstance(request, dict):
        if "data" in request:
            request["data"] = REMOVED
        if "cookies" in request:
            request["cookies"] = REMOVED
    return scrub(event)


def init_sentry(dsn: str, integrations: list, environment: str | None = None) -> bool:
    """Turn Sentry on when a DSN is configured; returns whether it did."""
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, integrations=integrations, before_send=scrub_event,
                    include_local_variables=False, max_request_body_size="never",
                    environment=environment, traces_sample_rate=0.0)
    return True
