"""Liveness and readiness probes."""

from flask import current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields

blp = Blueprint("health", __name__, description="Liveness and readiness")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok"})


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"description": "ready | not ready"})
    checks = fields.Dict(required=True, metadata={"description": "redis, workers, children_with_models"})
    reasons = fields.List(fields.String(), required=True,
                          metadata={"description": "REDIS_UNREACHABLE, NO_WORKER, MODELS_NOT_LOADED"})


@blp.route("/health", methods=["GET"])
@blp.alt_response(200, schema=HealthSchema, description="The web process answers")
def health():
    """Liveness: the web process answers. No I/O."""
    return jsonify({"status": "ok"})


@blp.route("/ready", methods=["GET"])
@blp.alt_response(200, schema=ReadySchema, description="Ready to score")
@blp.alt_response(503, schema=ReadySchema, description="Not ready, with reasons")
def ready():
    """Readiness: Redis reachable, a worker answers a ping, and it has loaded its models."""
    ok, body = current_app.extensions["aurum.health"].readiness()
    body["status"] = "ready" if ok else "not ready"
    return jsonify(body), 200 if ok else 503
