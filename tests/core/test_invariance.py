"""The score and face count do not move with resolution, JPEG re-encoding, a mirror flip,
brightness or gamma.

Bounds are in points of geometric_scorer 2.x, whose scale spreads people ~3x wider than 1.0.0's
(between-person SD 8 points on the development set): 2.5 points is ~0.3 of that spread."""

from __future__ import annotations

import numpy as np
import pytest

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, photo_rgb, resize

VARIANTS = {
    "0.5x": lambda rgb: encode(resize(rgb, 0.5)),
    "0.75x": lambda rgb: encode(resize(rgb, 0.75)),
    "1.5x": lambda rgb: encode(resize(rgb, 1.5)),
    "2x": lambda rgb: encode(resize(rgb, 2.0)),
    "jpeg q50": lambda rgb: encode(rgb, "JPEG", quality=50),
    "flip": lambda rgb: encode(rgb[:, ::-1].copy()),
    "gamma 0.7": lambda rgb: encode(np.clip(255 * (rgb / 255.0) ** 0.7, 0, 255).astype(np.uint8)),
    "gamma 1.5": lambda rgb: encode(np.clip(255 * (rgb / 255.0) ** 1.5, 0, 255).astype(np.uint8)),
    "brightness +20%": lambda rgb: encode(np.clip(rgb * 1.2, 0, 255).astype(np.uint8)),
    "brightness -20%": lambda rgb: encode(np.clip(rgb * 0.8, 0, 255).astype(np.uint8)),
}


ALWAYS = ScoreOptions(always_score=True)  # the cameraman's score is withheld (turned past the yaw limit)


def value(result: dict) -> float:
    v = result["faces"][0]["score"]["value"]
    assert v is not None
    return v


@pytest.fixture(scope="module")
def reference(pipeline: Pipeline) -> dict[str, dict]:
    return {name: pipeline.score(encode(photo_rgb(name)), ALWAYS) for name in ("astronaut.png", "camera.png")}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_frontal_face_score_within_2_5_points(pipeline: Pipeline, reference: dict, variant: str) -> None:
    base = reference["astronaut.png"]
    result = pipeline.score(VARIANTS[variant](photo_rgb("astronaut.png")), ALWAYS)
    assert len(result["faces"]) == len(base["faces"]) == 1
    assert value(result) == pytest.approx(value(base), abs=2.5)  # measured: <= 2.13 (0.5x), 1.58 (+20 %)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_turned_face_score_within_3_points(pipeline: Pipeline, reference: dict, variant: str) -> None:
    """The cameraman is turned ~50 degrees (his score is withheld: POSE_YAW); FaceMesh is noisier
    on such faces, so the bound is wider. Measured across these variants: at most 1.68 (0.5x,
    where his face is 30 px; 4.57 before the mesh was the mean of its passes, and gamma 0.7
    moved him 1.26)."""
    base = reference["camera.png"]
    result = pipeline.score(VARIANTS[variant](photo_rgb("camera.png")), ALWAYS)
    assert len(result["faces"]) == 1
    assert value(result) == pytest.approx(value(base), abs=3.0)
