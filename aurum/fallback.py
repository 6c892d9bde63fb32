"""The degraded path: a simpler real method for when the ONNX models cannot be used.

OpenCV's Haar cascades (shipped inside opencv-python-headless, independent of ``models/`` and of
ONNX Runtime) find frontal faces and eyes; the score uses two measures taken on the eye-levelled,
128 px grey face crop: left-right image symmetry and skin-texture unevenness, combined like the
geometric scorer (``100 * sum w * exp(-x / s)``). No landmarks, no pose, no embedding. Every
result says ``degraded: true`` and why.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from . import errors
from .config import Settings
from .image import decode_image
from .schemas import ScoreOptions
from .results import FaceResult, document, timed

NAME, VERSION = "fallback_haar", "1.0.0"
SIZE = 128
SCALES = {"image_symmetry": 0.25, "texture": 0.12}
WEIGHTS = {"image_symmetry": 0.6, "texture": 0.4}
SHARPNESS_SCALE = 60.0


@lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise errors.ModelUnavailable(f"OpenCV cascade {name} is missing.")
    return cascade


def _eyes(grey: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, list[float]]:
    x, y, w, h = box
    upper = grey[y:y + int(h * 0.6), x:x + w]
    found = _cascade("haarcascade_eye.xml").detectMultiScale(upper, 1.1, 5, minSize=(max(8, w // 10),) * 2)
    if len(found) < 2:
        return {}
    two = sorted(found, key=lambda e: -e[2] * e[3])[:2]
    centres = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in two))
    return {"right_eye": [float(v) for v in centres[0]], "left_eye": [float(v) for v in centres[1]]}


def _crop(grey: np.ndarray, box, eyes) -> np.ndarray:
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    angle = 0.0
    if eyes:
        (rx, ry), (lx, ly) = eyes["right_eye"], eyes["left_eye"]
        angle = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
    m = cv2.getRotationMatrix2D((cx, cy), angle, SIZE / max(w, h))
    m[:, 2] += (SIZE / 2 - cx, SIZE / 2 - cy)
    return cv2.warpAffine(grey, m, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def measure(crop: np.ndarray) -> dict[str, float]:
    face = crop[SIZE // 8: SIZE - SIZE // 8, SIZE // 8: SIZE - SIZE // 8].astype(np.float32)
    mean = max(float(face.mean()), 1.0)
    symmetry = float(np.abs(face - face[:, ::-1]).mean() / mean)
    band = cv2.GaussianBlur(face, (0, 0), 1.0) - cv2.GaussianBlur(face, (0, 0), 2.7)
    return {"image_symmetry": symmetry, "texture": float(band.std() / mean)}


def score_values(features: dict[str, float]) -> tuple[float, dict[str, float]]:
    components = {k: float(np.exp(-features[k] / SCALES[k])) for k in SCALES}
    total = sum(WEIGHTS.values())
    return 100.0 * sum(WEIGHTS[k] * components[k] for k in SCALES) / total, components


def score(data: bytes, options: ScoreOptions, settings: Settings, reason: str) -> dict[str, Any]:
    opts = options.resolve(settings)
    timings: dict[str, float] = {}
    with timed(timings, "decode"):
        image = decode_image(data, settings)
    with timed(timings, "detect"):
        grey = cv2.equalizeHist(cv2.cvtColor(image.rgb, cv2.COLOR_RGB2GRAY))
        min_px = max(24, round(opts.min_face_size * image.scale))
        boxes = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=6, minSize=(min_px, min_px))
        if len(boxes) == 0:
            raise errors.NoFace("No face was found in the image (fallback detector).")
        boxes = sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3])[:opts.max_faces]
    with timed(timings, "score"):
        raw_grey = cv2.cvtColor(image.rgb, cv2.COLOR_RGB2GRAY)
        faces = [_face(grey, raw_grey, box, image.scale, settings) for box in boxes]
    return document(image, faces, opts, {NAME: VERSION, "opencv": cv2.__version__}, timings, degraded_reason=reason)


def _face(grey: np.ndarray, raw_grey: np.ndarray, box: tuple[int, int, int, int], scale: float,
          settings: Settings) -> FaceResult:
    eyes = _eyes(grey, box)
    crop = _crop(raw_grey, box, eyes)
    features = measure(crop)
    value, components = score_values(features)
    face_px = min(box[2], box[3]) / scale
    lap = float(cv2.Laplacian(crop, cv2.CV_64F).var())
    q = {"sharpness": round(1 - float(np.exp(-lap / SHARPNESS_SCALE)), 4),
         "brightness": round(float(crop.mean()) / 255, 4), "contrast": round(float(crop.std()) / 255, 4),
         "face_size_px": round(face_px, 1), "frontal": None, "eye_openness": None, "truncation": None,
         "face_presence": None}
    reasons = [code for code, bad in (
        ("BLURRY", q["sharpness"] < settings.q_min_sharpness),
        ("TOO_DARK", q["brightness"] < settings.q_min_brightness),
        ("TOO_BRIGHT", q["brightness"] > settings.q_max_brightness),
        ("LOW_CONTRAST", q["contrast"] < settings.q_min_contrast),
        ("FACE_TOO_SMALL", face_px < settings.q_min_face_px)) if bad]
    x, y, w, h = box
    return FaceResult(box=(x, y, x + w, y + h), keypoints=eyes, quality={**q, "passed": not reasons, "reasons": reasons},
                      score=value, components=components, features=features, model=f"{NAME}@{VERSION}")
