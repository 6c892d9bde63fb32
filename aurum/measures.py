"""Image measures of one face, taken on its FaceMesh crop, where every face has about the same
size in pixels (ISO/IEC 29794-5 and its reference implementation OFIQ as the anchor).

- ``blur``: the Gaussian blur the face carries, as a fraction of its width, estimated from how
  much its strongest inner-face edges lose when blurred once more by a known amount (a step
  edge blurred by s has a peak gradient ~1/s; blurred again by r, ~1/sqrt(s^2 + r^2)). Measured
  in units of the face, so a small sharp face and a large one read the same, and it does not
  saturate: clean photos read 0.5-2 %, a blur of 4.4 % of the face width reads about that.
- ``eyes_visible`` / ``mouth_visible``: whether the eye and mouth regions hold what eyes and a
  mouth look like, whatever FaceMesh guesses under an occluder (it keeps placing eyes under a
  black bar or sunglasses). An open or closed eye is among the face's most contrasted regions
  (sclera, iris, lashes, lid crease) and is not far darker than the cheeks; a bar or a hand is
  flat there, dark lenses are far darker. Lips differ from the cheeks in chroma and have the
  mouth line; a hand, a mask or a scarf do not. (OFIQ uses a segmentation network for these;
  this is the model-free approximation, calibrated on the development set: clean eyes read
  >= 0.87, eyes blurred by 2 % of the face width >= 0.43, bars and dark glasses 0.)
- ``illumination_uniformity``: the balance of linear luminance between the two halves of the
  face, split on the midline (OFIQ compares cheek histograms; on a 192 px crop the halves'
  means are the steadier measure).
- ``dynamic_range``: the entropy of the face's luminance histogram over 8 bits (OFIQ).
- ``overexposed`` / ``underexposed``: the fraction of face pixels clipped bright (linear
  luminance >= 247, OFIQ's bin: sRGB ~251) / crushed dark (sRGB <= 10; OFIQ's own dark bin,
  linear <= 25, is sRGB ~88 and covers any dark-skinned face, so it only counts as a share).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import regions as r
from .landmarks import Mesh

# The re-blur that probes the edges (crop pixels; a face is ~128 px wide in the crop), and the
# pre-blur that keeps JPEG blocking and sensor noise out of the gradient.
REBLUR_SIGMA = 3.0
PREBLUR_SIGMA = 1.0
EDGE_QUANTILE = 0.90           # the strongest 10 % of inner-face gradients are the edges


@dataclass(frozen=True)
class FaceMeasures:
    blur: float                 # estimated Gaussian sigma / face width
    eyes_visible: float         # 0-1, the less visible eye
    mouth_visible: float        # 0-1
    illumination_uniformity: float  # 0-1, 1: both halves equally lit
    dynamic_range: float        # 0-1, luminance entropy / 8 bits
    overexposed: float          # fraction of face pixels at >= 247 linear luminance
    underexposed: float         # fraction at sRGB grey <= 10


_SRGB = np.arange(256) / 255.0
_LINEAR = 255.0 * np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4)
# One lookup table per channel, weighted (Rec. 709), for cv2.LUT: linear luminance = their sum.
_LUMA = np.stack([_LINEAR * w for w in (0.2126, 0.7152, 0.0722)], -1).astype(np.float32).reshape(1, 256, 3)


_ONES = np.ones((1, 3), np.float32)


def _linear_luminance(rgb: np.ndarray) -> np.ndarray:
    """sRGB image -> linear luminance (Rec. 709 weights), 0-255, as OFIQ computes it."""
    return cv2.transform(cv2.LUT(rgb, _LUMA), _ONES)


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates of a crop, made once per size."""
    if shape not in _GRIDS:
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        _GRIDS[shape] = (xs, ys)
    return _GRIDS[shape]


def _polygon(shape: tuple[int, int], pts: np.ndarray, dilate: int = 0) -> np.ndarray:
    mask = r.fill(shape, cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2))
    if dilate:
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((dilate, dilate), np.uint8)) > 0
    return mask


def blur_fraction(grey: np.ndarray, inner: np.ndarray, face_width: float) -> float:
    """Estimated blur sigma of the face as a fraction of its width (see the module docstring)."""
    g = cv2.GaussianBlur(grey, (0, 0), PREBLUR_SIGMA)
    g2 = cv2.GaussianBlur(g, (0, 0), REBLUR_SIGMA)

    def magnitude(img: np.ndarray) -> np.ndarray:
        return cv2.magnitude(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3))

    m0, m1 = magnitude(g)[inner], magnitude(g2)[inner]
    if m0.size < 50:
        return 1.0
    k = int(EDGE_QUANTILE * (m0.size - 1))
    edges = m0 >= np.partition(m0, k)[k]
    ratios = m0[edges] / np.maximum(m1[edges], np.float32(1e-3))
    ratio = float(np.partition(ratios, ratios.size // 2)[ratios.size // 2])  # the median
    total = REBLUR_SIGMA / np.sqrt(max(ratio * ratio - 1.0, 1e-6))   # sigma of the edges as seen
    sigma = np.sqrt(max(total * total - PREBLUR_SIGMA * PREBLUR_SIGMA, 0.0))
    return float(sigma / max(face_width, 1.0))


def measure(mesh: Mesh, face_width: float) -> FaceMeasures:
    """``face_width``: the face's width in crop pixels (from the pose fit, so yaw does not shrink it)."""
    rgb, grey, pts = mesh.crop, mesh.grey, mesh.crop_points
    shape = grey.shape
    face = mesh.face_mask
    if not face.any():
        face = np.ones(shape, dtype=bool)
    inner = face & ~cv2.dilate((~face).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    blur = blur_fraction(grey.astype(np.float32), inner if inner.sum() >= 50 else face, face_width)

    g = grey.astype(np.float32)
    face_std = max(float(g[face].std()), 1.0)
    cheeks = (_polygon(shape, pts[r.RIGHT_CHEEK]) | _polygon(shape, pts[r.LEFT_CHEEK])) & face
    cheek_mean = max(float(g[cheeks].mean()) if cheeks.sum() >= 8 else float(g[face].mean()), 1.0)
    # Eyes: their contrast against the whole face's (an open or shut eye reads 0.5-1.5, a bar or
    # a hand ~0), and their brightness against the cheeks' (dark lenses are far darker than skin;
    # sclera and lids are not). The less visible eye counts.
    eyes = []
    for contour in (r.RIGHT_EYE, r.LEFT_EYE):
        eye = _polygon(shape, pts[contour], dilate=3) & face
        if eye.sum() < 8:
            eyes.append(0.0)
            continue
        contrast = float(g[eye].std()) / face_std / EYE_CONTRAST_FULL
        brightness = (float(g[eye].mean()) / cheek_mean - EYE_DARK) / (EYE_BRIGHT - EYE_DARK)
        eyes.append(min(contrast, brightness))
    eyes_visible = float(np.clip(min(eyes), 0.0, 1.0))

    lips = _polygon(shape, pts[r.LIPS_OUTER]) & face
    if lips.sum() >= 8 and cheeks.sum() >= 8:
        cr = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 1]
        chroma = float(cr[lips].mean()) - float(cr[cheeks].mean())  # lips are redder
        line = float(g[lips].std()) / face_std
        mouth_visible = float(np.clip(max(chroma / LIP_CHROMA_FULL, line / MOUTH_CONTRAST_FULL), 0.0, 1.0))
    else:
        mouth_visible = 0.0

    lum = _linear_luminance(rgb)
    mid = pts[[r.FOREHEAD, r.NOSE_BRIDGE, r.NOSE_TIP, r.CHIN]].mean(0)
    direction = pts[r.LEFT_EYE].mean(0) - pts[r.RIGHT_EYE].mean(0)
    xs, ys = _grid(shape)
    left = ((xs - mid[0]) * direction[0] + (ys - mid[1]) * direction[1] > 0) & face
    right = face & ~left
    halves = [float(lum[right].mean()) if right.sum() >= 8 else 0.0,
              float(lum[left].mean()) if left.sum() >= 8 else 0.0]
    y = lum[face]
    uniformity = min(halves) / max(max(halves), 1e-6)

    values = np.clip(np.round(y), 0, 255).astype(np.int64)
    hist = np.bincount(values, minlength=256) / max(values.size, 1)
    nz = hist[hist > 0]
    entropy = float(-(nz * np.log2(nz)).sum())
    return FaceMeasures(blur=blur, eyes_visible=eyes_visible, mouth_visible=mouth_visible,
                        illumination_uniformity=float(uniformity), dynamic_range=entropy / 8.0,
                        overexposed=float((values >= 247).mean()), underexposed=float((grey[face] <= 10).mean()))


# Calibrated on the development set (bench/robustness.py): the value that reads as fully visible.
EYE_CONTRAST_FULL = 0.6     # eye grey-level std / face std that reads as fully visible
EYE_DARK, EYE_BRIGHT = 0.25, 0.4  # eye mean / cheek mean: 0 at or below EYE_DARK, 1 from EYE_BRIGHT
LIP_CHROMA_FULL = 8.0
MOUTH_CONTRAST_FULL = 0.6
