"""Face detection: BlazeFace (short or full range) and YuNet, behind one interface.

Every detector returns, per image, a list of :class:`Detection` in the pixels of the image it
was given: a box, a confidence and named keypoints (at least both eyes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import hard_nms, iou, letterbox, planar, shrink, weighted_nms
from .store import ModelStore, split_ref


@dataclass
class Detection:
    box: np.ndarray                     # [x0, y0, x1, y1], image pixels
    score: float
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [x, y]

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def long_side(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def scaled(self, factor: float) -> "Detection":
        """The same detection in an image ``factor`` times larger."""
        return Detection(box=self.box * factor, score=self.score,
                         keypoints={n: p * factor for n, p in self.keypoints.items()})


class Detector:
    name: str
    batchable = False

    def __init__(self, store: ModelStore, name: str) -> None:
        self.store = store
        self.name = name
        self.spec = store.spec(name)

    def detect(self, images: list[np.ndarray], threshold: float) -> list[list[Detection]]:
        raise NotImplementedError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -100, 100)))


class BlazeFace(Detector):
    """MediaPipe BlazeFace: letterboxed RGB, fixed anchors, weighted NMS (IoU 0.3)."""

    batchable = True

    def __init__(self, store: ModelStore, name: str, input_size: int | None = None) -> None:
        super().__init__(store, name)
        post = self.spec["postprocessing"]
        self.size = int(self.spec["preprocessing"]["size"][0])  # fixed by the model
        self.iou = float(post["nms_iou"])
        self.keypoint_names = tuple(post["keypoints"])
        anchors = post["anchors"]
        self.anchors = self._anchors(self.size, anchors["strides"], anchors["anchors_per_cell_per_layer"])

    @staticmethod
    def _anchors(size: int, strides: list[int], per_cell: list[int] | int) -> np.ndarray:
        if isinstance(per_cell, int):
            per_cell = [per_cell] * len(strides)
        rows = []
        for stride, count in zip(strides, per_cell):
            fm = int(np.ceil(size / stride))
            ys, xs = np.mgrid[0:fm, 0:fm]
            centres = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], -1).reshape(-1, 2)
            rows.append(np.repeat(centres, count, axis=0))
        return np.concatenate(rows)

    def detect(self, images: list[np.ndarray], threshold: float) -> list[list[Detection]]:
        batch, boxes = [], []
        for rgb in images:
            square, lb = letterbox(rgb, self.size)
            batch.append(square)
            boxes.append(lb)
        x = planar(batch, 1 / 127.5, -1.0)
        regressors, logits = self.store.session(self.name).run(["regressors", "scores"], {"image": x})
        return [self._decode(r, s, lb, threshold) for r, s, lb in zip(regressors, logits, boxes)]

    def _decode(self, reg: np.ndarray, logit: np.ndarray, lb, threshold: float) -> list[Detection]:
        scores = _sigmoid(logit[:, 0])
        keep = scores >= threshold
        if not keep.any():
            return []
        reg, scores, anchors = reg[keep].astype(np.float64), scores[keep], self.anchors[keep]
        s = float(self.size)
        cx = reg[:, 0] / s + anchors[:, 0]
        cy = reg[:, 1] / s + anchors[:, 1]
        w, h = reg[:, 2] / s, reg[:, 3] / s
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        pts = reg[:, 4:16].reshape(-1, 6, 2) / s + anchors[:, None, :]
        out = []
        for box, kp, score in weighted_nms(boxes, pts, scores, self.iou):
            corners = lb.to_image(box.reshape(2, 2) * s).reshape(4)
            kp_img = lb.to_image(kp * s)
            out.append(Detection(box=corners, score=score,
                                 keypoints={n: kp_img[i] for i, n in enumerate(self.keypoint_names)}))
        return out


class YuNet(Detector):
    """OpenCV Zoo YuNet: BGR 0-255, anchor-free heads at strides 8/16/32, 5 keypoints."""

    def __init__(self, store: ModelStore, name: str, input_size: int | None = None) -> None:
        super().__init__(store, name)
        post = self.spec["postprocessing"]
        self.input_size = int(input_size or 640)  # long side; the graph takes any multiple of 32
        self.iou = float(post["nms_iou"])
        self.strides = tuple(post["strides"])
        self.keypoint_names = tuple(post["keypoint_names"])

    def detect(self, images: list[np.ndarray], threshold: float) -> list[list[Detection]]:
        return [self._detect_one(rgb, threshold) for rgb in images]

    def _detect_one(self, rgb: np.ndarray, threshold: float) -> list[Detection]:
        h, w = rgb.shape[:2]
        ratio = min(1.0, self.input_size / max(h, w))
        nw, nh = max(1, round(w * ratio)), max(1, round(h * ratio))
        pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32  # pad to a multiple of the largest stride
        resized = shrink(rgb, (nw, nh))  # the image itself at ratio 1
        x = np.empty((1, 3, ph, pw), dtype=np.float32)
        x[:, :, nh:] = 0  # the padding only
        x[:, :, :nh, nw:] = 0
        # RGB -> BGR planes: split into contiguous planes first, then convert each (2.5x faster
        # than converting the strided channels directly, 7x faster than a transposed copy)
        for channel, plane in enumerate(reversed(cv2.split(resized))):
            x[0, channel, :nh, :nw] = plane
        session = self.store.session(self.name)
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
        boxes, points, scores = [], [], []
        # Scores are sqrt(cls * obj), both sigmoids: pick candidates on the product, one pass
        # over every anchor, and compute exact scores for those few only.
        candidate = threshold * threshold * (1 - 1e-6)
        for stride in self.strides:
            cols = pw // stride
            cls = outputs[f"cls_{stride}"].reshape(-1)
            obj = outputs[f"obj_{stride}"].reshape(-1)
            keep = np.flatnonzero(cls * obj >= candidate) if threshold > 0 else np.arange(len(cls))
            score = np.sqrt(np.clip(cls[keep], 0, 1) * np.clip(obj[keep], 0, 1))
            exact = score >= threshold
            keep, score = keep[exact], score[exact]
            if not len(keep):
                continue
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep].astype(np.float64)
            kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep].astype(np.float64)
            col, row = keep % cols, keep // cols
            cx, cy = (col + bbox[:, 0]) * stride, (row + bbox[:, 1]) * stride
            bw, bh = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1))
            pts = kps.reshape(-1, 5, 2)
            pts[:, :, 0] = (pts[:, :, 0] + col[:, None]) * stride
            pts[:, :, 1] = (pts[:, :, 1] + row[:, None]) * stride
            points.append(pts)
            scores.append(score)
        if not scores:
            return []
        boxes_a, points_a, scores_a = np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)
        scale = nw / w
        out = []
        for i in hard_nms(boxes_a, scores_a, self.iou):
            out.append(Detection(box=boxes_a[i] / scale, score=float(scores_a[i]),
                                 keypoints={n: points_a[i, k] / scale for k, n in enumerate(self.keypoint_names)}))
        return out


DETECTORS = {"blazeface_short": BlazeFace, "blazeface_full": BlazeFace, "yunet": YuNet}


class Staged:
    """Detection in two stages: a first run at a smaller input (YuNet at 320 costs about a third
    of 640), and the full-size run only where the first could have missed a face: none found,
    more than one (a group: small faces likely), or one under ``min_fraction`` of the photo's
    long side (~26 px at 320, below which the first run's keypoints grow coarse).

    Photos come in groups that must be treated alike (a photo and its mirror): a group takes the
    first stage's detections only if every image in it qualifies, so a mirror flip of a photo
    never changes which stage its faces come from. Without a first stage it is the detector."""

    def __init__(self, full: Detector, first: Detector | None = None, min_fraction: float = 0.08) -> None:
        self.full, self.first, self.min_fraction = full, first, min_fraction
        self.name = full.name
        self.full_runs = 0  # images run at the full size though a first stage exists

    def _enough(self, rgb: np.ndarray, dets: list[Detection]) -> bool:
        long_side = max(rgb.shape[:2])
        if long_side <= self.first.input_size:  # the full run would see the very same pixels
            return True
        return len(dets) == 1 and dets[0].size >= self.min_fraction * long_side

    def detect(self, groups: list[list[np.ndarray]], threshold: float, precise: bool = False
               ) -> list[list[list[Detection]]]:
        """``precise``: the full size only, for keypoints that align an embedding (at 320 they
        move it to a cosine of ~0.96 from OpenCV's reference alignment; at 640, 0.99+)."""
        flat = [rgb for group in groups for rgb in group]
        if self.first is None or precise:
            found = self.full.detect(flat, threshold)
            self.full_runs += len(flat) if self.first is not None else 0
        else:
            found = self.first.detect(flat, threshold)
            k, again = 0, []
            for group in groups:
                span = range(k, k + len(group))
                if not all(self._enough(flat[i], found[i]) for i in span):
                    again += span
                k += len(group)
            for i, dets in zip(again, self.full.detect([flat[i] for i in again], threshold) if again else []):
                found[i] = dets
            self.full_runs += len(again)
        out, k = [], 0
        for group in groups:
            out.append(found[k:k + len(group)])
            k += len(group)
        return out


def make_detector(store: ModelStore, name: str, input_size: int | None = None) -> Detector:
    """``name``: a detector's manifest name, or ``name@version`` (a registered version of it)."""
    try:
        cls = DETECTORS[split_ref(name)[0]]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}") from None
    return cls(store, name, input_size)


def make_staged(store: ModelStore, name: str, input_size: int, first_size: int) -> Staged:
    """The detector, with a first stage at ``first_size`` where it helps (YuNet only: BlazeFace's
    input size is fixed; 0, or a first size not below the full one, turns it off)."""
    full = make_detector(store, name, input_size)
    yunet = split_ref(name)[0] == "yunet"
    first = YuNet(store, name, first_size) if yunet and 0 < first_size < input_size else None
    return Staged(full, first)


def _bilateral(name: str) -> str:
    """The keypoint a mirror flip turns ``name`` into (right_eye <-> left_eye...)."""
    for a, b in (("right", "left"), ("left", "right")):
        if a in name:
            return name.replace(a, b)
    return name


def mirrored(det: Detection, width: int) -> Detection:
    """``det`` of a mirrored image, in the unmirrored image's pixels: x -> width - 1 - x (pixel
    centres, the convention the mirror-equivariant crops use), right and left swapped."""
    x0, y0, x1, y1 = det.box
    return Detection(box=np.array([width - 1 - x1, y0, width - 1 - x0, y1], dtype=np.float64), score=det.score,
                     keypoints={_bilateral(n): np.array([width - 1 - p[0], p[1]], dtype=np.float64)
                                for n, p in det.keypoints.items()})


def symmetric(plain: list[Detection], flipped: list[Detection], width: int, match_iou: float = 0.5
              ) -> list[tuple[Detection, Detection]]:
    """Detections of an image and of its mirror made into detections a mirror flip leaves
    unchanged: each face found in both is the average of its two (the mirror's mapped back), a
    face found in one only is kept as found. The result of a mirrored photo is then exactly the
    mirror of this one's, which the detector alone is not (YuNet's keypoints moved ~1 % of the
    face width under a flip). Returns (symmetric, as found) pairs; "as found" is the plain run's
    detection (the mirror's, mapped back, for a face only it found): what is reported."""
    back = [mirrored(d, width) for d in flipped]
    used: set[int] = set()
    out = []
    for d in plain:
        overlaps = iou(d.box, np.stack([b.box for b in back])) if back else np.zeros(0)
        k = int(np.argmax(overlaps)) if len(overlaps) else -1
        if k >= 0 and overlaps[k] >= match_iou and k not in used:
            used.add(k)
            m = back[k]
            out.append((Detection(box=(d.box + m.box) / 2, score=(d.score + m.score) / 2,
                                  keypoints={n: (p + m.keypoints[n]) / 2 for n, p in d.keypoints.items()}), d))
        else:
            out.append((d, d))
    out += [(b, b) for k, b in enumerate(back) if k not in used]
    return out
