"""Shapes of the API's own documents (jobs); results and errors come from ``aurum.schemas``."""

from marshmallow import Schema, fields

from aurum.schemas import ErrorBodySchema, ResultSchema


class JobAcceptedSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "queued"})
    status_url = fields.String(required=True)


class ProgressSchema(Schema):
    done = fields.Integer(required=True)
    total = fields.Integer(required=True)


class BatchResultSchema(Schema):
    total = fields.Integer(required=True)
    done = fields.Integer(required=True)
    items = fields.List(fields.Dict(), required=True,
                        metadata={"description": "Per image, in order: a Result or an {error: ...} object."})


class JobStatusSchema(Schema):
    job_id = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "single | batch"})
    status = fields.String(required=True, metadata={"description": "queued | running | succeeded | failed"})
    created_at = fields.Float(required=True)
    progress = fields.Nested(ProgressSchema)
    result = fields.Raw(metadata={"description": "Result (single) or BatchResult (batch)"})
    error = fields.Nested(ErrorBodySchema)


class ModelInfoSchema(Schema):
    name = fields.String()
    task = fields.String(allow_none=True)
    file = fields.String()
    licence = fields.String(allow_none=True)
    version = fields.String()
    sha256 = fields.String()
    provider = fields.String(allow_none=True)
    load_ms = fields.Float(allow_none=True)
    default = fields.Boolean(metadata={"description": "The manifest's default version of this name"})
    created = fields.Dict(allow_none=True, metadata={"description": "What made it: tool, code, data, time"})


class WorkerModelsSchema(Schema):
    hostname = fields.String()
    child = fields.Integer()
    pid = fields.Integer()
    device = fields.String()
    loaded_at = fields.Float()
    models = fields.List(fields.Nested(ModelInfoSchema))
    queues = fields.List(fields.String(), metadata={"description": "the queues this child's worker consumes"})
    done = fields.Integer(metadata={"description": "images this child has computed (the autoscaler's service rate)"})
    busy_s = fields.Float(metadata={"description": "seconds it spent computing them"})
    catalogue = fields.Dict(metadata={"description": "what it can serve: defaults (role -> name@version), names "
                                                     "(name -> its default version), versions (name@version -> task)"})


__all__ = ["JobAcceptedSchema", "JobStatusSchema", "BatchResultSchema", "WorkerModelsSchema",
           "ResultSchema"]
