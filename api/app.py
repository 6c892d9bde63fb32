"""The Flask application factory. ``python -m api.serve`` serves it (api/serve.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, send_from_directory
from flask_smorest import Api

from aurum import __version__, logs
from aurum.schemas import ErrorSchema

from service import config, connections, tracing
from service.config import ServiceSettings
from service.keys import KeyStore, check_rate
from service.privacy import init_sentry

from . import auth, errors, limits, observability, security, uploads
from .health import Health
from .jobs import Jobs
from .views import admin, health, ml


class AurumApi(Api):
    ERROR_SCHEMA = ErrorSchema  # document default error responses in our one error shape


def checked(settings: ServiceSettings | None = None) -> tuple[ServiceSettings, auth.TokenVerifier | None]:
    """``settings`` (default: this process's) once every value the API needs is usable, and its
    token verifier; ValueError with the variable's name otherwise. The server (api/serve.py) calls
    it before starting any worker, so a bad value is one line and an exit, not a boot loop."""
    settings = settings or config.current()
    for name, value in (("AURUM_RATE_LIMIT", settings.rate_limit),
                        ("AURUM_BATCH_IMAGE_LIMIT", settings.batch_image_limit)):
        try:
            check_rate(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    settings.sealer  # malformed keys fail here (no keys at all: /ready says NO_ENCRYPTION_KEY)
    return settings, auth.verifier(settings)  # an unreadable JWKS fails here, not at the first request


def create_app(settings: ServiceSettings | None = None) -> Flask:
    """The API over ``settings`` (default: this process's, :func:`service.config.current`),
    handed to every part of it; nothing in the API reads the environment itself."""
    try:
        settings, tokens = checked(settings)
    except ValueError as exc:  # one clear line at start, not a traceback
        print(f"aurum: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(3) from None  # a server worker that cannot start stops here
    logs.configure(settings.log_level)
    if settings.sentry_dsn:
        from sentry_sdk.integrations.flask import FlaskIntegration

        init_sentry(settings.sentry_dsn, [FlaskIntegration()], settings.sentry_environment)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.request_class = uploads.InMemoryRequest  # uploads never spooled to disk
    app.json = uploads.BoundedJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,  # werkzeug refuses larger bodies before reading
        API_TITLE="Aurum", API_VERSION=__version__, OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs", OPENAPI_SWAGGER_UI_URL="/docs/assets/",
    )
    client = connections.client(settings, timeout=1.0)
    app.extensions["aurum.settings"] = settings
    app.extensions["aurum.jobs"] = Jobs(client, settings)
    app.extensions["aurum.health"] = Health(client, settings)
    app.extensions["aurum.keys"] = KeyStore(client)
    app.extensions["aurum.tokens"] = tokens

    if tracing.setup(settings, "aurum-api"):  # off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
        tracing.instrument_app(app)
    observability.register(app, client, settings)  # first: the request id is set before anything logs
    app.before_request(auth.authenticate)  # before the limiter's check: limits are per key
    # The limiter keeps connections of its own, as Flask-Limiter did: on the jobs' pool, WAIT
    # refused submissions (REPLICATION_LAG) until ~14 s after a Sentinel failover instead of ~2 s
    # (tests/ha/test_sentinel_failover.py).
    limits.init_app(app, connections.client(settings, timeout=1.0))

    api = AurumApi(app, spec_kwargs={"extra_plugins": [auth.RolesPlugin()]})
    api.spec.components.schema("Result", schema=ml.ResultSchema)
    for name, scheme in auth.SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    api.register_blueprint(ml.blp)
    api.register_blueprint(admin.blp)
    api.register_blueprint(health.blp)
    errors.register(app)  # after Api: our one error shape replaces flask-smorest's
    security.register(app, settings.cors_origins)

    _serve_swagger_assets(app)

    @app.route("/")
    def demo_page():
        """The demo page: plain static files that use the public API."""
        return app.send_static_file("index.html")

    return app


def _serve_swagger_assets(app: Flask) -> None:
    """Swagger UI's files come from the swagger-ui-bundle package: no CDN needed."""
    try:
        import swagger_ui_bundle
    except ImportError:  # the docs page is optional; /openapi.json always works
        return
    folder = Path(swagger_ui_bundle.swagger_ui_path)

    @app.route("/docs/assets/<path:name>")
    def swagger_assets(name: str):
        return send_from_directory(folder, name)
