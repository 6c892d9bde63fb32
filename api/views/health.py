"""Liveness and readiness probes."""

from flask import current_app, jsonify
from flask_smorest import Blueprint

blp = Blueprint("health", __name__, description="Liveness and readiness")


@blp.route("/health", methods=["GET"])
def health():
    """Liveness: the web process answers. No I/O."""
    return jsonify({"status": "ok"})


@blp.route("/ready", methods=["GET"])
def ready():
    """Readiness: Redis reachable, a worker answers a ping, and it has loaded its models."""
    ok, body = current_app.extensions["aurum.health"].readiness()
    body["status"] = "ready" if ok else "not ready"
    return jsonify(body), 200 if ok else 503
