"""The admin API (role ``admin``, api/auth.py): API keys, the result cache, dead letters, model
status and any tenant's job metadata: what otherwise needs the CLI and Redis. Never an image,
nor a result computed from one."""

from __future__ import annotations

import re

from flask import current_app, g, jsonify, request
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from aurum import errors
from aurum.schemas import ErrorSchema
from service import keyspace, lifecycle, routing
from service.keys import ROLES

from ..errors import GateFailed, InvalidRoute

from ..schemas import WorkerModelsSchema

blp = Blueprint("admin", __name__, url_prefix="/api/admin",
                description="Operations (admin role): keys, cache, dead letters, models and their routing, "
                            "job metadata")
DEAD_LETTERS_LISTED = 100


class KeyNotFound(errors.AurumError):
    code = "KEY_NOT_FOUND"
    kind = "not_found"
    default_message = "No active key has that name, hint or id."


class NewKeySchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    rate = fields.String(load_default=None, metadata={"description": 'Its own limits, e.g. "600/minute;30/second"'})
    role = fields.String(load_default="client", validate=validate.OneOf(ROLES))


class KeySchema(Schema):
    id = fields.String(metadata={"description": "The first 16 hex digits of the key's SHA-256"})
    name = fields.String()
    rate = fields.String(allow_none=True)
    role = fields.String()
    created_at = fields.Float()
    revoked = fields.Boolean()
    hint = fields.String()


class CreatedKeySchema(Schema):
    token = fields.String(metadata={"description": "The key itself: shown this once, stored only as a hash"})
    key = fields.Nested(KeySchema)


class JobMetadataSchema(Schema):
    job_id = fields.String()
    kind = fields.String()
    status = fields.String()
    created_at = fields.Float()
    owner = fields.String(metadata={"description": "The first 16 hex digits of the owner's id"})
    images = fields.Integer()
    images_stored = fields.Integer()


def _jobs():
    return current_app.extensions["aurum.jobs"]


def _keys():
    return current_app.extensions["aurum.keys"]


@blp.route("/keys", methods=["GET"])
@blp.alt_response(200, schema=KeySchema(many=True), description="Every key, active and revoked")
def list_keys():
    """List API keys (never the keys themselves: their names, hints and roles)."""
    return jsonify([k.to_dict() for k in _keys().list()])


@blp.route("/keys", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "rate": {"type": "string", "description": 'Its own limits, e.g. "600/minute;30/second"'},
        "role": {"type": "string", "enum": list(ROLES), "default": "client"}}}}}})
@blp.alt_response(201, schema=CreatedKeySchema, description="Created; the token is not shown again")
@blp.alt_response(400, schema=ErrorSchema)
def create_key():
    """Create an API key with a role and optional limits."""
    raw = request.get_json(silent=True)
    if not isinstance(raw, dict):
        raise errors.InvalidInput("Send a JSON object: {\"name\": ..., \"role\": ..., \"rate\": ...}.")
    try:
        body = NewKeySchema().load(raw)
    except ValidationError as exc:
        raise errors.InvalidOption("Invalid key fields.", fields=exc.normalized_messages()) from None
    try:  # the store checks the rate, as it does for `aurum keys create`
        token, key = _keys().create(body["name"], body["rate"], body["role"])
    except ValueError as exc:
        raise errors.InvalidInput(str(exc)) from None
    return jsonify({"token": token, "key": key.to_dict()}), 201


@blp.route("/keys/<name>", methods=["DELETE"])
@blp.alt_response(200, schema=KeySchema(many=True), description="The keys revoked")
@blp.alt_response(404, schema=ErrorSchema)
def revoke_key(name: str):
    """Revoke the active keys with this name, hint or id prefix (8+ hex digits)."""
    revoked = _keys().revoke(name)
    if not revoked:
        raise KeyNotFound()
    return jsonify([k.to_dict() for k in revoked])


@blp.route("/cache", methods=["DELETE"])
@blp.alt_response(200, description="How many cached results were removed")
def clear_cache():
    """Remove every cached result (after a model change, or on request)."""
    cache = _jobs().cache
    return jsonify({"removed": cache.clear() if cache is not None else 0})


@blp.route("/dead-letters", methods=["GET"])
@blp.alt_response(200, schema=JobMetadataSchema(many=True), description="Newest first")
def dead_letters():
    """Jobs set aside as POISON_MESSAGE (their message killed a worker too often), newest first,
    with what is left of their metadata (a record expires with the result TTL)."""
    jobs = _jobs()
    ids = [i.decode() for i in jobs.redis.lrange(keyspace.DEAD_LETTERS, 0, DEAD_LETTERS_LISTED - 1)]
    out = []
    for job_id in ids:
        try:
            out.append(jobs.metadata(job_id))
        except errors.AurumError:  # the record expired: the id is all there is
            out.append({"job_id": job_id, "status": "expired"})
    return jsonify(out)


@blp.route("/dead-letters/<job_id>/requeue", methods=["POST"])
@blp.alt_response(202, description="Published again: its owner sees it queued")
@blp.alt_response(404, schema=ErrorSchema)
@blp.alt_response(409, schema=ErrorSchema, description="Not a dead letter")
@blp.alt_response(410, schema=ErrorSchema, description="Its images have expired")
def requeue_dead_letter(job_id: str):
    """Run a dead letter again, with the images it kept (until AURUM_IMAGE_TTL)."""
    return jsonify(_jobs().requeue(job_id)), 202


@blp.route("/jobs/<job_id>", methods=["GET"])
@blp.alt_response(200, schema=JobMetadataSchema, description="Any tenant's job: metadata only")
@blp.alt_response(404, schema=ErrorSchema)
def job_metadata(job_id: str):
    """Any tenant's job: kind, status, owner, times, error code; never images or results."""
    return jsonify(_jobs().metadata(job_id))


@blp.route("/models", methods=["GET"])
@blp.alt_response(200, schema=WorkerModelsSchema(many=True), description="Models loaded on each live worker child")
def models():
    """Per worker child: model names, versions, sha256, execution provider and load time."""
    return jsonify(current_app.extensions["aurum.health"].worker_models())


# --- model lifecycle (service/lifecycle.py; the same operations as `aurum models ...`) ----------
class RouteSchema(Schema):
    candidate = fields.String(load_default=None, metadata={"description": "name@version; none with mode off"})
    mode = fields.String(load_default="shadow", validate=validate.OneOf(routing.MODES))
    share = fields.Float(load_default=0.0, validate=validate.Range(0, 1), metadata={"description": "0-1"})
    sticky = fields.String(load_default="key", validate=validate.OneOf(routing.STICKY))
    keys = fields.List(fields.String(), load_default=None, metadata={"description": "key ids given the candidate"})
    force = fields.Boolean(load_default=False, metadata={"description": "past a failing comparison report"})


class PromoteSchema(Schema):
    model = fields.String(required=True, metadata={"description": "name@version"})
    force = fields.Boolean(load_default=False)


class RollbackSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(routing.ROLES))


def _body(schema: Schema) -> dict:
    raw = request.get_json(silent=True)
    if not isinstance(raw, dict):
        raise errors.InvalidInput("Send a JSON object.")
    try:
        return schema.load(raw)
    except ValidationError as exc:
        raise errors.InvalidOption("Invalid fields.", fields=exc.normalized_messages()) from None


def _lifecycle(operation, *args, **kwargs):
    """Run a lifecycle operation; its refusals as typed errors (409), a gate with its report."""
    try:
        return operation(*args, **kwargs)
    except lifecycle.GateFailed as exc:
        raise GateFailed(str(exc), report=exc.report) from None
    except routing.RoutingError as exc:
        raise InvalidRoute(str(exc)) from None


def _who() -> str:
    client = g.get("client")
    return f"admin:{getattr(client, 'name', None) or getattr(client, 'id', '')[:16]}"


def _settings():
    return _jobs().settings


@blp.route("/models/routing", methods=["GET"])
@blp.alt_response(200, description="The routing policy: per role its live version, candidate and mode")
def routing_status():
    """The routing policy (revision, who changed it last) and each role's live version."""
    return jsonify(lifecycle.status(_jobs().redis, _settings()))


@blp.route("/models/routing/<role>", methods=["PUT"])
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
    "candidate": {"type": "string"}, "mode": {"type": "string", "enum": list(routing.MODES)},
    "share": {"type": "number", "minimum": 0, "maximum": 1}, "sticky": {"type": "string", "enum": list(routing.STICKY)},
    "keys": {"type": "array", "items": {"type": "string"}}, "force": {"type": "boolean"}}}}}})
@blp.alt_response(200, description="The new policy (in effect within AURUM_ROUTING_REFRESH)")
@blp.alt_response(409, schema=ErrorSchema, description="INVALID_ROUTE, or GATE_FAILED with the report")
def set_route(role: str):
    """Route a share of jobs (canary), of keys or images (ab), chosen keys, or a shadow to a candidate."""
    body = _body(RouteSchema())
    policy = _lifecycle(lifecycle.route, _jobs().redis, _settings(), _who(), role, body["candidate"], body["mode"],
                        body["share"], body["sticky"], body["keys"], body["force"])
    return jsonify(policy.to_dict())


@blp.route("/models/promote", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ['model'], "properties": {"model": {"type": "string"}, "force": {"type": "boolean"}}}}}})
@blp.alt_response(200, description="The new policy")
@blp.alt_response(409, schema=ErrorSchema)
def promote():
    """Make a version live for every job of its role (gated by the comparison report)."""
    body = _body(PromoteSchema())
    return jsonify(_lifecycle(lifecycle.promote, _jobs().redis, _settings(), _who(), body["model"],
                              body["force"]).to_dict())


@blp.route("/models/rollback", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ['role'], "properties": {"role": {"type": "string", "enum": list(routing.ROLES)}}}}}})
@blp.alt_response(200, description="The new policy")
@blp.alt_response(409, schema=ErrorSchema)
def rollback():
    """Make the version live before the last promotion live again."""
    body = _body(RollbackSchema())
    return jsonify(_lifecycle(lifecycle.rollback, _jobs().redis, _who(), body["role"]).to_dict())


@blp.route("/models/compare/<role>", methods=["GET"])
@blp.alt_response(200, description="Shadow pairs: mean and max difference, rank correlation, times, gates")
@blp.alt_response(409, schema=ErrorSchema)
def compare(role: str):
    """The comparison report of a role's candidate (or ?candidate=name@version) against the live version."""
    jobs = _jobs()
    catalogue = _lifecycle(lifecycle.Catalogue.of, jobs.redis, _settings())
    return jsonify(_lifecycle(lifecycle.compare, jobs.redis, catalogue, _settings(), role, request.args.get("candidate")))


@blp.route("/models/drift", methods=["GET"])
@blp.alt_response(200, description="Per tracked version: PSI and p-value per measure against its reference")
def drift():
    """Drift of every live version and candidate (or ?model=name@version) against its reference."""
    return jsonify(_lifecycle(lifecycle.drifts, _jobs().redis, _settings(), request.args.get("model") or None))


@blp.route("/models/audit", methods=["GET"])
@blp.alt_response(200, description="The newest routing changes: who, what, when, before and after")
def audit():
    """Every change of the routing policy, newest first."""
    count = request.args.get("count", "50")
    if not re.fullmatch(r"[0-9]{1,4}", count) or not 0 < int(count) <= 1000:
        raise errors.InvalidOption("count: a whole number from 1 to 1000.")
    return jsonify(routing.audit(_jobs().redis, int(count)))
