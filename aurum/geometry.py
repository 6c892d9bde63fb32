"""Small geometric helpers shared by the stages: letterboxing, IoU, NMS, similarity fits."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How an image was scaled and padded into a square model input."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Input-square pixels -> source-image pixels (works on [..., 2] arrays)."""
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale
        return out


def shrink(img: np.ndarray, size: tuple[int, int], last: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Downscale to ``size`` (width, height) without aliasing, fast (a larger ``size`` is a
    plain ``last`` resize).

    Halve with 2x2 box averages (OpenCV's INTER_AREA fast path for an exact factor of 2)
    while the image is at least twice too big, then one ``last`` step of at most 2x:
    bilinear does not alias there. A single INTER_AREA at an arbitrary factor gives about
    the same pixels but takes its slow path: 12 ms for a 2016 px photo to 640, against ~1."""
    w, h = size
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    return cv2.resize(img, (w, h), interpolation=last)


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio into a ``size`` square, centred on a zero border."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = shrink(rgb, (nw, nh))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = resized
    return canvas, Letterbox(scale=nw / w, pad_x=px, pad_y=py)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x0,y0,x1,y1] box against many."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe-style weighted NMS: each cluster becomes the score-weighted mean of its members.

    ``boxes`` [N,4] x0y0x1y1, ``points`` [N,K,2]; returns (box, points, best score) per cluster.
    """
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    kept = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        members = remaining & (iou(boxes[i], boxes) > iou_threshold)
        members[i] = True
        weights = scores[members][:, None]
        total = weights.sum()
        box = (boxes[members] * weights).sum(0) / total
        pts = (points[members] * weights[:, :, None]).sum(0) / total
        kept.append((box, pts, float(scores[i])))
        remaining &= ~members
    return kept


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            rest = np.array(order)
            overlaps = iou(boxes[i], boxes[rest])
            order = [j for j, o in zip(rest, overlaps) if o <= iou_threshold]
    return keep


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity (rotation, uniform scale, shift) mapping src -> dst (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / (s ** 2).sum(1).mean()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def planar(images: list[np.ndarray], scale: float, offset: float = 0.0, bgr: bool = False) -> np.ndarray:
    """HxWx3 uint8 images -> contiguous float32 NCHW ``x * scale + offset``, plane by plane
    (several times faster than a transposed float copy, which ONNX Runtime would copy again)."""
    n, (h, w) = len(images), images[0].shape[:2]
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        for c in range(3):
            plane = out[i, c]
            plane[...] = img[:, :, 2 - c if bgr else c]
            plane *= scale
            if offset:
                plane += offset
    return out
