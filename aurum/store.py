"""The model store: the manifest, checksums and one ONNX Runtime session per model.

Sessions are created lazily (or all at once by :meth:`ModelStore.load`), never at import time,
so that Celery can fork its children before any session exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import errors

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_warned_no_cuda = False


def inference_errors() -> tuple[type[BaseException], ...]:
    """What ONNX Runtime raises from ``session.run`` (its own exception types): the only
    failures that are retryable ``INFERENCE_FAILED``. Anything else in a stage is a bug."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def choose_providers(device: str, device_id: int = 0) -> list[Any]:
    """The execution providers for ``device``; CUDA falls back to CPU with one warning."""
    global _warned_no_cuda
    if device == "cpu":
        return [CPU]
    if device != "cuda":
        raise errors.ModelUnavailable(f"Unknown device {device!r}; use cpu or cuda.")
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        return [(CUDA, {"device_id": int(device_id)}), CPU]
    if not _warned_no_cuda:
        log.warning("AURUM_DEVICE=cuda but onnxruntime has no CUDA provider "
                    "(available: %s); running on the CPU.", ", ".join(ort.get_available_providers()))
        _warned_no_cuda = True
    return [CPU]


def gpu_for_child(index: int, gpus: tuple[int, ...]) -> int:
    """GPU id for worker child ``index`` (0-based): round-robin over ``gpus``."""
    if not gpus:
        raise ValueError("no GPU ids configured")
    return gpus[index % len(gpus)]


@dataclass
class LoadedModel:
    name: str
    spec: dict[str, Any]
    session: Any
    provider: str
    load_ms: float


class ModelStore:
    """Reads ``manifest.json`` in ``models_dir`` and hands out inference sessions."""

    def __init__(self, models_dir: str | os.PathLike, *, device: str = "cpu", device_id: int = 0,
                 threads: int = 0, verify_checksums: bool = True) -> None:
        self.dir = Path(models_dir)
        self.device = device
        self.device_id = device_id
        self.threads = threads
        self.verify_checksums = verify_checksums
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        manifest_path = self.dir / "manifest.json"
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise errors.ModelUnavailable(f"Cannot read the model manifest {manifest_path}: {exc}") from exc
        self.specs: dict[str, dict[str, Any]] = self.manifest["models"]

    # --- manifest ---------------------------------------------------------------------------
    def spec(self, name: str) -> dict[str, Any]:
        try:
            return self.specs[name]
        except KeyError:
            raise errors.ModelUnavailable(f"Model {name!r} is not in the manifest.") from None

    def path(self, name: str) -> Path:
        return self.dir / self.spec(name)["file"]

    def versions(self, names: list[str] | None = None) -> dict[str, str]:
        return {n: self.specs[n]["version"] for n in (names or self.specs)}

    def onnx_models(self) -> list[str]:
        return [n for n, s in self.specs.items() if s["file"].endswith(".onnx")]

    def data(self, name: str) -> Any:
        """A JSON data entry of the manifest (e.g. the canonical face geometry)."""
        path = self.path(name)
        self._check(name, path)
        return json.loads(path.read_text())

    # --- sessions ---------------------------------------------------------------------------
    def session(self, name: str) -> Any:
        model = self._loaded.get(name)
        if model is None:
            with self._lock:
                model = self._loaded.get(name) or self._load(name)
        return model.session

    def load(self, names: list[str] | None = None, warm_up: bool = True) -> dict[str, LoadedModel]:
        for name in names or self.onnx_models():
            self.session(name)
            if warm_up:
                self.warm_up(name)
        return dict(self._loaded)

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._loaded)

    def warm_up(self, name: str) -> float:
        """One inference on zeros of the declared input shapes; returns milliseconds."""
        session = self.session(name)
        feeds = {i.name: np.zeros(_concrete(i.shape), dtype=_np_type(i.type)) for i in session.get_inputs()}
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1000

    def _check(self, name: str, path: Path) -> None:
        if not path.is_file():
            raise errors.ModelUnavailable(f"Model file {path} is missing.", model=name)
        if self.verify_checksums:
            actual = sha256_file(path)
            if actual != self.specs[name]["sha256"]:
                raise errors.ModelIntegrityError(
                    f"{path.name}: sha256 {actual[:12]}... does not match the manifest.", model=name)

    def _load(self, name: str) -> LoadedModel:
        import onnxruntime as ort

        path = self.path(name)
        self._check(name, path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # BASIC/EXTENDED: ~1.7x slower
        # Input shapes change from image to image (the detector's follows each photo's size,
        # FaceMesh's batch follows the faces of a micro-batch): a memory-pattern plan, made for
        # fixed shapes, is rebuilt each time; without it the fast profile took 0.90, 0.93 and
        # 1.00 of the time in three runs of bench/ort_options.py.
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        providers = choose_providers(self.device, self.device_id)
        start = time.perf_counter()
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise errors.ModelUnavailable(f"{path.name} failed to load: {exc}", model=name) from exc
        model = LoadedModel(name=name, spec=self.specs[name], session=session,
                            provider=session.get_providers()[0],
                            load_ms=(time.perf_counter() - start) * 1000)
        self._loaded[name] = model
        return model

    # --- reporting --------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        rows = []
        for name, spec in self.specs.items():
            loaded = self._loaded.get(name)
            rows.append({
                "name": name, "task": spec.get("task"), "version": spec["version"],
                "file": spec["file"], "sha256": spec["sha256"], "licence": spec.get("licence"),
                "provider": loaded.provider if loaded else None,
                "load_ms": round(loaded.load_ms, 1) if loaded else None,
            })
        return rows

    def verify(self) -> list[dict[str, Any]]:
        """Checksums, load and one warm-up inference for every model."""
        report = []
        for name, spec in self.specs.items():
            row: dict[str, Any] = {"name": name, "version": spec["version"], "ok": False}
            try:
                if spec["file"].endswith(".onnx"):
                    self.session(name)
                    row["load_ms"] = round(self._loaded[name].load_ms, 1)
                    row["warm_up_ms"] = round(self.warm_up(name), 2)
                    row["provider"] = self._loaded[name].provider
                else:
                    self.data(name)
                row["ok"] = True
            except errors.AurumError as exc:
                row["error"] = exc.to_dict()["error"]
            report.append(row)
        return report


def _concrete(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def _np_type(ort_type: str) -> Any:
    return {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}.get(ort_type, np.float32)
