"""The scoring pipeline: bytes in, a result dict (see :mod:`aurum.schemas`) out.

    decode + validate -> detect -> crop + FaceMesh landmarks -> pose
      -> (SFace embedding) -> features -> score -> quality -> result

:meth:`Pipeline.score_many` runs a list of images with one model call per stage for all the
faces of the batch; :meth:`Pipeline.score` is a batch of one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from . import errors
from .config import Settings
from .detect import Detection, make_detector
from .embed import SFace, align, five_points
from .image import DecodedImage, decode_image
from .landmarks import NATIVE_FACE_SIDE, SIZE, FaceMesh, Mesh, roi_from_mesh, roi_transform, warp_crop
from .pose import Pose, estimate_pose
from .measures import FaceMeasures, measure
from .quality import assess
from .schemas import ScoreOptions
from .scoring.features import FEATURES, FaceGeometry, face_features, feature_vector
from .scoring.scorer import Scorer
from .scoring.trust import confidence, withheld
from .store import ModelStore, inference_errors

PRESENCE_THRESHOLD = 0.5  # FaceMesh's own face-presence check rejects detector false positives
INFERENCE_ERRORS = inference_errors()
# A face cropped from a reduced decode may be upsampled this much into FaceMesh's (or SFace's)
# input; a smaller face is cropped from the working-size pixels, decoded for it.
MAX_CROP_UPSAMPLING = 4 / 3


@dataclass
class _Face:
    det: Detection
    mesh: Mesh | None = None
    pose: Pose | None = None
    measures: FaceMeasures | None = None
    features: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    score: float = 0.0
    components: dict[str, float] = field(default_factory=dict)


@dataclass
class _Item:
    image: DecodedImage | None = None
    error: errors.AurumError | None = None
    faces: list[_Face] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    def __init__(self, settings: Settings | None = None, store: ModelStore | None = None) -> None:
        self.settings = settings or Settings.from_env()
        s = self.settings
        self.store = store or ModelStore(s.models_dir, device=s.device, device_id=s.gpus[0] if s.gpus else 0,
                                         threads=s.ort_threads)
        self.detector = make_detector(self.store, s.detector, s.detector_size)
        self.geometry = FaceGeometry.from_json(self.store.data("face_geometry"))
        self.facemesh = FaceMesh(self.store, self.geometry.mirror)
        self.sface = SFace(self.store)
        self.scorer = Scorer(self.store, s.scorer)

    def model_names(self, embedding: bool = True) -> list[str]:
        names = [self.detector.name, self.facemesh.name, self.scorer.name]
        if embedding or self.scorer.needs_embedding:
            names.append(self.sface.name)
        return names

    def load(self, embedding: bool = True, warm_up: bool = True) -> None:
        """Create every session now (workers call this after fork) and warm each up."""
        self.store.load(self.model_names(embedding), warm_up=warm_up)

    def versions(self) -> dict[str, str]:
        return self.store.versions(self.model_names(True) + ["face_geometry"])

    # --- scoring ----------------------------------------------------------------------------
    def score(self, data: bytes, options: ScoreOptions | None = None) -> dict[str, Any]:
        result = self.score_many([data], options)[0]
        if isinstance(result, errors.AurumError):
            raise result
        return result

    def score_many(self, images: list[bytes], options: ScoreOptions | None = None
                   ) -> list[dict[str, Any] | errors.AurumError]:
        opts = options or ScoreOptions()
        s = self.settings
        max_faces = opts.max_faces or s.max_faces
        min_size = s.min_face_size if opts.min_face_size is None else opts.min_face_size
        threshold = opts.detection_threshold or s.detection_threshold
        items = [_Item() for _ in images]

        for item, data in zip(items, images):
            with _timed(item.timings, "decode"):
                try:
                    item.image = decode_image(data, s, detect_side=s.detector_size)
                except errors.AurumError as exc:
                    item.error = exc
        live = [it for it in items if it.error is None]

        with self._stage(live, "detect"):
            found = self.detector.detect([it.image.rgb for it in live], threshold) if live else []
        for item, dets in zip(live, found):
            scale = item.image.scale
            dets = [d for d in dets if d.size / scale >= min_size]
            dets.sort(key=lambda d: -d.area)
            item.faces = [_Face(det=d) for d in dets[:max_faces]]

        faces = [(it, f) for it in live for f in it.faces]
        with self._stage(live, "landmarks"):
            # Two passes (see aurum.landmarks): the detector's crop places the face, the first
            # mesh's own five points make the crop the final mesh is measured on.
            # Only the final pass runs mirrored too; with one pass the detector's crop is the final one.
            from_mesh = lambda face: roi_from_mesh(  # noqa: E731
                face.mesh, estimate_pose(face.mesh.points, self.geometry.mean_shape).scale)
            passes = [(lambda face: roi_transform(face.det), s.mesh_passes == 1)]
            passes += [(from_mesh, k == s.mesh_passes - 1) for k in range(1, s.mesh_passes)]
            for roi, mirrored in passes:
                crops = [self._crop(item.image, face.det, roi(face)) for item, face in faces]
                for (item, face), mesh in zip(faces, self.facemesh.run(*zip(*crops), mirrored=mirrored) if crops else []):
                    face.mesh = mesh
        for item in live:
            item.faces = [f for f in item.faces if f.mesh.presence >= PRESENCE_THRESHOLD]
            if not item.faces:
                item.error = errors.NoFace()
        live = [it for it in live if it.error is None]
        faces = [(it, f) for it in live for f in it.faces]

        if opts.return_embedding or self.scorer.needs_embedding:
            with self._stage(live, "embedding"):
                aligned = []
                for it, f in faces:
                    pixels, k = _face_pixels(it.image, f.det)
                    points = five_points(f.det.keypoints)  # YuNet's, as OpenCV aligns
                    points = f.mesh.five_points() if points is None else points
                    aligned.append(align(pixels, points * k + (k - 1) / 2))  # rgb -> pixels, pixel centres
                for (_, face), emb in zip(faces, self.sface.run(aligned)):
                    face.embedding = emb

        with self._stage(live, "score"):
            for _, face in faces:
                face.pose = estimate_pose(face.mesh.points, self.geometry.mean_shape)
                face.measures = measure(face.mesh, self.geometry.crop_face_width(face.mesh, face.pose))
                face.features = face_features(face.mesh, face.pose, self.geometry, face.measures.blur)
            if faces:
                matrix = np.stack([feature_vector(f.features) for _, f in faces])
                embs = np.stack([f.embedding for _, f in faces]) if self.scorer.needs_embedding else None
                scores, components = self.scorer.run(matrix, embs)
                for i, (_, face) in enumerate(faces):
                    face.score = float(scores[i])
                    face.components = ({n: float(components[i, k]) for k, n in enumerate(FEATURES)}
                                       if components is not None else {})

        versions = self.versions()
        results: list[dict[str, Any] | errors.AurumError] = []
        for item in items:
            if item.error is not None:
                results.append(item.error)
                continue
            with _timed(item.timings, "quality"):
                assembled = self._assemble(item, opts, versions)
            if opts.quality_gate and not assembled["faces"][0]["quality"]["passed"]:
                reasons = assembled["faces"][0]["quality"]["reasons"]
                results.append(errors.QualityGateFailed(
                    "The face does not meet the quality requirements: " + ", ".join(reasons) + ".",
                    reasons=reasons))
                continue
            assembled["timings_ms"] = {k: round(v, 3) for k, v in item.timings.items()}
            assembled["timings_ms"]["total"] = round(sum(item.timings.values()), 3)
            results.append(assembled)
        return results

    # --- helpers ----------------------------------------------------------------------------
    def _crop(self, image: DecodedImage, det: Detection, crop_to_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FaceMesh's crop of one face for a crop -> ``image.rgb`` transform. A face too small
        in a reduced decode is cropped from the working-size pixels instead; the transform still
        maps to ``image.rgb``, so the landmarks land in the same frame either way."""
        pixels, k = _face_pixels(image, det)
        # rgb pixel centre x -> pixels' k x + (k - 1) / 2 (a pixel of rgb covers k x k of them)
        to_pixels = np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])
        return warp_crop(pixels, (to_pixels @ np.vstack([crop_to_image, [0.0, 0.0, 1.0]]))[:2], SIZE), crop_to_image

    @contextmanager
    def _stage(self, items: list[_Item], name: str) -> Iterator[None]:
        """Time a batched stage; each image is charged its share (by face count) of the time."""
        start = time.perf_counter()
        try:
            yield
        except INFERENCE_ERRORS as exc:  # ONNX Runtime's own failures: retryable; anything else is a bug
            raise errors.InferenceFailed(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        elapsed = (time.perf_counter() - start) * 1000
        weights = [max(len(it.faces), 1) for it in items]
        total = sum(weights) or 1
        for item, w in zip(items, weights):
            item.timings[name] = item.timings.get(name, 0.0) + elapsed * w / total

    def _assemble(self, item: _Item, opts: ScoreOptions, versions: dict[str, str]) -> dict[str, Any]:
        img = item.image
        inv = 1.0 / img.scale
        faces = []
        for face in item.faces:
            x0, y0, x1, y1 = (float(v) * inv for v in face.det.box)
            pose = {"yaw": round(face.pose.yaw, 2), "pitch": round(face.pose.pitch, 2), "roll": round(face.pose.roll, 2)}
            quality = assess(face.mesh, face.pose, face.measures, face.det.size * inv, img.rgb.shape[:2], self.settings)
            unjudgeable = withheld(quality["reasons"])
            out: dict[str, Any] = {
                "box": [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)],
                "confidence": round(face.det.score, 4),
                "keypoints": {k: [round(float(v[0]) * inv, 1), round(float(v[1]) * inv, 1)]
                              for k, v in face.det.keypoints.items()},
                "pose": pose,
                "quality": quality,
                "score": {"value": None if unjudgeable and not opts.always_score else round(face.score, 2),
                          "confidence": confidence(quality, pose, face.mesh.disagreement, self.settings),
                          "withheld": unjudgeable,
                          "components": {k: round(v, 4) for k, v in face.components.items()},
                          "features": {k: round(v, 5) for k, v in face.features.items()},
                          "model": f"{self.scorer.name}@{self.scorer.version}"},
            }
            if opts.return_landmarks:
                pts = face.mesh.points * inv
                out["landmarks"] = [[round(float(x), 1), round(float(y), 1), round(float(z), 1)] for x, y, z in pts]
            if opts.return_embedding:
                out["embedding"] = [round(float(v), 6) for v in face.embedding]
            faces.append(out)
        return {
            "image": {"width": img.width, "height": img.height, "sha256": img.sha256, "format": img.format},
            "faces": faces,
            "primary_face": 0,
            "timings_ms": {},
            "models": versions,
            "degraded": False,
            "degraded_reason": None,
        }


def _face_pixels(image: DecodedImage, det: Detection) -> tuple[np.ndarray, float]:
    """The pixels a face's model crops come from, and how many per ``image.rgb`` pixel."""
    return image.pixels_for(det.long_side * MAX_CROP_UPSAMPLING, NATIVE_FACE_SIDE)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000
