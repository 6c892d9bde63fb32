"""The scorer's input: interpretable measurements of one face, all "lower is better".

- ``symmetry``: mean distance between each frontalised landmark and the mirror image of its
  bilateral partner, in inter-ocular distances (IOD).
- ``averageness``: mean distance of the frontalised landmarks from MediaPipe's canonical (mean)
  face after a similarity fit, in IODs.
- ``proportions``: mean |log ratio| of six facial proportions against the canonical face's.
- ``texture``: unevenness of the skin: band-pass (difference of Gaussians at 4 % and 12 % of the
  inter-ocular distance) energy of the log grey level inside the cheeks-and-forehead mask, relative
  to the same band's energy over the whole face oval (eyes, brows, nose and lips included). Blur,
  downscaling and exposure scale both alike, so the ratio does not reward a photo for missing
  detail the way an absolute measure does (a blurred face used to read as flawless skin). In log
  grey levels a brightness gain adds a constant (which the band-pass removes) and a gamma
  multiplies every contrast alike (which the ratio removes): on linear grey levels gamma 0.7 / 1.5
  moved a face's score by up to 3.3 points, as it lifts or crushes the skin's contrast against
  the eyes' and brows'.

Everything is measured in the canonical frame or on the fixed-size crop, so it does not depend
on the photo's resolution, and symmetric measures make it invariant to a horizontal flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..landmarks import Mesh
from ..pose import Pose, frontalise
from .. import regions as r

FEATURES = ("symmetry", "averageness", "proportions", "texture")
# How the features are measured; part of the result cache's key (a trained scorer keeps its own
# version when the measurements under it change).
FEATURES_VERSION = "4"


@dataclass(frozen=True)
class FaceGeometry:
    """MediaPipe's canonical face: mean shape [468,3] and the bilateral mirror permutation."""

    mean_shape: np.ndarray
    mirror: np.ndarray

    @classmethod
    def from_json(cls, data: dict) -> "FaceGeometry":
        return cls(mean_shape=np.asarray(data["mean_shape"], dtype=np.float64),
                   mirror=np.asarray(data["mirror"], dtype=np.int64))

    # What every face is compared with, computed once.
    @cached_property
    def iod(self) -> float:
        return _iod(self.mean_shape)

    @cached_property
    def centred(self) -> np.ndarray:
        return self.mean_shape - self.mean_shape.mean(0)

    @cached_property
    def proportions(self) -> np.ndarray:
        return _proportions(self.mean_shape)

    @cached_property
    def width(self) -> float:
        """Cheek to cheek (tragus-side points 234 and 454) of the mean face, in its units."""
        return float(np.linalg.norm(self.mean_shape[r.CHEEK_RIGHT, :2] - self.mean_shape[r.CHEEK_LEFT, :2]))

    def crop_face_width(self, mesh: Mesh, pose: Pose) -> float:
        """The face's frontal width in its crop's pixels: the pose fit's scale, so a turned head
        (whose cheeks come closer in the image) keeps its width."""
        image_px_per_crop_px = float(np.sqrt(abs(np.linalg.det(mesh.crop_to_image[:, :2]))))
        return self.width * pose.scale / image_px_per_crop_px


def _iod(points: np.ndarray) -> float:
    right = points[r.RIGHT_EYE].mean(0)
    left = points[r.LEFT_EYE].mean(0)
    return float(np.linalg.norm(right[:2] - left[:2]))


# Six facial proportions, each a ratio of two landmark distances (numerator, denominator).
_RATIOS = (
    ((r.CHEEK_RIGHT, r.CHEEK_LEFT), (r.FOREHEAD, r.CHIN)),                        # face width : height
    ((r.EYE_RIGHT_INNER, r.EYE_LEFT_INNER), (r.CHEEK_RIGHT, r.CHEEK_LEFT)),        # eye spacing
    ((r.EYE_RIGHT_OUTER, r.EYE_RIGHT_INNER), (r.EYE_LEFT_INNER, r.EYE_LEFT_OUTER)),  # eye widths
    ((r.NOSE_RIGHT, r.NOSE_LEFT), (r.MOUTH_RIGHT, r.MOUTH_LEFT)),                  # nose : mouth width
    ((r.NOSE_BRIDGE, r.NOSE_TIP), (r.NOSE_TIP, r.CHIN)),                           # middle : lower face
    ((r.UPPER_LIP, r.CHIN), (r.NOSE_TIP, r.CHIN)),                                 # lower-face thirds
)
_RATIO_INDEX = np.array(_RATIOS)  # [6 ratios, numerator/denominator, 2 points]


def _proportions(p: np.ndarray) -> np.ndarray:
    xy = p[:, :2]
    lengths = np.linalg.norm(xy[_RATIO_INDEX[..., 0]] - xy[_RATIO_INDEX[..., 1]], axis=-1)  # [6, 2]
    return lengths[:, 0] / lengths[:, 1]


_MIRROR_X = np.array([-1.0, 1.0, 1.0])


def geometry_features(mesh: Mesh, pose: Pose, geom: FaceGeometry) -> dict[str, float]:
    canon = frontalise(mesh.points, pose)  # centred, in the canonical frame
    iod = geom.iod
    mirrored = canon[geom.mirror] * _MIRROR_X
    symmetry = float(np.linalg.norm(canon - mirrored, axis=1).mean() / (2 * iod))

    # Similarity fit onto the mean face: the pose fit has already rotated the points onto it
    # (fitting back gives the identity rotation), so only the least-squares scale is left.
    scale = float((canon * geom.centred).sum() / (canon ** 2).sum())
    averageness = float(np.linalg.norm(canon * scale - geom.centred, axis=1).mean() / iod)

    proportions = float(np.abs(np.log(_proportions(canon) / geom.proportions)).mean())
    return {"symmetry": symmetry, "averageness": averageness, "proportions": proportions}


SKIN_EXCLUDE = (r.LIPS_OUTER, r.RIGHT_EYE, r.LEFT_EYE, r.RIGHT_BROW, r.LEFT_BROW, r.NOSTRILS)


TEXTURE_BAND = (0.04, 0.12)  # DoG sigmas, in inter-ocular distances
# Added to the grey level before its log, so that sensor noise in near-black pixels (nostrils,
# shadows) is not magnified without bound; small beside skin's grey levels (~60-220).
LOG_OFFSET = 8.0


def texture_feature(mesh: Mesh) -> float:
    grey = np.log(mesh.grey.astype(np.float32) + LOG_OFFSET)
    skin = r.crop_mask(mesh, r.FACE_OVAL, exclude=SKIN_EXCLUDE, erode=5)
    inner = mesh.face_mask
    if skin.sum() < 50 or inner.sum() < 50:
        return 0.0
    iod = max(_iod(mesh.crop_points), 1.0)
    band = (cv2.GaussianBlur(grey, (0, 0), TEXTURE_BAND[0] * iod)
            - cv2.GaussianBlur(grey, (0, 0), TEXTURE_BAND[1] * iod))
    return float(band[skin].std() / max(float(band[inner].std()), 1e-6))


# FaceMesh regresses toward the mean face as a photo softens: on the development set averageness
# fell by 5.6 % per 1 % of the face width of measured blur beyond a clean photo's ~0.8 % (the other
# features did not improve: symmetry and texture worsen, proportions moved < 1 %). The feature is
# corrected by that much, so a softened photo does not win by looking more average.
BLUR_CLEAN = 0.008
AVERAGENESS_PER_BLUR = 5.6


def face_features(mesh: Mesh, pose: Pose, geom: FaceGeometry, blur: float = 0.0) -> dict[str, float]:
    values = geometry_features(mesh, pose, geom)
    # blur is capped where the score is withheld anyway (a flat crop's estimate can be huge)
    values["averageness"] *= float(np.exp(AVERAGENESS_PER_BLUR * min(max(0.0, blur - BLUR_CLEAN), 0.1)))
    values["texture"] = texture_feature(mesh)
    return values


def feature_vector(values: dict[str, float]) -> np.ndarray:
    return np.array([values[name] for name in FEATURES], dtype=np.float32)
