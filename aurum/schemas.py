"""The public data shapes, as marshmallow schemas: scoring options, results and errors.

The CLI validates options with these and the API reuses them for request validation and its
OpenAPI document, so there is one definition of every field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from . import errors

if TYPE_CHECKING:
    from .config import Settings


@dataclass(frozen=True)
class ScoreOptions:
    max_faces: int | None = None          # None: the configured default
    min_face_size: int | None = None
    detection_threshold: float | None = None
    return_landmarks: bool = False
    return_embedding: bool = False
    quality_gate: bool = False
    always_score: bool = False            # give the score even when the face cannot be judged

    def resolve(self, settings: "Settings") -> "ScoreOptions":
        """The options as they are applied: each omitted one replaced by its configured default.
        Resolved once where a job is accepted; the pipeline, the fallback and the result cache's
        key all read the same values (resolving again changes nothing)."""
        return replace(
            self, max_faces=self.max_faces or settings.max_faces,
            min_face_size=settings.min_face_size if self.min_face_size is None else self.min_face_size,
            detection_threshold=self.detection_threshold or settings.detection_threshold)


class ScoreOptionsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    max_faces = fields.Integer(validate=validate.Range(1, 100), allow_none=True,
                               metadata={"description": "Keep at most this many faces, largest first."})
    min_face_size = fields.Integer(validate=validate.Range(0, 10000), allow_none=True,
                                   metadata={"description": "Ignore faces smaller than this (pixels)."})
    detection_threshold = fields.Float(validate=validate.Range(0.05, 0.99), allow_none=True,
                                       metadata={"description": "Detector confidence threshold."})
    return_landmarks = fields.Boolean(load_default=False, metadata={"description": "Include 468 landmarks per face."})
    return_embedding = fields.Boolean(load_default=False, metadata={"description": "Include the 128-d SFace embedding."})
    quality_gate = fields.Boolean(load_default=False,
                                  metadata={"description": "Fail with QUALITY_FAILED if the primary face fails quality."})
    always_score = fields.Boolean(load_default=False, metadata={
        "description": "Give each face's score value even when it cannot be judged (too blurry, eyes or mouth "
                       "occluded, pose past its limit); by default it is null and `withheld` says why."})

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ScoreOptions:
        return ScoreOptions(**data)


_OPTIONS = ScoreOptionsSchema()  # loading is thread-safe; building a schema costs ~0.2 ms a request


def load_options(raw: dict[str, Any] | None) -> ScoreOptions:
    """Validate option values; raise :class:`errors.InvalidOption` with per-field messages."""
    try:
        return _OPTIONS.load(raw or {})
    except ValidationError as exc:
        raise errors.InvalidOption("Invalid options: " + "; ".join(
            f"{k}: {' '.join(map(str, v))}" for k, v in exc.messages.items()), fields=exc.messages) from None


class Point(fields.List):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Float(), validate=validate.Length(equal=2), **kwargs)


class ImageInfoSchema(Schema):
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    format = fields.String(required=True)


class PoseSchema(Schema):
    yaw = fields.Float(required=True, metadata={"description": "Degrees; > 0: nose toward the image's right."})
    pitch = fields.Float(required=True, metadata={"description": "Degrees; > 0: looking up."})
    roll = fields.Float(required=True, metadata={"description": "Degrees; > 0: tilted counter-clockwise."})


class QualitySchema(Schema):
    sharpness = fields.Float(required=True, metadata={"description": "0-1 from the estimated blur: "
                                                      "exp(-(blur / 0.02)^2) (degraded results: from the "
                                                      "Laplacian variance)"})
    blur = fields.Float(allow_none=True, metadata={"description": "Estimated Gaussian blur sigma / face width"})
    brightness = fields.Float(required=True)
    contrast = fields.Float(required=True)
    dynamic_range = fields.Float(allow_none=True, metadata={"description": "Luminance entropy / 8 bits"})
    overexposed = fields.Float(allow_none=True, metadata={"description": "Share of face pixels clipped bright"})
    underexposed = fields.Float(allow_none=True, metadata={"description": "Share of face pixels crushed dark"})
    illumination_uniformity = fields.Float(allow_none=True, metadata={
        "description": "Darker / brighter half of the face (linear luminance), 0-1"})
    face_size_px = fields.Float(required=True)
    frontal = fields.Float(required=True, allow_none=True, metadata={"description": "null when degraded"})
    eye_openness = fields.Float(required=True, allow_none=True)
    eyes_visible = fields.Float(allow_none=True, metadata={"description": "0-1, the less visible eye"})
    mouth_visible = fields.Float(allow_none=True, metadata={"description": "0-1"})
    truncation = fields.Float(required=True, allow_none=True)
    face_presence = fields.Float(required=True, allow_none=True)
    passed = fields.Boolean(required=True)
    reasons = fields.List(fields.String(), required=True)


class ScoreSchema(Schema):
    value = fields.Float(required=True, allow_none=True, validate=validate.Range(0, 100), metadata={
        "description": "0-100; null when the face cannot be judged (see `withheld`) unless always_score was asked"})
    confidence = fields.Float(validate=validate.Range(0, 1), metadata={
        "description": "0-1: how far the value can be trusted (quality of the face and steadiness of the measure)"})
    withheld = fields.List(fields.String(), metadata={
        "description": "The quality reasons that make the face unjudgeable; empty when it is judged"})
    components = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    features = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    model = fields.String(required=True)
    degraded = fields.Boolean(load_default=False)


class FaceSchema(Schema):
    box = fields.List(fields.Float(), required=True, validate=validate.Length(equal=4),
                      metadata={"description": "[x, y, width, height] in original-image pixels."})
    confidence = fields.Float(required=True, allow_none=True, metadata={"description": "null when degraded"})
    keypoints = fields.Dict(keys=fields.String(), values=Point(), required=True)
    landmarks = fields.List(fields.List(fields.Float()), metadata={"description": "468 x [x, y, z]."})
    pose = fields.Nested(PoseSchema, required=True, allow_none=True, metadata={"description": "null when degraded"})
    quality = fields.Nested(QualitySchema, required=True)
    score = fields.Nested(ScoreSchema, required=True)
    embedding = fields.List(fields.Float(), metadata={"description": "128-d, L2-normalised."})


class ResultSchema(Schema):
    image = fields.Nested(ImageInfoSchema, required=True)
    faces = fields.List(fields.Nested(FaceSchema), required=True)
    primary_face = fields.Integer(allow_none=True, required=True)
    timings_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    models = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    degraded = fields.Boolean(required=True)
    degraded_reason = fields.String(allow_none=True)
    cached = fields.Boolean(metadata={"description": "true: answered from the result cache, no model ran"})
    filename = fields.String(metadata={"description": "a batch item's uploaded file name, when it had one"})


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
