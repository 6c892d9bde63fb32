"""SFace: a 128-d identity embedding of a face aligned to the ArcFace 112 x 112 template.

Alignment is OpenCV's ``FaceRecognizerSF::alignCrop``: a least-squares similarity (Umeyama) of
the detector's five keypoints onto the template, ``warpAffine`` bilinear with a black border.
SFace was trained and its 0.363 threshold published for exactly this crop; aligning on other
points (FaceMesh's eye centres) halves the same-vs-different margin.
"""

from __future__ import annotations

import cv2
import numpy as np

from .geometry import planar, similarity_transform
from .store import ModelStore

SIZE = 112
# Right eye, left eye, nose tip, right and left mouth corners (the subject's), in the 112 crop.
FIVE_POINTS = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])


def align(rgb: np.ndarray, five_points: np.ndarray) -> np.ndarray:
    m = similarity_transform(five_points, TEMPLATE)
    return cv2.warpAffine(rgb, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def five_points(keypoints: dict[str, np.ndarray]) -> np.ndarray | None:
    """The detector's five alignment points in template order, or None if it lacks some
    (BlazeFace has a mouth centre, not corners)."""
    if not all(name in keypoints for name in FIVE_POINTS):
        return None
    return np.stack([np.asarray(keypoints[name], dtype=np.float64) for name in FIVE_POINTS])


class SFace:
    def __init__(self, store: ModelStore, name: str = "sface") -> None:
        self.store = store
        self.name = name
        spec = store.spec(name)
        self.bgr = spec.get("preprocessing", {}).get("color", "BGR").upper() == "BGR"
        self.batchable = not isinstance(spec["inputs"][0]["shape"][0], int)

    def run(self, aligned: list[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings [N, 128] for aligned RGB crops."""
        if not aligned:
            return np.zeros((0, 128), dtype=np.float32)
        x = planar(aligned, 1.0, bgr=self.bgr)
        session = self.store.session(self.name)
        inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
        if self.batchable:
            emb = session.run([out], {inp: x})[0]
        else:
            emb = np.concatenate([session.run([out], {inp: x[i:i + 1]})[0] for i in range(len(x))])
        emb = emb.reshape(len(aligned), -1).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
