"""The score and face count do not move with resolution, JPEG re-encoding or a mirror flip."""

from __future__ import annotations

import pytest

from aurum.pipeline import Pipeline

from .conftest import encode, photo_rgb, resize

VARIANTS = {
    "0.5x": lambda rgb: encode(resize(rgb, 0.5)),
    "0.75x": lambda rgb: encode(resize(rgb, 0.75)),
    "1.5x": lambda rgb: encode(resize(rgb, 1.5)),
    "2x": lambda rgb: encode(resize(rgb, 2.0)),
    "jpeg q50": lambda rgb: encode(rgb, "JPEG", quality=50),
    "flip": lambda rgb: encode(rgb[:, ::-1].copy()),
}


@pytest.fixture(scope="module")
def reference(pipeline: Pipeline) -> dict[str, dict]:
    return {name: pipeline.score(encode(photo_rgb(name))) for name in ("astronaut.png", "camera.png")}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_frontal_face_score_within_2_points(pipeline: Pipeline, reference: dict, variant: str) -> None:
    base = reference["astronaut.png"]
    result = pipeline.score(VARIANTS[variant](photo_rgb("astronaut.png")))
    assert len(result["faces"]) == len(base["faces"]) == 1
    assert result["faces"][0]["score"]["value"] == pytest.approx(base["faces"][0]["score"]["value"], abs=2.0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_turned_face_score_within_3_points(pipeline: Pipeline, reference: dict, variant: str) -> None:
    """The cameraman is turned ~40 degrees (he fails the pose check); FaceMesh is noisier on such
    faces, so the bound is wider. The tightest we measured across these variants: 2.3 points."""
    base = reference["camera.png"]
    result = pipeline.score(VARIANTS[variant](photo_rgb("camera.png")))
    assert len(result["faces"]) == 1
    assert result["faces"][0]["score"]["value"] == pytest.approx(base["faces"][0]["score"]["value"], abs=3.0)
