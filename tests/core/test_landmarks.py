"""Landmarks and pose: plausible geometry, and pose that follows the head."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, photo_rgb

RIGHT_EYE, LEFT_EYE, NOSE_TIP, UPPER_LIP, CHIN = 33, 263, 1, 13, 152


def test_468_landmarks_inside_the_face_and_in_order(astronaut_result: dict) -> None:
    face = astronaut_result["faces"][0]
    pts = np.array(face["landmarks"])
    assert pts.shape == (468, 3)
    x, y, w, h = face["box"]
    inside = ((pts[:, 0] >= x - 0.15 * w) & (pts[:, 0] <= x + 1.15 * w) &
              (pts[:, 1] >= y - 0.15 * h) & (pts[:, 1] <= y + 1.15 * h))
    assert inside.mean() > 0.97
    eyes_y = (pts[RIGHT_EYE, 1] + pts[LEFT_EYE, 1]) / 2
    assert eyes_y < pts[NOSE_TIP, 1] < pts[UPPER_LIP, 1] < pts[CHIN, 1]
    assert pts[RIGHT_EYE, 0] < pts[NOSE_TIP, 0] < pts[LEFT_EYE, 0]  # subject's right eye on image left
    # the mesh agrees with the detector's own eye keypoints
    kp = face["keypoints"]
    assert np.linalg.norm(pts[[33, 133], :2].mean(0) - kp["right_eye"]) < 10
    assert np.linalg.norm(pts[[362, 263], :2].mean(0) - kp["left_eye"]) < 10


def test_frontal_portrait_has_small_angles(astronaut_result: dict) -> None:
    pose = astronaut_result["faces"][0]["pose"]
    assert abs(pose["yaw"]) < 10 and abs(pose["pitch"]) < 15 and abs(pose["roll"]) < 8


def test_turned_head_has_large_yaw_and_flip_negates_it(pipeline: Pipeline) -> None:
    cam = photo_rgb("camera.png")
    yaw = pipeline.score(encode(cam))["faces"][0]["pose"]["yaw"]
    flipped = pipeline.score(encode(cam[:, ::-1].copy()))["faces"][0]["pose"]["yaw"]
    assert yaw > 25 and flipped < -25


@pytest.mark.parametrize("angle", [-25, 20])
def test_roll_follows_an_image_rotation(pipeline: Pipeline, astronaut_result: dict, angle: int) -> None:
    rotated = np.asarray(Image.fromarray(photo_rgb("astronaut.png")).rotate(angle, resample=Image.BICUBIC))
    roll = pipeline.score(encode(rotated))["faces"][0]["pose"]["roll"]
    base = astronaut_result["faces"][0]["pose"]["roll"]
    assert roll - base == pytest.approx(angle, abs=4)  # PIL rotates counter-clockwise


def test_landmarks_only_when_asked(pipeline: Pipeline, astronaut: bytes) -> None:
    plain = pipeline.score(astronaut)
    assert "landmarks" not in plain["faces"][0] and "embedding" not in plain["faces"][0]
    with_lm = pipeline.score(astronaut, ScoreOptions(return_landmarks=True))
    assert len(with_lm["faces"][0]["landmarks"]) == 468
