"""Detection on real photos: counts and boxes against hand-checked values, options, coordinates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aurum import errors
from aurum.config import Settings
from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, group_photo, photo_bytes, photo_rgb, resize

# Hand-checked on the drawn output (aurum score --draw): [x, y, w, h] of each face.
ASTRONAUT_FACE = (178, 63, 90, 114)
CAMERA_FACE = (196, 113, 61, 82)


def assert_box_near(box, expected, tol=12.0) -> None:
    assert np.allclose(box, expected, atol=tol), f"{box} is not within {tol}px of {expected}"


def centre(box) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


def test_one_face_each_on_the_portraits(pipeline: Pipeline) -> None:
    astro = pipeline.score(photo_bytes("astronaut.png"))
    cam = pipeline.score(photo_bytes("camera.png"))
    assert len(astro["faces"]) == 1 and len(cam["faces"]) == 1
    assert_box_near(astro["faces"][0]["box"], ASTRONAUT_FACE)
    assert_box_near(cam["faces"][0]["box"], CAMERA_FACE)
    assert astro["faces"][0]["confidence"] > 0.85


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg"])
def test_no_face_on_non_faces(pipeline: Pipeline, name: str) -> None:
    with pytest.raises(errors.NoFace) as info:
        pipeline.score(photo_bytes(name))
    assert info.value.code == "NO_FACE"


def test_group_photo_finds_all_faces_at_three_scales(pipeline: Pipeline) -> None:
    canvas, placements = group_photo()
    result = pipeline.score(encode(canvas))
    faces = result["faces"]
    assert len(faces) == 3
    expected = []
    for (dx, dy, f), face in zip(placements, (ASTRONAUT_FACE, CAMERA_FACE, ASTRONAUT_FACE)):
        x, y, w, h = face
        expected.append((dx + x * f, dy + y * f, w * f, h * f))
    # largest first: the two full-size faces, then the small one
    assert faces[0]["box"][2] * faces[0]["box"][3] >= faces[1]["box"][2] * faces[1]["box"][3] >= \
        faces[2]["box"][2] * faces[2]["box"][3]
    found = [centre(f["box"]) for f in faces]
    for exp in expected:
        distances = [np.linalg.norm(c - centre(exp)) for c in found]
        assert min(distances) < max(10.0, exp[2] * 0.25), (exp, found)


def test_max_faces_keeps_the_largest(pipeline: Pipeline) -> None:
    canvas, _ = group_photo()
    result = pipeline.score(encode(canvas), ScoreOptions(max_faces=1))
    assert len(result["faces"]) == 1
    assert result["faces"][0]["box"][2] > 80


def test_min_face_size_drops_small_faces(pipeline: Pipeline) -> None:
    canvas, _ = group_photo()
    result = pipeline.score(encode(canvas), ScoreOptions(min_face_size=50))
    assert len(result["faces"]) == 2
    assert all(f["box"][2] >= 50 for f in result["faces"])


def test_detection_threshold_is_applied(pipeline: Pipeline) -> None:
    canvas, _ = group_photo()
    strict = pipeline.score(encode(canvas), ScoreOptions(detection_threshold=0.9))
    assert len(strict["faces"]) == 1  # only the frontal full-size astronaut scores above 0.9
    assert all(f["confidence"] >= 0.9 for f in strict["faces"])


@pytest.mark.parametrize("detector", ["yunet", "blazeface_full", "blazeface_short"])
def test_every_detector_finds_the_portraits(detector: str) -> None:
    pipeline = Pipeline(Settings.from_env(detector=detector, ort_threads=1))
    astro = pipeline.score(photo_bytes("astronaut.png"))
    assert len(astro["faces"]) == 1
    assert np.linalg.norm(centre(astro["faces"][0]["box"]) - centre(ASTRONAUT_FACE)) < 15
    assert len(pipeline.score(photo_bytes("camera.png"))["faces"]) == 1
    with pytest.raises(errors.NoFace):
        pipeline.score(photo_bytes("coffee.png"))


def test_boxes_are_in_original_pixels_after_exif_rotation(pipeline: Pipeline) -> None:
    stored = Image.fromarray(photo_rgb("astronaut.png")).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    result = pipeline.score(buf.getvalue())
    assert len(result["faces"]) == 1
    assert_box_near(result["faces"][0]["box"], ASTRONAUT_FACE)


def test_boxes_are_in_original_pixels_after_reduced_decode(pipeline: Pipeline) -> None:
    big = encode(resize(photo_rgb("astronaut.png"), 6.0), "JPEG", quality=90)  # 3072 px, decoded at 1536
    result = pipeline.score(big)
    assert (result["image"]["width"], result["image"]["height"]) == (3072, 3072)
    assert_box_near(result["faces"][0]["box"], [v * 6 for v in ASTRONAUT_FACE], tol=60)


# --- the first detection stage (AURUM_DETECTOR_FIRST_SIZE) -----------------------------------
def _groups():
    """Group photos: the composition at its three scales and the development set's two."""
    from tests.helpers.devset import devset_photos

    canvas, _ = group_photo()
    photos = [("composition", encode(canvas))]
    photos += [(p.name, p.read_bytes()) for p in devset_photos() if "group" in p.name or "friends" in p.name]
    return photos


def test_the_first_stage_loses_no_face_of_a_group_photo(pipeline: Pipeline, settings: Settings) -> None:
    """A group photo goes on to the full-size run: the same faces as with the full size only."""
    assert pipeline.detector.first is not None and pipeline.detector.first.input_size == settings.detector_first_size
    full_only = Pipeline(Settings.from_env(detector_first_size=0))
    for name, data in _groups():
        staged, plain = pipeline.score(data)["faces"], full_only.score(data)["faces"]
        assert len(staged) == len(plain) >= 3, name
        for a, b in zip(staged, plain):
            assert a["box"] == b["box"], name


def test_a_portrait_is_detected_by_the_first_stage_alone(pipeline: Pipeline, settings: Settings) -> None:
    """One clear face: the 320 run suffices (a third of the 640 run's cost) and places the face
    within a few pixels of the full run; its score moves less than the ordinary edits do."""
    full_only = Pipeline(Settings.from_env(detector_first_size=0))
    before = pipeline.detector.full_runs
    staged = pipeline.score(photo_bytes("astronaut.png"))["faces"][0]
    assert pipeline.detector.full_runs == before, "the portrait went on to the full-size run"
    plain = full_only.score(photo_bytes("astronaut.png"))["faces"][0]
    assert_box_near(staged["box"], plain["box"], tol=3.0)
    assert abs(staged["score"]["value"] - plain["score"]["value"]) < 1.5


def test_an_embedding_is_aligned_on_full_size_keypoints(pipeline: Pipeline) -> None:
    before = pipeline.detector.full_runs
    pipeline.score(photo_bytes("astronaut.png"), ScoreOptions(return_embedding=True))
    assert pipeline.detector.full_runs > before
