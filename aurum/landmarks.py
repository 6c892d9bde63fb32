"""FaceMesh: 468 landmarks per face from a rotated square crop, mapped back to the image.

The crop follows MediaPipe: centred on the detection box, side 1.5 x the box's longer side,
rotated so the eyes are level, 192 x 192 RGB in [0, 1], border replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .detect import Detection
from .geometry import planar, shrink
from .regions import FACE_OVAL, LEFT_EYE, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, RIGHT_EYE, crop_mask
from .store import ModelStore

SIZE = 192
ROI_SCALE = 1.5
NATIVE_FACE_SIDE = SIZE / ROI_SCALE  # a face box this long fills the crop at one image pixel per crop pixel
# Detector keypoints level off on rolled faces (YuNet's eyes stay near horizontal at 30 degrees
# of roll), and FaceMesh degrades when its crop is not level. When the mesh's own eye line
# disagrees with the crop by more than this, the face is cropped again on the mesh's eyes.
REALIGN_DEGREES = 10.0


@dataclass
class Mesh:
    points: np.ndarray      # [468, 3] image pixels (x, y) and relative depth z in pixels
    presence: float         # the model's face-presence probability
    crop: np.ndarray        # the 192 x 192 RGB crop it was computed on (for quality metrics)
    crop_to_image: np.ndarray  # 2x3 affine
    crop_points: np.ndarray  # [468, 2] the same points in the crop's pixels

    # The crop's grey levels and face-oval mask, shared by the texture feature and the quality checks.
    @cached_property
    def grey(self) -> np.ndarray:
        return cv2.cvtColor(self.crop, cv2.COLOR_RGB2GRAY)

    @cached_property
    def face_mask(self) -> np.ndarray:
        return crop_mask(self, FACE_OVAL)

    def five_points(self) -> np.ndarray:
        """Eye centres, nose tip, mouth corners: the order of the ArcFace/SFace template."""
        p = self.points[:, :2]
        return np.stack([p[RIGHT_EYE].mean(0), p[LEFT_EYE].mean(0), p[NOSE_TIP],
                         p[MOUTH_RIGHT], p[MOUTH_LEFT]])


def roi_transform(det: Detection) -> np.ndarray:
    """2x3 affine from crop pixels to image pixels for a detection."""
    x0, y0, x1, y1 = det.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = ROI_SCALE * max(x1 - x0, y1 - y0)
    re, le = det.keypoints["right_eye"], det.keypoints["left_eye"]
    phi = np.arctan2(le[1] - re[1], le[0] - re[0])  # eye line angle in image coordinates
    k = side / SIZE
    c, s = np.cos(phi) * k, np.sin(phi) * k
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    m[:, 2] = [cx, cy] - m[:, :2] @ [SIZE / 2, SIZE / 2]
    return m


def warp_crop(rgb: np.ndarray, crop_to_image: np.ndarray, size: int) -> np.ndarray:
    """The rotated square crop, anti-aliased: bilinear warping alone aliases when it shrinks
    (a face that fills a large photo), so the ROI's bounding region is first shrunk with box
    filters (INTER_AREA) to about the crop's resolution."""
    k = float(np.sqrt(abs(np.linalg.det(crop_to_image[:, :2]))))  # image pixels per crop pixel
    m = crop_to_image
    if k > 1.25:
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
        pts = corners @ m[:, :2].T + m[:, 2]
        h, w = rgb.shape[:2]
        x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 2, 0, [w - 1, h - 1])
        x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 2, [x0 + 1, y0 + 1], [w, h])
        region = rgb[y0:y1, x0:x1]
        rw, rh = max(1, round((x1 - x0) / k)), max(1, round((y1 - y0) / k))
        rgb = shrink(region, (rw, rh), last=cv2.INTER_AREA)
        # region pixel = (image pixel - origin) * (rw / width): fold that into the transform
        sx, sy = rw / (x1 - x0), rh / (y1 - y0)
        m = np.array([[m[0, 0] * sx, m[0, 1] * sx, (m[0, 2] - x0) * sx],
                      [m[1, 0] * sy, m[1, 1] * sy, (m[1, 2] - y0) * sy]])
    return cv2.warpAffine(rgb, cv2.invertAffineTransform(m), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class FaceMesh:
    def __init__(self, store: ModelStore, name: str = "facemesh") -> None:
        self.store = store
        self.name = name

    def crops(self, rgb: np.ndarray, detections: list[Detection]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        crops, transforms = [], []
        for det in detections:
            m = roi_transform(det)
            crops.append(warp_crop(rgb, m, SIZE))
            transforms.append(m)
        return crops, transforms

    def realign(self, det: Detection, mesh: Mesh) -> Detection | None:
        """A detection re-levelled on the mesh's eyes, or None when the crop was level enough."""
        eyes = mesh.five_points()[:2]
        crop_eyes = np.array([det.keypoints["right_eye"], det.keypoints["left_eye"]])
        mesh_angle = np.degrees(np.arctan2(*(eyes[1] - eyes[0])[::-1]))
        crop_angle = np.degrees(np.arctan2(*(crop_eyes[1] - crop_eyes[0])[::-1]))
        if abs((mesh_angle - crop_angle + 180) % 360 - 180) <= REALIGN_DEGREES:
            return None
        return Detection(box=det.box, score=det.score,
                         keypoints={**det.keypoints, "right_eye": eyes[0], "left_eye": eyes[1]})

    def run(self, crops: list[np.ndarray], transforms: list[np.ndarray]) -> list[Mesh]:
        """All crops of a batch (any number of images) in one session call."""
        if not crops:
            return []
        x = planar(crops, 1 / 255)
        raw, presence = self.store.session(self.name).run(["landmarks", "presence"], {"image": x})
        raw = raw.reshape(len(crops), 468, 3).astype(np.float64)
        presence = 1.0 / (1.0 + np.exp(-np.clip(presence.reshape(-1).astype(np.float64), -100, 100)))
        affine = np.stack(transforms)                                   # [N, 2, 3]
        image_pts = np.empty_like(raw)
        image_pts[:, :, :2] = raw[:, :, :2] @ affine[:, :, :2].transpose(0, 2, 1) + affine[:, None, :, 2]
        image_pts[:, :, 2] = raw[:, :, 2] * np.sqrt(np.abs(np.linalg.det(affine[:, :, :2])))[:, None]
        return [Mesh(points=image_pts[i], presence=float(presence[i]), crop=crops[i], crop_to_image=transforms[i],
                     crop_points=raw[i, :, :2]) for i in range(len(crops))]
