"""The one builder of result documents (:class:`aurum.schemas.ResultSchema`), for the pipeline
and the degraded fallback alike: coordinates scaled to the uploaded image, rounding, the score
withheld when the face cannot be judged (unless ``always_score``), landmarks and embeddings only
when asked for, the quality gate, timings and the degraded flags.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from . import errors
from .image import DecodedImage
from .schemas import ScoreOptions
from .scoring.trust import withheld


@dataclass
class FaceResult:
    """One face as measured, in the coordinates of the decoded image (``DecodedImage.rgb``)."""
    box: tuple[float, float, float, float]         # x0, y0, x1, y1
    keypoints: dict[str, Any]                      # name -> (x, y)
    quality: dict[str, Any]                        # components with "passed" and "reasons"
    score: float
    components: dict[str, float]
    features: dict[str, float]
    model: str                                     # "name@version"
    detection_confidence: float | None = None      # None: the fallback's detector gives none
    pose: dict[str, float] | None = None           # yaw, pitch, roll (degrees)
    score_confidence: float | None = None
    landmarks: np.ndarray | None = None            # (468, 3)
    embedding: np.ndarray | None = None


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time, in ms, to ``timings[name]`` (the document's ``timings_ms``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


def document(image: DecodedImage, faces: list[FaceResult], options: ScoreOptions, models: dict[str, str],
             timings: dict[str, float], degraded_reason: str | None = None) -> dict[str, Any]:
    """The result document; raises :class:`errors.QualityGateFailed` when the request asked
    for the gate and the primary (largest) face fails it."""
    if options.quality_gate and faces and not faces[0].quality["passed"]:
        reasons = faces[0].quality["reasons"]
        raise errors.QualityGateFailed(
            "The face does not meet the quality requirements: " + ", ".join(reasons) + ".", reasons=reasons)
    inv = 1.0 / image.scale
    degraded = degraded_reason is not None
    timings_ms = {k: round(v, 3) for k, v in timings.items()}
    timings_ms["total"] = round(sum(timings.values()), 3)
    return {
        "image": {"width": image.width, "height": image.height, "sha256": image.sha256, "format": image.format},
        "faces": [_face(f, inv, options, degraded) for f in faces],
        "primary_face": 0,
        "timings_ms": timings_ms,
        "models": models,
        "degraded": degraded,
        "degraded_reason": degraded_reason,
    }


def _face(face: FaceResult, inv: float, options: ScoreOptions, degraded: bool) -> dict[str, Any]:
    x0, y0, x1, y1 = (float(v) * inv for v in face.box)
    unjudgeable = withheld(face.quality["reasons"])
    score: dict[str, Any] = {"value": None if unjudgeable and not options.always_score else round(face.score, 2)}
    if face.score_confidence is not None:
        score["confidence"] = face.score_confidence
    score.update({"withheld": unjudgeable,
                  "components": {k: round(v, 4) for k, v in face.components.items()},
                  "features": {k: round(v, 5) for k, v in face.features.items()},
                  "model": face.model})
    if degraded:
        score["degraded"] = True
    out: dict[str, Any] = {
        "box": [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)],
        "confidence": None if face.detection_confidence is None else round(face.detection_confidence, 4),
        "keypoints": {k: [round(float(v[0]) * inv, 1), round(float(v[1]) * inv, 1)] for k, v in face.keypoints.items()},
        "pose": None if face.pose is None else {k: round(face.pose[k], 2) for k in ("yaw", "pitch", "roll")},
        "quality": face.quality,
        "score": score,
    }
    if options.return_landmarks and face.landmarks is not None:
        out["landmarks"] = [[round(float(x), 1), round(float(y), 1), round(float(z), 1)] for x, y, z in face.landmarks * inv]
    if options.return_embedding and face.embedding is not None:
        out["embedding"] = [round(float(v), 6) for v in face.embedding]
    return out
