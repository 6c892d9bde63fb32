"""FaceMesh: 468 landmarks per face from a rotated square crop, mapped back to the image.

The crop is the one MediaPipe's own pipeline gives FaceMesh: a square rotated so the eyes are
level, 192 x 192 RGB in [0, 1], border replicated, of side 1.5 x the BlazeFace box. YuNet's boxes
are taller than BlazeFace's (forehead to chin), so MediaPipe's recipe on them made every mesh
3-16 % too large; from YuNet's five keypoints the square is instead placed where BlazeFace's
would be (fitted on the development set against mediapipe 0.10.14's own detections, see
:func:`roi_from_keypoints`), which brings the mesh to MediaPipe's (median error 0.033 of the
inter-ocular distance, scale 1.008, against 0.059 and 1.052 before).

Two passes, so that the mesh depends on the face rather than on the detector's guess:

1. the detector's crop, run as it is and mirrored (below); its mesh places the face;
2. the same recipe applied to that mesh's own five points (eye centres, nose tip, mouth
   corners), which are steadier than the detector's keypoints: level on the mesh's eye line,
   sized and centred from the mesh. A flip, a rotation, a rescale or a re-crop of the photo moved
   the final mesh by 0.3-0.4 % of the inter-ocular distance (median), against 0.7-0.9 % after one
   pass and 1-4 % with the detector's box alone.

The face's mesh is the mean of the passes' meshes (:func:`mean_mesh`): each pass's crop falls a
little differently, and FaceMesh's points depend on the crop enough to matter to the score.

Every crop is run twice in the same batch, as it is and mirrored, and the mirrored run's points
are flipped back and renumbered through the mesh's bilateral pairs before the two are averaged.
The network alone is not mirror-equivariant (a flipped photo moved its points by ~2.6 % of the
inter-ocular distance); the average is, by construction: the mesh of a mirrored crop is exactly
the mirror of the mesh. How far the two runs disagree is kept as a measure of the mesh's own
uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .detect import Detection
from .embed import five_points
from .geometry import planar
from .regions import FACE_OVAL, LEFT_EYE, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, RIGHT_EYE, crop_mask
from .store import ModelStore

SIZE = 192
ROI_SCALE = 1.5


@dataclass
class Mesh:
    points: np.ndarray      # [468, 3] image pixels (x, y) and relative depth z in pixels
    presence: float         # the model's face-presence probability
    crop: np.ndarray        # the 192 x 192 RGB crop it was computed on (for quality metrics)
    crop_to_image: np.ndarray  # 2x3 affine
    crop_points: np.ndarray  # [468, 2] the same points in the crop's pixels
    disagreement: float = 0.0  # mean distance between the plain and mirrored runs, in crop IODs

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


def roi_matrix(centre: np.ndarray, side: float, phi: float) -> np.ndarray:
    """2x3 affine from crop pixels to image pixels: a square of ``side`` image pixels centred on
    ``centre``, rotated by ``phi`` (the eye line's angle in image coordinates)."""
    k = side / SIZE
    c, s = np.cos(phi) * k, np.sin(phi) * k
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    # the crop's centre in pixel-centre coordinates (those of warpAffine and of the mirror flip,
    # column i <-> SIZE-1-i) is (SIZE-1)/2, so a mirrored centre gives exactly the mirrored crop
    m[:, 2] = np.asarray(centre, dtype=np.float64) - m[:, :2] @ [(SIZE - 1) / 2, (SIZE - 1) / 2]
    return m


# Where BlazeFace's square would be, from five points (eye centres, nose tip, mouth corners), in the
# eye-levelled frame (u along the eyes, v down the face; d = eye distance, h = eyes-to-mouth
# height, n = the nose's offset along u):  centre = eyes' midpoint + (C h + D d) v + E n u.
# Its side is 1.5 x BlazeFace's box, which foreshortened eyes cannot give on a turned head, so it
# comes from the detector's box (first pass) or from the first mesh's 3-D fit (second pass).
# Least squares on 60 faces (12 people, as photographed, mirrored, rotated +-8 degrees, halved)
# against mediapipe 0.10.14's own short-range detections: centre within 0.6 % of the side
# (median), side within 4.0 % (box) and 3.5 % (3-D fit).
ROI_FIT = {"C": 0.355, "D": 0.274, "E": -1.761}
ROI_PER_BOX_SIDE = 1.25     # YuNet's longer box side -> the square's side
ROI_PER_POSE_SCALE = 23.44  # the pose fit's scale (canonical face -> image pixels) -> the square's side
# A face box this long fills its crop at one image pixel per crop pixel.
NATIVE_FACE_SIDE = SIZE / ROI_PER_BOX_SIDE


def roi_from_keypoints(points: np.ndarray, side: float) -> np.ndarray:
    """The crop transform for five points (template order) and the square's side in pixels."""
    right_eye, left_eye, nose, mouth_r, mouth_l = np.asarray(points, dtype=np.float64)
    u = left_eye - right_eye
    d = max(float(np.linalg.norm(u)), 1e-6)
    u = u / d
    v = np.array([-u[1], u[0]])
    eyes, mouth = (right_eye + left_eye) / 2, (mouth_r + mouth_l) / 2
    h, n = float((mouth - eyes) @ v), float((nose - eyes) @ u)
    f = ROI_FIT
    centre = eyes + (f["C"] * h + f["D"] * d) * v + f["E"] * n * u
    return roi_matrix(centre, side, float(np.arctan2(u[1], u[0])))


def roi_from_mesh(mesh: "Mesh", pose_scale: float) -> np.ndarray:
    """The second pass's crop: placed and levelled on the mesh's own points, sized by its 3-D fit."""
    return roi_from_keypoints(mesh.five_points(), ROI_PER_POSE_SCALE * pose_scale)


def roi_transform(det: Detection) -> np.ndarray:
    """2x3 affine from crop pixels to image pixels for a detection: from its five keypoints
    (YuNet), or MediaPipe's own recipe on its box (BlazeFace, which has no mouth corners)."""
    points = five_points(det.keypoints)
    if points is not None:
        return roi_from_keypoints(points, ROI_PER_BOX_SIDE * det.long_side)
    x0, y0, x1, y1 = det.box
    re, le = det.keypoints["right_eye"], det.keypoints["left_eye"]
    phi = np.arctan2(le[1] - re[1], le[0] - re[0])  # eye line angle in image coordinates
    return roi_matrix(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), ROI_SCALE * max(x1 - x0, y1 - y0), phi)


def warp_crop(rgb: np.ndarray, crop_to_image: np.ndarray, size: int) -> np.ndarray:
    """The rotated square crop, anti-aliased and mirror-equivariant.

    Bilinear warping aliases when it shrinks more than 2x (a face that fills a large photo), so
    such a crop is warped at 2^n times its size (at most 2 image pixels per sample) and then
    halved n times with exact 2x2 box means. Both steps commute with a mirror flip, so the crop of
    a mirrored photo (through the mirrored transform) is exactly the mirrored crop, which the
    mesh's flip-averaging relies on (shrinking the bounding region first, as before, was not)."""
    k = float(np.sqrt(abs(np.linalg.det(crop_to_image[:, :2]))))  # image pixels per crop pixel
    n = int(np.floor(np.log2(k))) if k >= 2.0 else 0
    f = 2 ** n
    # big-crop pixel U -> crop pixel u = (U + 0.5) / f - 0.5 (pixel centres of a 2x2 box mean)
    up = np.array([[1 / f, 0.0, 0.5 / f - 0.5], [0.0, 1 / f, 0.5 / f - 0.5], [0.0, 0.0, 1.0]])
    m = np.vstack([crop_to_image, [0.0, 0.0, 1.0]]) @ up
    out = cv2.warpAffine(rgb, cv2.invertAffineTransform(m[:2]), (size * f, size * f),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    for _ in range(n):
        out = cv2.resize(out, (out.shape[1] // 2, out.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return out


def mean_mesh(meshes: list[Mesh]) -> Mesh:
    """The mean of one face's meshes (image frame), on the last one's crop.

    FaceMesh's points depend on where the crop falls more than on the face: for some faces they
    settle in one of two shapes ~0.5 % of the inter-ocular distance apart, by the crop alone (a
    0.75x resize of one portrait moved its symmetry feature from 0.0073 to 0.0025 and its score by
    3.8 points). The passes' crops differ, so their mean is steadier, at no extra model run: on the
    development set the largest score shift of an ordinary edit fell from 4.3 to 2.6 points.

    The first passes' meshes stay out of the mean (AURUM_MESH_PLACEMENT): their crops are not
    level on a tilted head. YuNet's eye keypoints follow a head's roll hardly at all (a portrait
    rotated by 10 degrees: the eye line moved 0.6 degrees) and FaceMesh on a rolled crop about
    three quarters of what is left, so the detector's crop was ~9 degrees off and the next ~2.5,
    and the mirrored run's average of a rolled crop blends the face with its mirror about a
    tilted axis: the symmetry feature of one portrait grew five-fold at +-10 degrees, moving its
    score 2.3 points. Two placement passes and two averaged (8 model runs, as against 6 for three
    averaged): on the development set's ordinary edits the largest shift 2.15 against 2.59, p90
    0.74 against 1.28, +-10 degrees at most 0.84 against 2.24 (bench/robustness.py); one
    placement pass and three averaged, the same 8 runs, reached 2.03."""
    last = meshes[-1]
    if len(meshes) == 1:
        return last
    points = np.mean([m.points for m in meshes], axis=0)
    to_crop = cv2.invertAffineTransform(last.crop_to_image)
    return Mesh(points=points, presence=max(m.presence for m in meshes), crop=last.crop,
                crop_to_image=last.crop_to_image, crop_points=points[:, :2] @ to_crop[:, :2].T + to_crop[:, 2],
                disagreement=last.disagreement)


class FaceMesh:
    def __init__(self, store: ModelStore, mirror: np.ndarray, name: str = "facemesh") -> None:
        self.store = store
        self.name = name
        self.mirror = np.asarray(mirror)  # landmark i's bilateral partner

    def crops(self, rgb: np.ndarray, detections: list[Detection]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """First-pass crops (and their transforms) from detections."""
        transforms = [roi_transform(det) for det in detections]
        return [warp_crop(rgb, m, SIZE) for m in transforms], transforms

    def run(self, crops: list[np.ndarray] | tuple, transforms: list[np.ndarray] | tuple,
            mirrored: bool = True, mirror_crops: list[np.ndarray] | tuple | None = None) -> list[Mesh]:
        """All crops of a batch (any number of images) in one session call; ``mirrored``: each
        also run mirrored and the two averaged (see the module docstring). ``mirror_crops``: the
        mirrored crops to use, else each crop flipped."""
        if not crops:
            return []
        n = len(crops)
        batch = [*crops, *(mirror_crops or [cv2.flip(c, 1) for c in crops])] if mirrored else list(crops)
        raw, presence = self.store.session(self.name).run(["landmarks", "presence"], {"image": planar(batch, 1 / 255)})
        raw = raw.reshape(len(batch), 468, 3).astype(np.float64)
        presence = 1.0 / (1.0 + np.exp(-np.clip(presence.reshape(-1).astype(np.float64), -100, 100)))
        disagreement = np.zeros(n)
        if mirrored:
            flipped = raw[n:][:, self.mirror]
            flipped[:, :, 0] = (SIZE - 1) - flipped[:, :, 0]  # pixel centres: column i <-> SIZE-1-i
            plain = raw[:n]
            raw = (plain + flipped) / 2
            iod = np.linalg.norm(raw[:, RIGHT_EYE, :2].mean(1) - raw[:, LEFT_EYE, :2].mean(1), axis=1)
            disagreement = np.linalg.norm(plain[:, :, :2] - flipped[:, :, :2], axis=2).mean(1) / np.maximum(iod, 1e-6)
            presence = (presence[:n] + presence[n:]) / 2
        affine = np.stack(transforms)                                   # [N, 2, 3]
        image_pts = np.empty_like(raw)
        image_pts[:, :, :2] = raw[:, :, :2] @ affine[:, :, :2].transpose(0, 2, 1) + affine[:, None, :, 2]
        image_pts[:, :, 2] = raw[:, :, 2] * np.sqrt(np.abs(np.linalg.det(affine[:, :, :2])))[:, None]
        return [Mesh(points=image_pts[i], presence=float(presence[i]), crop=crops[i], crop_to_image=transforms[i],
                     crop_points=raw[i, :, :2], disagreement=float(disagreement[i])) for i in range(n)]
