"""The scorer's input: interpretable measurements of one face, all "lower is better".

- ``symmetry``: mean distance between each frontalised landmark and the mirror image of its
  bilateral partner, in inter-ocular distances (IOD).
- ``averageness``: mean distance of the frontalised landmarks from MediaPipe's canonical (mean)
  face after a similarity fit, in IODs.
- ``proportions``: mean |log ratio| of six facial proportions against the canonical face's.
- ``texture``: unevenness of the skin: band-pass (difference of Gaussians) energy inside the
  cheeks-and-forehead mask of the normalised crop, relative to its mean luminance.

Everything is measured in the canonical frame or on the fixed-size crop, so it does not depend
on the photo's resolution, and symmetric measures make it invariant to a horizontal flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..landmarks import Mesh
from ..pose import Pose, fit_rotation, frontalise
from .. import regions as r

FEATURES = ("symmetry", "averageness", "proportions", "texture")


@dataclass(frozen=True)
class FaceGeometry:
    """MediaPipe's canonical face: mean shape [468,3] and the bilateral mirror permutation."""

    mean_shape: np.ndarray
    mirror: np.ndarray

    @classmethod
    def from_json(cls, data: dict) -> "FaceGeometry":
        return cls(mean_shape=np.asarray(data["mean_shape"], dtype=np.float64),
                   mirror=np.asarray(data["mirror"], dtype=np.int64))

    @property
    def iod(self) -> float:
        return _iod(self.mean_shape)


def _iod(points: np.ndarray) -> float:
    right = points[r.RIGHT_EYE].mean(0)
    left = points[r.LEFT_EYE].mean(0)
    return float(np.linalg.norm(right[:2] - left[:2]))


def _proportions(p: np.ndarray) -> np.ndarray:
    def d(a: int, b: int) -> float:
        return float(np.linalg.norm(p[a, :2] - p[b, :2]))

    face_h = d(r.FOREHEAD, r.CHIN)
    face_w = d(r.CHEEK_RIGHT, r.CHEEK_LEFT)
    return np.array([
        face_w / face_h,                                              # face width : height
        d(r.EYE_RIGHT_INNER, r.EYE_LEFT_INNER) / face_w,              # eye spacing
        d(r.EYE_RIGHT_OUTER, r.EYE_RIGHT_INNER) / d(r.EYE_LEFT_INNER, r.EYE_LEFT_OUTER),  # eye widths
        d(r.NOSE_RIGHT, r.NOSE_LEFT) / d(r.MOUTH_RIGHT, r.MOUTH_LEFT),  # nose : mouth width
        d(r.NOSE_BRIDGE, r.NOSE_TIP) / d(r.NOSE_TIP, r.CHIN),          # middle : lower face
        d(r.UPPER_LIP, r.CHIN) / d(r.NOSE_TIP, r.CHIN),                 # lower-face thirds
    ])


def geometry_features(mesh: Mesh, pose: Pose, geom: FaceGeometry) -> dict[str, float]:
    canon = frontalise(mesh.points, pose)
    iod = geom.iod
    mirrored = canon[geom.mirror] * np.array([-1.0, 1.0, 1.0])
    symmetry = float(np.linalg.norm(canon - mirrored, axis=1).mean() / (2 * iod))

    mean_c = geom.mean_shape - geom.mean_shape.mean(0)
    rot, scale = fit_rotation(canon, mean_c)
    fitted = (canon - canon.mean(0)) @ rot.T * scale
    averageness = float(np.linalg.norm(fitted - mean_c, axis=1).mean() / iod)

    ratios = _proportions(canon) / _proportions(geom.mean_shape)
    proportions = float(np.abs(np.log(ratios)).mean())
    return {"symmetry": symmetry, "averageness": averageness, "proportions": proportions}


SKIN_EXCLUDE = (r.LIPS_OUTER, r.RIGHT_EYE, r.LEFT_EYE, r.RIGHT_BROW, r.LEFT_BROW, r.NOSTRILS)


def texture_feature(mesh: Mesh) -> float:
    grey = cv2.cvtColor(mesh.crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mask = r.crop_mask(mesh, r.FACE_OVAL, exclude=SKIN_EXCLUDE, erode=5)
    if mask.sum() < 50:
        return 0.0
    band = cv2.GaussianBlur(grey, (0, 0), 1.5) - cv2.GaussianBlur(grey, (0, 0), 4.0)
    return float(band[mask].std() / max(grey[mask].mean(), 1.0))


def face_features(mesh: Mesh, pose: Pose, geom: FaceGeometry) -> dict[str, float]:
    values = geometry_features(mesh, pose, geom)
    values["texture"] = texture_feature(mesh)
    return values


def feature_vector(values: dict[str, float]) -> np.ndarray:
    return np.array([values[name] for name in FEATURES], dtype=np.float32)
