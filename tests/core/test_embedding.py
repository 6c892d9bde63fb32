"""SFace embeddings: only on request, unit length, the same face close, different faces apart."""

from __future__ import annotations

import numpy as np
import pytest

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, photo_rgb, resize

WITH_EMBEDDING = ScoreOptions(return_embedding=True)


def embedding(pipeline: Pipeline, data: bytes) -> np.ndarray:
    return np.array(pipeline.score(data, WITH_EMBEDDING)["faces"][0]["embedding"])


def test_embedding_is_unit_length_128d(astronaut_result: dict) -> None:
    emb = np.array(astronaut_result["faces"][0]["embedding"])
    assert emb.shape == (128,)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("variant", ["flip", "0.5x", "2x", "jpeg q30"])
def test_same_face_is_close(pipeline: Pipeline, astronaut_result: dict, variant: str) -> None:
    rgb = photo_rgb("astronaut.png")
    data = {"flip": lambda: encode(rgb[:, ::-1].copy()), "0.5x": lambda: encode(resize(rgb, 0.5)),
            "2x": lambda: encode(resize(rgb, 2.0)), "jpeg q30": lambda: encode(rgb, "JPEG", quality=30)}[variant]()
    base = np.array(astronaut_result["faces"][0]["embedding"])
    assert float(base @ embedding(pipeline, data)) >= 0.8


def test_different_faces_are_far(pipeline: Pipeline, astronaut_result: dict) -> None:
    base = np.array(astronaut_result["faces"][0]["embedding"])
    other = embedding(pipeline, encode(photo_rgb("camera.png")))
    assert float(base @ other) < 0.363  # OpenCV Zoo's same-person threshold for SFace


def test_no_embedding_unless_asked(pipeline: Pipeline, astronaut: bytes) -> None:
    assert "embedding" not in pipeline.score(astronaut)["faces"][0]
