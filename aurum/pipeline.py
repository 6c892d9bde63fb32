"""The scoring pipeline: bytes in, a result dict (see :mod:`aurum.schemas`) out.

    decode + validate -> detect -> crop + FaceMesh landmarks -> pose
      -> (SFace embedding) -> features -> score -> quality -> result (aurum.results)

:meth:`Pipeline.score_many` runs a list of images with one model call per stage for all the
faces of the batch; :meth:`Pipeline.score` is a batch of one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import cv2
import numpy as np

from . import errors
from .config import Settings
from .detect import Detection, make_staged, symmetric
from .embed import SFace, align, five_points
from .image import DecodedImage, decode_image
from .landmarks import NATIVE_FACE_SIDE, SIZE, FaceMesh, Mesh, mean_mesh, roi_from_mesh, roi_transform, warp_crop
from .pose import Pose, estimate_pose
from .measures import FaceMeasures, measure
from .quality import assess
from .results import FaceResult, document, timed
from .schemas import ScoreOptions
from .scoring.features import FEATURES, FaceGeometry, face_features, feature_vector
from .scoring.scorer import Scorer
from .scoring.trust import confidence
from .store import ModelStore, inference_errors

PRESENCE_THRESHOLD = 0.5  # FaceMesh's own face-presence check rejects detector false positives
INFERENCE_ERRORS = inference_errors()
# A face cropped from a reduced decode may be upsampled this much into FaceMesh's (or SFace's)
# input; a smaller face is cropped from the working-size pixels, decoded for it.
MAX_CROP_UPSAMPLING = 4 / 3


@dataclass
class _Face:
    det: Detection                  # what the crops are placed from (mirror-symmetric by default)
    found: Detection                # the detector's own: reported, and what SFace is aligned on
    presence: float = 0.0           # FaceMesh's face presence, the highest of its passes
    mesh: Mesh | None = None
    pose: Pose | None = None
    measures: FaceMeasures | None = None
    features: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    score: float = 0.0
    components: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Item:
    image: DecodedImage | None = None
    error: errors.AurumError | None = None
    faces: list[_Face] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


ROLES = ("detector", "scorer")  # the models a route (service/routing.py) can choose a version of


class Pipeline:
    def __init__(self, settings: Settings | None = None, store: ModelStore | None = None, tracer: Any = None,
                 models: dict[str, str] | None = None) -> None:
        """``tracer``: an OpenTelemetry tracer (the job service passes one when tracing is on):
        each stage becomes a span named ``aurum.<stage>``, with the batch's image and face counts.
        ``models``: role (:data:`ROLES`) -> ``name`` or ``name@version``, instead of the settings'
        AURUM_DETECTOR / AURUM_SCORER (their default versions)."""
        self.settings = settings or Settings.from_env()
        self.tracer = tracer
        s = self.settings
        self.store = store or ModelStore(s.models_dir, device=s.device, device_id=s.gpus[0] if s.gpus else 0,
                                         threads=s.ort_threads)
        chosen = {"detector": s.detector, "scorer": s.scorer, **(models or {})}
        self.roles = {role: self.store.ref(chosen[role]) for role in ROLES}  # canonical name@version
        self.detector = make_staged(self.store, self.roles["detector"], s.detector_size, s.detector_first_size)
        self.geometry = FaceGeometry.from_json(self.store.data("face_geometry"))
        self.facemesh = FaceMesh(self.store, self.geometry.mirror)
        self.sface = SFace(self.store)
        self.scorer = Scorer(self.store, self.roles["scorer"])

    def variant(self, models: dict[str, str]) -> "Pipeline":
        """This pipeline with other versions for some roles, on the same model store (sessions
        are shared: a version already loaded is not loaded again)."""
        return Pipeline(self.settings, self.store, self.tracer, {**self.roles, **models})

    def model_names(self, embedding: bool = True) -> list[str]:
        names = [self.detector.name, self.facemesh.name, self.scorer.ref]
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
        s = self.settings
        opts = (options or ScoreOptions()).resolve(s)
        items = [_Item() for _ in images]

        with self._span("decode", items):
            for item, data in zip(items, images):
                with timed(item.timings, "decode"):
                    try:
                        item.image = decode_image(data, s, detect_side=s.detector_size)
                    except errors.AurumError as exc:
                        item.error = exc
        live = [it for it in items if it.error is None]

        with self._stage(live, "detect"):
            rgbs = [it.image.rgb for it in live]
            # the mirrored photo, made once (cv2.flip, ~0.1 ms for 640 px): the landmark passes'
            # mirrored crops are cut from it too
            groups = [[it.image.rgb, it.image.mirrored(it.image.rgb)] if s.mirror_symmetric else [it.image.rgb]
                      for it in live]
            embedding = opts.return_embedding or self.scorer.needs_embedding
            found = self.detector.detect(groups, opts.detection_threshold, precise=embedding) if live else []
            if s.mirror_symmetric:
                pairs = [symmetric(p, f, rgb.shape[1]) for (p, f), rgb in zip(found, rgbs)]
            else:
                pairs = [[(d, d) for d in dets] for (dets,) in found]
        for item, dets in zip(live, pairs):
            scale = item.image.scale
            dets = [(d, f) for d, f in dets if d.size / scale >= opts.min_face_size]
            dets.sort(key=lambda pair: -pair[0].area)
            item.faces = [_Face(det=d, found=f) for d, f in dets[:opts.max_faces]]

        faces = [(it, f) for it in live for f in it.faces]
        with self._stage(live, "landmarks"):
            # AURUM_MESH_PASSES passes (see aurum.landmarks): the detector's crop places the face,
            # each mesh's own five points place the next crop. The final pass runs mirrored too;
            # with mirror symmetry every pass does, so that the crop each pass hands on is exactly
            # mirror-equivariant (from the symmetric detection onwards).
            from_mesh = lambda face: roi_from_mesh(  # noqa: E731
                face.mesh, estimate_pose(face.mesh.points, self.geometry.mean_shape).scale)
            # The first AURUM_MESH_PLACEMENT passes only place the next crop (aurum.landmarks.mean_mesh).
            total = s.mesh_placement + s.mesh_passes
            passes = [(lambda face: roi_transform(face.det), total == 1 or s.mirror_symmetric)]
            passes += [(from_mesh, k == total - 1 or s.mirror_symmetric) for k in range(1, total)]
            # The face's mesh is the mean of the other passes' meshes (aurum.landmarks.mean_mesh).
            meshes: dict[int, list[Mesh]] = {id(face): [] for _, face in faces}
            for roi, mirrored in passes:
                crops = [self._crop(item.image, face.det, roi(face)) for item, face in faces]
                # With mirror symmetry the mirrored run's crop is cut from the mirrored photo, not
                # flipped: a flipped photo's pair of crops is then this pair swapped, bit for bit,
                # however OpenCV rounds its sampling (1/32 pixel), which left 0.1-0.3 points that
                # grew with each pass when the crop was flipped instead.
                flipped = [self._crop(item.image, face.det, m, mirror=True) for (item, face), (_, m) in zip(faces, crops)
                           ] if mirrored and s.mirror_symmetric else None
                ran = self.facemesh.run(*zip(*crops), mirrored=mirrored, mirror_crops=flipped) if crops else []
                for (item, face), mesh in zip(faces, ran):
                    face.mesh = mesh
                    face.presence = max(face.presence, mesh.presence)
                    meshes[id(face)].append(mesh)
            for _, face in faces:
                face.mesh = mean_mesh(meshes[id(face)][s.mesh_placement:])
        for item in live:
            # a face is one when any pass's crop says so: a heavily blurred face's re-placed crops
            # drift and their presence falls (the detector's crop still reads it as a face)
            item.faces = [f for f in item.faces if f.presence >= PRESENCE_THRESHOLD]
            if not item.faces:
                item.error = errors.NoFace()
        live = [it for it in live if it.error is None]
        faces = [(it, f) for it in live for f in it.faces]

        if embedding:  # asked for, or the scorer needs it (decided with the detection stage)
            with self._stage(live, "embedding"):
                aligned = []
                for it, f in faces:
                    pixels, k = _face_pixels(it.image, f.det)
                    points = five_points(f.found.keypoints)  # YuNet's own, as OpenCV aligns
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

        with self._stage(live, "quality"):
            for item in live:
                for face in item.faces:
                    face.quality = assess(face.mesh, face.pose, face.measures, face.det.size / item.image.scale,
                                          item.image.rgb.shape[:2], self.settings)

        versions = self.versions()
        results: list[dict[str, Any] | errors.AurumError] = []
        for item in items:
            try:
                if item.error is not None:
                    raise item.error
                results.append(document(item.image, [self._result(f) for f in item.faces], opts, versions,
                                        item.timings))
            except errors.AurumError as exc:
                results.append(exc)
        return results

    # --- helpers ----------------------------------------------------------------------------
    def _result(self, face: _Face) -> FaceResult:
        pose = {"yaw": round(face.pose.yaw, 2), "pitch": round(face.pose.pitch, 2), "roll": round(face.pose.roll, 2)}
        return FaceResult(
            box=tuple(face.found.box), keypoints=face.found.keypoints, quality=face.quality, score=face.score,
            components=face.components, features=face.features,
            model=f"{self.scorer.name}@{self.scorer.version}", detection_confidence=face.found.score, pose=pose,
            score_confidence=confidence(face.quality, pose, face.mesh.disagreement, self.settings),
            landmarks=face.mesh.points, embedding=face.embedding)

    def _crop(self, image: DecodedImage, det: Detection, crop_to_image: np.ndarray, mirror: bool = False
              ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """FaceMesh's crop of one face for a crop -> ``image.rgb`` transform. A face too small
        in a reduced decode is cropped from the working-size pixels instead; the transform still
        maps to ``image.rgb``, so the landmarks land in the same frame either way. ``mirror``:
        the mirror image of that crop, cut from the mirrored pixels (the crop alone)."""
        pixels, k = _face_pixels(image, det)
        # rgb pixel centre x -> pixels' k x + (k - 1) / 2 (a pixel of rgb covers k x k of them)
        to_pixels = np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])
        m = to_pixels @ np.vstack([crop_to_image, [0.0, 0.0, 1.0]])
        if not mirror:
            return warp_crop(pixels, m[:2], SIZE), crop_to_image
        # pixel centres: column i <-> width-1-i in the pixels, and in the crop
        flip = lambda width: np.array([[-1.0, 0.0, width - 1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # noqa: E731
        return warp_crop(image.mirrored(pixels), (flip(pixels.shape[1]) @ m @ flip(SIZE))[:2], SIZE)

    @contextmanager
    def _stage(self, items: list[_Item], name: str) -> Iterator[None]:
        """Time a batched stage; each image is charged its share (by face count) of the time."""
        start = time.perf_counter()
        try:
            with self._span(name, items):
                yield
        except INFERENCE_ERRORS as exc:  # ONNX Runtime's own failures: retryable; anything else is a bug
            raise errors.InferenceFailed(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        elapsed = (time.perf_counter() - start) * 1000
        weights = [max(len(it.faces), 1) for it in items]
        total = sum(weights) or 1
        for item, w in zip(items, weights):
            item.timings[name] = item.timings.get(name, 0.0) + elapsed * w / total


    def _span(self, name: str, items: list[_Item]):
        if self.tracer is None:
            return nullcontext()
        return self.tracer.start_as_current_span(f"aurum.{name}", attributes={
            "aurum.images": len(items), "aurum.faces": sum(len(it.faces) for it in items)})


def _face_pixels(image: DecodedImage, det: Detection) -> tuple[np.ndarray, float]:
    """The pixels a face's model crops come from, and how many per ``image.rgb`` pixel."""
    return image.pixels_for(det.long_side * MAX_CROP_UPSAMPLING, NATIVE_FACE_SIDE)
