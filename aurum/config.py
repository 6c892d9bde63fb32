"""The scoring core's configuration, read from environment variables with documented defaults.

Each setting is declared once, with its variable name, default and a line of documentation;
``aurum config`` prints them and the README table is the same list. The job service extends
these with its own (:mod:`service.config`); the core never reads those.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

REPO_ROOT = Path(__file__).resolve().parent.parent


def setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


def _parse(kind: type, raw: str) -> Any:
    if kind is bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if kind is tuple:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    return kind(raw)


@dataclass(frozen=True)
class Settings:
    """The scoring core's settings (models, input limits, detection, quality). The job service
    extends them with its own (:class:`service.config.ServiceSettings`)."""

    # Settings with a fixed set of values, checked when the settings are built.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "device": ("cpu", "cuda"), "detector": ("yunet", "blazeface_full", "blazeface_short")}

    # --- models and runtime ---------------------------------------------------------------
    models_dir: str = setting("AURUM_MODELS_DIR", str(REPO_ROOT / "models"),
                              "Folder holding manifest.json and the ONNX files.")
    device: str = setting("AURUM_DEVICE", "cpu", "Execution device: cpu or cuda.")
    gpus: tuple = setting("AURUM_GPUS", (0,), "Comma-separated GPU ids; worker child i takes ids[i % n].")
    ort_threads: int = setting("AURUM_ORT_THREADS", 0,
                               "ONNX Runtime intra-op threads per process (0: one per core).")
    detector: str = setting("AURUM_DETECTOR", "yunet", "Face detector: yunet, blazeface_full or blazeface_short.")
    detector_size: int = setting("AURUM_DETECTOR_SIZE", 640,
                                 "YuNet input long side, pixels (320 is 4x faster but misses small faces); "
                                 "large JPEGs are first decoded at the DCT scale nearest above it.")
    detector_first_size: int = setting("AURUM_DETECTOR_FIRST_SIZE", 320,
                                       "YuNet's first detection size: the full AURUM_DETECTOR_SIZE run follows only "
                                       "where a face could be missed or placed coarsely (none found, several, or one under "
                                       "8 % of the photo's long side), and where an embedding is made; 0: the full size only.")
    scorer: str = setting("AURUM_SCORER", "geometric_scorer",
                          "Scoring model: a manifest name (its default version) or name@version.")
    # --- input limits -----------------------------------------------------------------------
    max_image_bytes: int = setting("AURUM_MAX_IMAGE_BYTES", 10 * 1024 * 1024, "Largest accepted upload, bytes.")
    max_image_pixels: int = setting("AURUM_MAX_IMAGE_PIXELS", 40_000_000,
                                    "Largest accepted width x height, checked from the header before decoding.")
    max_decode_pixels: int = setting("AURUM_MAX_DECODE_PIXELS", 12_000_000,
                                     "Largest width x height decoded at full size (PNG, WebP; JPEGs decode at a "
                                     "reduced DCT size): bounds a decode's memory and time.")
    max_jpeg_scans: int = setting("AURUM_MAX_JPEG_SCANS", 64,
                                  "Most scans in a (progressive) JPEG; photos have 1-12.")
    max_png_chunks: int = setting("AURUM_MAX_PNG_CHUNKS", 256,
                                  "Most PNG chunks other than image data (text, metadata); photos have a few.")
    min_image_side: int = setting("AURUM_MIN_IMAGE_SIDE", 32, "Smallest accepted width or height, pixels.")
    work_max_side: int = setting("AURUM_WORK_MAX_SIDE", 2048,
                                 "Largest long side faces are cropped from (JPEG: decoded at reduced DCT size, "
                                 "and only when a face is too small in the detection-size decode).")
    mesh_passes: int = setting("AURUM_MESH_PASSES", 2,
                               "FaceMesh passes per face whose meshes are averaged: 3, 2 or 1, after "
                               "AURUM_MESH_PLACEMENT passes that only place the next crop. Each pass's crop is "
                               "re-placed from the previous pass's mesh (the first from the detector's). With "
                               "AURUM_MIRROR_SYMMETRIC each pass is two model runs (plain and mirrored), without it "
                               "only the last.")
    mesh_placement: int = setting("AURUM_MESH_PLACEMENT", 2,
                                  "Leading FaceMesh passes that only level and place the crop (0, 1 or 2): YuNet's "
                                  "keypoints barely follow a head's roll, so the first crops of a tilted head are "
                                  "rolled and their meshes skewed (aurum.landmarks.mean_mesh).")
    mirror_symmetric: bool = setting("AURUM_MIRROR_SYMMETRIC", True,
                                     "Mirror-flip invariance by construction: detect on the photo and on its mirror and "
                                     "place the FaceMesh crops from their average, every landmark pass run plain and "
                                     "mirrored (a flip moves a score by at most 0.09 on the development set; off: 4.6, "
                                     "and about half the cost per selfie with AURUM_MESH_PASSES=2).")
    # --- detection defaults -----------------------------------------------------------------
    max_faces: int = setting("AURUM_MAX_FACES", 20, "Default cap on faces per image (largest first).")
    min_face_size: int = setting("AURUM_MIN_FACE_SIZE", 24, "Default smallest face side reported, pixels.")
    detection_threshold: float = setting("AURUM_DETECTION_THRESHOLD", 0.6, "Default detector confidence threshold.")
    # --- quality thresholds (ISO/IEC 29794-5 style components) ------------------------------
    q_min_sharpness: float = setting("AURUM_Q_MIN_SHARPNESS", 0.3,
                                     "Quality: least sharpness (0-1; 0.3 is a blur of ~2.2 % of the face width).")
    q_min_brightness: float = setting("AURUM_Q_MIN_BRIGHTNESS", 0.2, "Quality: darkest mean face luminance (0-1).")
    q_max_brightness: float = setting("AURUM_Q_MAX_BRIGHTNESS", 0.85, "Quality: brightest mean face luminance (0-1).")
    q_min_contrast: float = setting("AURUM_Q_MIN_CONTRAST", 0.08, "Quality: least luminance std-dev in the face (0-1).")
    q_min_face_px: int = setting("AURUM_Q_MIN_FACE_PX", 64, "Quality: smallest face box side, pixels.")
    q_max_yaw: float = setting("AURUM_Q_MAX_YAW", 30.0, "Quality: largest |yaw|, degrees.")
    q_max_pitch: float = setting("AURUM_Q_MAX_PITCH", 25.0, "Quality: largest |pitch|, degrees.")
    q_max_roll: float = setting("AURUM_Q_MAX_ROLL", 30.0, "Quality: largest |roll|, degrees.")
    q_min_eye_openness: float = setting("AURUM_Q_MIN_EYE_OPENNESS", 0.15, "Quality: least eye aspect ratio.")
    q_max_truncation: float = setting("AURUM_Q_MAX_TRUNCATION", 0.02,
                                      "Quality: largest share of landmarks outside the image.")
    q_min_eyes_visible: float = setting("AURUM_Q_MIN_EYES_VISIBLE", 0.35,
                                        "Quality: least eye-region visibility (0-1) of the less visible eye.")
    q_min_mouth_visible: float = setting("AURUM_Q_MIN_MOUTH_VISIBLE", 0.4, "Quality: least mouth-region visibility (0-1).")
    q_min_illumination: float = setting("AURUM_Q_MIN_ILLUMINATION", 0.45,
                                        "Quality: least illumination uniformity (darker / brighter half, 0-1).")
    q_min_dynamic_range: float = setting("AURUM_Q_MIN_DYNAMIC_RANGE", 0.5,
                                         "Quality: least luminance entropy of the face / 8 bits.")
    q_max_clipped: float = setting("AURUM_Q_MAX_CLIPPED", 0.1,
                                   "Quality: largest share of face pixels clipped bright (or crushed dark).")

    # --- logging ---------------------------------------------------------------------------
    log_level: str = setting("AURUM_LOG_LEVEL", "INFO", "Log level of the API and the workers (JSON lines).")

    def __post_init__(self) -> None:
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                env = self.__dataclass_fields__[name].metadata["env"]
                raise ValueError(f"{env}: one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.mesh_passes not in (1, 2, 3):
            raise ValueError(f"AURUM_MESH_PASSES: 1, 2 or 3, not {self.mesh_passes}")
        if self.mesh_placement not in (0, 1, 2):
            raise ValueError(f"AURUM_MESH_PLACEMENT: 0, 1 or 2, not {self.mesh_placement}")
        if not 0 <= self.q_min_sharpness < 0.8:  # confidence rises from it to 0.8 (aurum.scoring.trust)
            raise ValueError(f"AURUM_Q_MIN_SHARPNESS: at least 0 and below 0.8, not {self.q_min_sharpness}")
        for name in ("q_max_yaw", "q_max_pitch", "q_max_roll"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AURUM_{name.upper()}: above 0, not {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw != "":
                kind = type(f.default)
                try:
                    values[f.name] = _parse(kind, raw)
                except ValueError as exc:
                    raise ValueError(f"{f.metadata['env']}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, doc) for every setting: the documentation table."""
        return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)]
