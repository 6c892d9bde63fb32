"""The result document and batches: schema, options, per-item errors, batch == single."""

from __future__ import annotations

import hashlib

import pytest

from aurum import errors
from aurum.pipeline import Pipeline
from aurum.schemas import ErrorSchema, ResultSchema, ScoreOptions, load_options

from aurum.scoring import geometric
from tests.helpers.photos import encode, group_photo, photo_bytes


def test_result_matches_the_documented_schema(astronaut_result: dict, astronaut: bytes) -> None:
    assert ResultSchema().validate(astronaut_result) == {}
    assert astronaut_result["image"] == {"width": 512, "height": 512, "format": "png",
                                         "sha256": hashlib.sha256(astronaut).hexdigest()}
    assert astronaut_result["primary_face"] == 0 and astronaut_result["degraded"] is False
    assert set(astronaut_result["models"]) >= {"yunet", "facemesh", "geometric_scorer", "sface"}
    assert {"decode", "detect", "landmarks", "score", "quality", "total"} <= set(astronaut_result["timings_ms"])
    score = astronaut_result["faces"][0]["score"]
    assert 0 <= score["value"] <= 100 and score["model"] == f"geometric_scorer@{geometric.VERSION}"
    assert 0 < score["confidence"] <= 1 and score["withheld"] == []
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


def _full_decode_only(monkeypatch) -> None:
    """Make the pipeline decode every photo at the working size, as it did before it decoded
    large JPEGs at detection size first."""
    import aurum.pipeline as pipeline_module
    from aurum.image import decode_image

    monkeypatch.setattr(pipeline_module, "decode_image", lambda data, settings, detect_side=0: decode_image(data, settings))


def _close(reduced: dict, full: dict, tolerance_px: float) -> None:
    assert len(reduced["faces"]) == len(full["faces"]) >= 1
    assert reduced["image"] == full["image"]
    for a, b in zip(reduced["faces"], full["faces"]):
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) < tolerance_px
        assert abs(a["score"]["value"] - b["score"]["value"]) < 1.5
        assert abs(a["pose"]["yaw"] - b["pose"]["yaw"]) < 3


def test_a_phone_photo_scored_from_its_reduced_decode(pipeline: Pipeline, monkeypatch) -> None:
    """A 3024 x 4032 portrait is decoded at 1/4 (1008 px): the face is large there, so the
    working size is never decoded, and the result matches a full decode's."""
    from tests.helpers.photos import phone_jpeg as _phone_jpeg

    data = _phone_jpeg(3024)
    calls = []
    import aurum.image as image
    real = image._decode
    monkeypatch.setattr(image, "_decode", lambda *a: calls.append(a[-1]) or real(*a))
    reduced = pipeline.score(data, ScoreOptions(return_embedding=True))
    assert calls == [4]  # one decode, at 1/4
    _full_decode_only(monkeypatch)
    full = pipeline.score(data, ScoreOptions(return_embedding=True))
    _close(reduced, full, tolerance_px=3024 * 0.01)
    cosine = sum(a * b for a, b in zip(reduced["faces"][0]["embedding"], full["faces"][0]["embedding"]))
    assert cosine > 0.95


def test_small_faces_in_a_reduced_decode_are_cropped_from_the_working_size(pipeline: Pipeline, monkeypatch) -> None:
    """The group photo at 2560 px is decoded at 1/4 for detection; its faces are under 128 px
    there, so their landmarks come from the working-size decode, as if there were no reduction."""
    import io

    from PIL import Image

    import aurum.image as image

    canvas, _ = group_photo()
    buf = io.BytesIO()
    Image.fromarray(canvas).resize((2560, 1280), Image.BICUBIC).save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    calls = []
    real = image._decode
    monkeypatch.setattr(image, "_decode", lambda *a: calls.append(a[-1]) or real(*a))
    opts = ScoreOptions(always_score=True)  # the cameraman is turned past the yaw limit
    reduced = pipeline.score(data, opts)
    assert calls == [4, 1]  # detection at 640 x 320, then the working size once, for the crops
    _full_decode_only(monkeypatch)
    full = pipeline.score(data, opts)
    _close(reduced, full, tolerance_px=2560 * 0.01)


def test_only_onnx_runtime_failures_are_retryable(pipeline: Pipeline, monkeypatch, astronaut: bytes) -> None:
    """An ONNX Runtime error in a stage is a retryable INFERENCE_FAILED; a bug in our own code
    (here a ValueError from the landmark stage) stays itself, so it is never retried and handed
    to the fallback as if the models had failed."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def ort_fails(*args, **kwargs):
        raise Fail("simulated ONNX Runtime failure")

    def bug(*args, **kwargs):
        raise ValueError("simulated bug")

    monkeypatch.setattr(pipeline.facemesh, "run", ort_fails)
    with pytest.raises(errors.InferenceFailed) as failed:
        pipeline.score(astronaut)
    assert failed.value.retryable and "landmarks failed: Fail" in failed.value.message
    monkeypatch.setattr(pipeline.facemesh, "run", bug)
    with pytest.raises(ValueError):
        pipeline.score(astronaut)
