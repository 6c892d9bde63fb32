"""Liveness and readiness probes."""

from flask import current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields

blp = Blueprint("health", __name__, description="Liveness and readiness")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok"})


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"description": "ready | not ready"})
    checks = fields.Dict(required=True, metadata={
        "description": "redis, encryption, workers, children_with_models, queues (consumed or not), key_mismatch"})
    reasons = fields.List(fields.String(), required=True, metadata={"description": (
        "REDIS_UNREACHABLE; NO_ENCRYPTION_KEY (this API cannot seal an upload); NO_WORKER (no pool "
        "child with its models loaded beat within 15 s); QUEUE_NOT_CONSUMED (score or fallback has "
        "no live consumer); KEY_MISMATCH (a child's encryption keys cannot open what this API seals, "
        "or the reverse)")})


@blp.route("/health", methods=["GET"])
@blp.alt_response(200, schema=HealthSchema, description="The web process answers")
def health():
    """Liveness: the web process answers. No I/O."""
    return jsonify({"status": "ok"})


@blp.route("/ready", methods=["GET"])
@blp.alt_response(200, schema=ReadySchema, description="Ready to score")
@blp.alt_response(503, schema=ReadySchema, description="Not ready, with reasons")
def ready():
    """Readiness: Redis reachable, this API able to seal, a worker child with its models loaded
    beat within 15 s, both queues consumed, keys matching (one Redis read; no broadcast)."""
    ok, body = current_app.extensions["aurum.health"].readiness()
    body["status"] = "ready" if ok else "not ready"
    return jsonify(body), 200 if ok else 503
