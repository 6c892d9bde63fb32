"""The model store: the manifest, checksums and one ONNX Runtime session per model version.

A model is named ``name`` (the manifest's default version of it) or ``name@version`` (any
version registered side by side, :mod:`aurum.registry`); both resolve to one canonical
``name@version``, under which its session is kept. Sessions are created lazily (or all at once by :meth:`ModelStore.load`), never at import time,
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


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name@version`` -> (name, version); a bare ``name`` -> (name, None): its default."""
    name, _, version = ref.partition("@")
    return name, version or None


@dataclass
class LoadedModel:
    name: str
    version: str
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
        # "models": each name's default version (what runs unless a route says otherwise);
        # "registry" (schema 2): further versions of a name, side by side, each a full entry
        self.specs: dict[str, dict[str, Any]] = self.manifest["models"]
        self.registry: dict[str, dict[str, dict[str, Any]]] = {}
        for name, spec in self.specs.items():
            self.registry[name] = {spec["version"]: spec}
        for name, versions in self.manifest.get("registry", {}).items():
            self.registry.setdefault(name, {}).update(versions)

    # --- manifest ---------------------------------------------------------------------------
    def ref(self, ref: str) -> str:
        """The canonical ``name@version`` of ``ref`` (a bare name: its default version)."""
        name, version = split_ref(ref)
        if version is None:
            return f"{name}@{self.spec(name)['version']}"
        self.spec(ref)
        return ref

    def spec(self, ref: str) -> dict[str, Any]:
        name, version = split_ref(ref)
        try:
            return self.specs[name] if version is None else self.registry[name][version]
        except KeyError:
            raise errors.ModelUnavailable(f"Model {ref!r} is not in the manifest.", model=name) from None

    def path(self, ref: str) -> Path:
        return self.dir / self.spec(ref)["file"]

    def versions(self, refs: list[str] | None = None) -> dict[str, str]:
        """name -> version of ``refs`` (default: every default version)."""
        return {split_ref(r)[0]: self.spec(r)["version"] for r in (refs or self.specs)}

    def onnx_models(self) -> list[str]:
        return [n for n, s in self.specs.items() if s["file"].endswith(".onnx")]

    def data(self, ref: str) -> Any:
        """A JSON data entry of the manifest (e.g. the canonical face geometry)."""
        path = self.path(ref)
        self._check(ref, path)
        return json.loads(path.read_text())

    # --- sessions ---------------------------------------------------------------------------
    def session(self, ref: str) -> Any:
        model = self._loaded.get(ref)
        if model is None:  # a bare name or a version not loaded yet
            key = self.ref(ref)
            with self._lock:
                model = self._loaded.get(key) or self._load(key)
            self._loaded.setdefault(ref, model)
        return model.session

    def load(self, names: list[str] | None = None, warm_up: bool = True) -> dict[str, LoadedModel]:
        for name in names or self.onnx_models():
            self.session(name)
            if warm_up:
                self.warm_up(name)
        return self.loaded()

    def unload(self, refs: list[str]) -> None:
        """Forget these versions' sessions (a routed version no longer routed to): they are freed
        once no run holds them."""
        with self._lock:
            for key in [k for k, m in self._loaded.items() if f"{m.name}@{m.version}" in refs]:
                del self._loaded[key]

    def loaded(self) -> dict[str, LoadedModel]:
        """Canonical ``name@version`` -> the loaded model."""
        return {k: m for k, m in self._loaded.items() if "@" in k}

    def warm_up(self, name: str) -> float:
        """One inference on zeros of the declared input shapes; returns milliseconds."""
        session = self.session(name)
        feeds = {i.name: np.zeros(_concrete(i.shape), dtype=_np_type(i.type)) for i in session.get_inputs()}
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1000

    def _check(self, ref: str, path: Path) -> None:
        name = split_ref(ref)[0]
        if not path.is_file():
            raise errors.ModelUnavailable(f"Model file {path} is missing.", model=name)
        if self.verify_checksums:
            actual = sha256_file(path)
            if actual != self.spec(ref)["sha256"]:
                raise errors.ModelIntegrityError(
                    f"{path.name}: sha256 {actual[:12]}... does not match the manifest.", model=name)

    def _load(self, ref: str) -> LoadedModel:
        import onnxruntime as ort

        name, version = split_ref(ref)
        path = self.path(ref)
        self._check(ref, path)
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
        model = LoadedModel(name=name, version=version, spec=self.spec(ref), session=session,
                            provider=session.get_providers()[0],
                            load_ms=(time.perf_counter() - start) * 1000)
        self._loaded[ref] = model
        return model

    # --- reporting --------------------------------------------------------------------------
    def all_refs(self) -> list[str]:
        """Every registered version, ``name@version``, defaults first within each name."""
        return [f"{n}@{v}" for n, versions in self.registry.items()
                for v in sorted(versions, key=lambda v: v != self.specs.get(n, {}).get("version"))]

    def describe(self, loaded_only: bool = False) -> list[dict[str, Any]]:
        rows = []
        for ref in self.all_refs():
            name, version = split_ref(ref)
            spec, loaded = self.spec(ref), self._loaded.get(ref)
            if loaded_only and loaded is None:
                continue
            rows.append({
                "name": name, "task": spec.get("task"), "version": version,
                "default": self.specs.get(name, {}).get("version") == version,
                "file": spec["file"], "sha256": spec["sha256"], "licence": spec.get("licence"),
                "created": spec.get("created"),
                "provider": loaded.provider if loaded else None,
                "load_ms": round(loaded.load_ms, 1) if loaded else None,
            })
        return rows

    def verify(self) -> list[dict[str, Any]]:
        """Checksums, load and one warm-up inference for every version of every model."""
        report = []
        for ref in self.all_refs():
            name, version = split_ref(ref)
            row: dict[str, Any] = {"name": name, "version": version, "ok": False}
            try:
                if self.spec(ref)["file"].endswith(".onnx"):
                    self.session(ref)
                    row["load_ms"] = round(self._loaded[ref].load_ms, 1)
                    row["warm_up_ms"] = round(self.warm_up(ref), 2)
                    row["provider"] = self._loaded[ref].provider
                else:
                    self.data(ref)
                row["ok"] = True
            except errors.AurumError as exc:
                row["error"] = exc.to_dict()["error"]
            report.append(row)
        return report


def _concrete(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def _np_type(ort_type: str) -> Any:
    return {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}.get(ort_type, np.float32)
