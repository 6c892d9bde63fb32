"""The result document and batches: schema, options, per-item errors, batch == single."""

from __future__ import annotations

import hashlib

import pytest

from aurum import errors
from aurum.pipeline import Pipeline
from aurum.schemas import ErrorSchema, ResultSchema, ScoreOptions, load_options

from .conftest import encode, group_photo, photo_bytes


def test_result_matches_the_documented_schema(astronaut_result: dict, astronaut: bytes) -> None:
    assert ResultSchema().validate(astronaut_result) == {}
    assert astronaut_result["image"] == {"width": 512, "height": 512, "format": "png",
                                         "sha256": hashlib.sha256(astronaut).hexdigest()}
    assert astronaut_result["primary_face"] == 0 and astronaut_result["degraded"] is False
    assert set(astronaut_result["models"]) >= {"yunet", "facemesh", "geometric_scorer", "sface"}
    assert {"decode", "detect", "landmarks", "score", "quality", "total"} <= set(astronaut_result["timings_ms"])
    score = astronaut_result["faces"][0]["score"]
    assert 0 <= score["value"] <= 100 and score["model"] == "geometric_scorer@1.0.0"
    assert set(score["components"]) == set(score["features"]) == {"symmetry", "averageness", "proportions", "texture"}


def test_error_document_shape() -> None:
    doc = errors.NoFace().to_dict()
    assert ErrorSchema().validate(doc) == {} and doc["error"]["code"] == "NO_FACE"


def test_batch_equals_single_and_keeps_errors_in_place(pipeline: Pipeline) -> None:
    canvas, _ = group_photo()
    images = [photo_bytes("astronaut.png"), b"not an image", encode(canvas), photo_bytes("coffee.png"),
              photo_bytes("camera.png")]
    batch = pipeline.score_many(images)
    assert isinstance(batch[1], errors.UnsupportedFormat)
    assert isinstance(batch[3], errors.NoFace)
    for i in (0, 2, 4):
        single = pipeline.score(images[i])
        assert [f["box"] for f in batch[i]["faces"]] == [f["box"] for f in single["faces"]]
        assert [f["score"] for f in batch[i]["faces"]] == [f["score"] for f in single["faces"]]
    assert len(batch[2]["faces"]) == 3


def test_scores_are_deterministic(pipeline: Pipeline, astronaut: bytes) -> None:
    first, second = pipeline.score(astronaut), pipeline.score(astronaut)
    assert first["faces"] == second["faces"]


@pytest.mark.parametrize("raw,field", [
    ({"max_faces": 0}, "max_faces"), ({"max_faces": "many"}, "max_faces"),
    ({"min_face_size": -1}, "min_face_size"), ({"detection_threshold": 1.5}, "detection_threshold"),
    ({"return_embedding": "perhaps"}, "return_embedding"),
])
def test_invalid_options_are_rejected_by_field(raw: dict, field: str) -> None:
    with pytest.raises(errors.InvalidOption) as info:
        load_options(raw)
    assert field in info.value.details["fields"]


def test_options_load_with_defaults() -> None:
    opts = load_options({"max_faces": "3", "return_landmarks": "true"})
    assert opts == ScoreOptions(max_faces=3, return_landmarks=True)
