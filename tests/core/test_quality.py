"""Quality components react to what they measure, and the gate turns failures into an error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aurum import errors
from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, photo_rgb, resize


def quality(pipeline: Pipeline, rgb: np.ndarray) -> dict:
    return pipeline.score(encode(rgb))["faces"][0]["quality"]


def test_clean_portrait_passes(astronaut_result: dict) -> None:
    q = astronaut_result["faces"][0]["quality"]
    assert q["passed"] and q["reasons"] == []
    assert q["eye_openness"] > 0.2 and q["truncation"] == 0 and q["face_presence"] > 0.9


def test_blur_lowers_sharpness_and_fails(pipeline: Pipeline) -> None:
    rgb = photo_rgb("astronaut.png")
    sharp = quality(pipeline, rgb)
    blurred = quality(pipeline, cv2.GaussianBlur(rgb, (0, 0), 4))
    assert blurred["sharpness"] < sharp["sharpness"] - 0.2
    assert "BLURRY" in blurred["reasons"]


def test_darkness_and_low_contrast(pipeline: Pipeline) -> None:
    dark = quality(pipeline, (photo_rgb("astronaut.png") * 0.25).astype(np.uint8))
    assert "TOO_DARK" in dark["reasons"]
    flat = photo_rgb("astronaut.png").astype(np.float32)
    flat = ((flat - flat.mean()) * 0.2 + flat.mean()).astype(np.uint8)
    assert "LOW_CONTRAST" in quality(pipeline, flat)["reasons"]


def test_overexposure(pipeline: Pipeline) -> None:
    bright = np.clip(photo_rgb("astronaut.png").astype(np.int32) + 120, 0, 255).astype(np.uint8)
    assert "TOO_BRIGHT" in quality(pipeline, bright)["reasons"]


def test_small_face_and_turned_head(pipeline: Pipeline) -> None:
    small = quality(pipeline, resize(photo_rgb("astronaut.png"), 0.4))
    assert "FACE_TOO_SMALL" in small["reasons"] and small["face_size_px"] < 64
    turned = quality(pipeline, photo_rgb("camera.png"))
    assert "POSE_YAW" in turned["reasons"] and turned["frontal"] < 0.6


def test_truncation_at_the_border(pipeline: Pipeline) -> None:
    cut = photo_rgb("astronaut.png")[95:, :]  # the top of the head and the brows cut off
    q = quality(pipeline, cut)
    assert q["truncation"] > 0.02 and "TRUNCATED" in q["reasons"]


def test_quality_gate(pipeline: Pipeline, astronaut: bytes) -> None:
    assert pipeline.score(astronaut, ScoreOptions(quality_gate=True))["faces"][0]["quality"]["passed"]
    with pytest.raises(errors.QualityGateFailed) as info:
        pipeline.score(encode(photo_rgb("camera.png")), ScoreOptions(quality_gate=True))
    assert info.value.code == "QUALITY_FAILED" and "POSE_YAW" in info.value.details["reasons"]
