"""The scoring endpoints: submit single and batch jobs, read, wait for and delete them."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify, request, url_for
from flask_smorest import Blueprint

from aurum import errors
from aurum.image import probe
from aurum.schemas import ErrorSchema, ResultSchema, load_options

from .. import uploads
from ..auth import client_id
from ..errors import status_for
from ..schemas import JobAcceptedSchema, JobStatusSchema, WorkerModelsSchema

blp = Blueprint("ml", __name__, url_prefix="/api/ml", description="Face scoring jobs")

OPTIONS_DOC = {  # the same constraints as aurum.schemas.ScoreOptionsSchema
    "max_faces": {"type": "integer", "minimum": 1, "maximum": 100},
    "min_face_size": {"type": "integer", "minimum": 0, "maximum": 10000},
    "detection_threshold": {"type": "number", "minimum": 0.05, "maximum": 0.99},
    "return_landmarks": {"type": "boolean"},
    "return_embedding": {"type": "boolean"},
    "quality_gate": {"type": "boolean"},
    "always_score": {"type": "boolean"},
}
assert set(OPTIONS_DOC) == set(uploads.OPTION_FIELDS)
WAIT_PARAM = {"in": "query", "name": "wait", "schema": {"type": "integer", "minimum": 0, "maximum": 30},
              "description": "Seconds to wait for the result; 200 with it if ready in time, else 202."}


def _jobs():
    return current_app.extensions["aurum.jobs"]


def _settings():
    return current_app.extensions["aurum.settings"]


def _wait_seconds(raw: dict[str, Any]) -> float:
    value = request.args.get("wait", raw.pop("wait", None))
    if value in (None, ""):
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise errors.InvalidOption("wait must be a number of seconds.", fields={"wait": ["Not a number."]}) from None
    if not 0 <= seconds <= _settings().max_wait:
        raise errors.InvalidOption(f"wait must be between 0 and {_settings().max_wait} seconds.",
                                   fields={"wait": ["Out of range."]})
    return seconds


def _accepted(job_id: str, record: dict[str, Any], wait: float):
    g.job_id = job_id
    g.route = record.get("route")  # the access log names the versions routed to (the result names them all)
    if wait > 0:
        doc = _jobs().wait(job_id, client_id(), wait, record)
        if doc["status"] == "succeeded":
            return jsonify(doc), 200
        if doc["status"] == "failed":
            err = doc["error"]
            return jsonify({"error": err, "job_id": job_id}), status_for(err["code"])
    body = {"job_id": job_id, "status": "queued", "status_url": url_for("ml.job", job_id=job_id)}
    return jsonify(body), 202, {"Location": body["status_url"]}


@blp.route("/score", methods=["POST"])
@blp.doc(parameters=[WAIT_PARAM], requestBody={"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}, **OPTIONS_DOC}}},
    "application/json": {"schema": {"type": "object", "required": ["image_base64"], "properties": {
        "image_base64": {"type": "string", "description": "base64 (a data: URL prefix is accepted)"},
        **OPTIONS_DOC}}}}})
@blp.alt_response(202, schema=JobAcceptedSchema, description="Accepted: poll status_url")
@blp.alt_response(200, schema=JobStatusSchema, description="Finished within ?wait=")
@blp.alt_response(400, schema=ErrorSchema, description="Bad request or image (stable error code)")
@blp.alt_response(413, schema=ErrorSchema, description="Image or request too large")
@blp.alt_response(415, schema=ErrorSchema, description="Unsupported image or media type")
@blp.alt_response(401, schema=ErrorSchema, description="Missing or invalid API key")
@blp.alt_response(429, schema=ErrorSchema, description="Rate limited (Retry-After)")
@blp.alt_response(503, schema=ErrorSchema, description="Queue unavailable")
def score():
    """Score one photo."""
    data, raw_options = uploads.read_single(request)
    wait = _wait_seconds(raw_options)
    options = load_options(raw_options)  # validate now: a bad option is the client's 400, not a failed job
    # size, format and header checks before the job is accepted (not for a cache hit: those bytes passed them)
    job_id, record = _jobs().submit([data], options, batch=False, owner=client_id(),
                                    validate=lambda: probe(data, _settings()))
    return _accepted(job_id, record, wait)


@blp.route("/score/batch", methods=["POST"])
@blp.doc(parameters=[WAIT_PARAM], requestBody={"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
        **OPTIONS_DOC}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "byte"}},
        **OPTIONS_DOC}}}}})
@blp.alt_response(202, schema=JobAcceptedSchema, description="Accepted: poll status_url for progress")
@blp.alt_response(400, schema=ErrorSchema, description="Bad request, or an image failed its checks")
@blp.alt_response(429, schema=ErrorSchema, description="Rate limited (Retry-After)")
def score_batch():
    """Score up to AURUM_MAX_BATCH photos with batched inference."""
    images, names, raw_options = uploads.read_batch(request, _settings().max_batch)
    wait = _wait_seconds(raw_options)
    options = load_options(raw_options)
    rejected: dict[int, errors.AurumError] = {}  # each bad image gets its own error; the others are scored
    for i, data in enumerate(images):
        try:
            probe(data, _settings())
        except errors.AurumError as exc:
            exc.details = {**exc.details, "index": i}
            rejected[i] = exc
    if len(rejected) == len(images):  # nothing to score: the request fails, with the first image's error
        rejected[0].message = f"Image 0: {rejected[0].message}"
        raise rejected[0]
    job_id, record = _jobs().submit(images, options, batch=True, owner=client_id(),
                                    rejected={i: exc.to_dict() for i, exc in rejected.items()}, names=names)
    return _accepted(job_id, record, wait)


@blp.route("/jobs/<job_id>", methods=["GET"], endpoint="job")
@blp.alt_response(200, schema=JobStatusSchema, description="queued | running | succeeded | failed")
@blp.alt_response(404, schema=ErrorSchema, description="Unknown, expired or deleted job")
def get_job(job_id: str):
    """A job's status, with its result or error once it has ended."""
    return jsonify(_jobs().status(job_id, client_id()))


@blp.route("/jobs/<job_id>", methods=["DELETE"])
@blp.alt_response(204, description="Deleted: result and stored images removed")
@blp.alt_response(404, schema=ErrorSchema)
def delete_job(job_id: str):
    """Delete a job's result and any stored image (biometric data on request)."""
    _jobs().delete(job_id, client_id())
    return "", 204


@blp.route("/models", methods=["GET"])
@blp.alt_response(200, schema=WorkerModelsSchema(many=True), description="Models loaded on each live worker child")
def models():
    """Per worker child: model names, versions, sha256, execution provider and load time."""
    return jsonify(current_app.extensions["aurum.health"].worker_models())


__all__ = ["blp", "ResultSchema"]
