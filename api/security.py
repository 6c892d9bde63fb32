"""Response headers every answer carries, and CORS from an allow-list."""

from __future__ import annotations

from flask import Flask, Response, request
from flask_cors import CORS

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI's page has an inline start-up script and inline styles.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'")


PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _csp() -> str:
    if request.path.startswith("/docs"):
        return DOCS_CSP
    if request.path == "/" or request.path.startswith("/static/"):
        return PAGE_CSP
    return API_CSP


def secure_headers(response: Response) -> Response:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    h.setdefault("Content-Security-Policy", _csp())
    if request.path.startswith("/api/"):
        h.setdefault("Cache-Control", "no-store")  # results are biometric derivatives
    return response


def register(app: Flask, origins: str) -> None:
    app.after_request(secure_headers)
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if allowed:
        CORS(app, resources={r"/api/*": {"origins": allowed}},
             allow_headers=["Content-Type", "X-API-Key", "Authorization"],
             expose_headers=["Location", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                             "X-RateLimit-Reset"], max_age=600)
