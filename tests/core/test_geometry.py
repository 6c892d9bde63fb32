"""Resampling helpers: the fast anti-aliased shrink every stage uses on large photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aurum.geometry import shrink

from tests.helpers.photos import photo_rgb, resize


@pytest.mark.parametrize("size", [(640, 480), (500, 375), (1000, 750), (2015, 1511)])
def test_shrink_matches_a_box_filter_at_any_factor(size: tuple[int, int]) -> None:
    photo = resize(photo_rgb("astronaut.png"), 4.0)[:1536]  # 2048 x 1536, real detail
    photo = cv2.resize(photo, (2016, 1512), interpolation=cv2.INTER_LINEAR)
    out = shrink(photo, size)
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8
    reference = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)  # slow, but the gold standard
    assert np.abs(out.astype(int) - reference).mean() < 1.5


def test_shrink_does_not_alias() -> None:
    stripes = np.zeros((1200, 1600, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: any point sampling turns them into false patterns
    out = shrink(stripes, (500, 375))
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3
    assert cv2.resize(stripes, (500, 375), interpolation=cv2.INTER_NEAREST).std() > 100  # what it avoids


def test_shrink_to_the_same_size_is_a_no_op() -> None:
    img = photo_rgb("camera.png")
    assert shrink(img, (img.shape[1], img.shape[0])) is img
