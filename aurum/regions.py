"""Named regions of MediaPipe's 468-point face mesh, and masks drawn from them."""

from __future__ import annotations

import cv2
import numpy as np

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYE = [362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398]
RIGHT_BROW = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
LEFT_BROW = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
NOSTRILS = [98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115, 48, 64]
# Cheek patches below the eyes (mirror images of each other): skin for colour and lighting.
RIGHT_CHEEK = [117, 118, 101, 36, 205, 187, 123, 116]
LEFT_CHEEK = [346, 347, 330, 266, 425, 411, 352, 345]
# Six points per eye for the eye aspect ratio: corner, two upper, corner, two lower.
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (362, 385, 387, 263, 373, 380)
# Midline points (chin, nose bridge, forehead) and feature points used for proportions.
CHIN, FOREHEAD, NOSE_TIP, NOSE_BRIDGE = 152, 10, 1, 168
MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP, LOWER_LIP = 61, 291, 13, 14
NOSE_RIGHT, NOSE_LEFT = 129, 358
CHEEK_RIGHT, CHEEK_LEFT = 234, 454
EYE_RIGHT_OUTER, EYE_RIGHT_INNER, EYE_LEFT_INNER, EYE_LEFT_OUTER = 33, 133, 362, 263


def fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Boolean raster of a polygon (crop pixels) that is exactly mirror-equivariant: the polygon's
    raster united with its mirror image's raster, mirrored back. OpenCV's rasterization alone is
    not (edge pixels fall differently on the left and the right), which moved a flipped face's
    texture and blur measures and with them its score by up to ~0.1."""
    w = shape[1]
    plain, mirrored = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.fillPoly(plain, [np.round(polygon).astype(np.int32)], 1)
    flipped = np.asarray(polygon, dtype=np.float64).reshape(-1, 2).copy()
    flipped[:, 0] = (w - 1) - flipped[:, 0]
    cv2.fillPoly(mirrored, [np.round(flipped).astype(np.int32)], 1)
    return (plain | mirrored[:, ::-1]).astype(bool)


def crop_mask(mesh, region: list[int], exclude: tuple[list[int], ...] = (), erode: int = 0) -> np.ndarray:
    """Boolean mask on the crop: inside ``region``'s polygon, outside every ``exclude`` polygon."""
    pts = mesh.crop_points
    shape = mesh.crop.shape[:2]
    mask = fill(shape, pts[region])
    for hole in exclude:
        mask &= ~fill(shape, cv2.convexHull(pts[hole].astype(np.float32)).reshape(-1, 2))
    if erode:
        mask = cv2.erode(mask.astype(np.uint8), np.ones((erode, erode), np.uint8)) > 0
    return mask
