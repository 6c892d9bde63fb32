"""The model store: manifest, checksums, providers and GPU assignment."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aurum import errors, store as store_module
from aurum.config import Settings
from aurum.store import ModelStore, choose_providers, gpu_for_child


def test_manifest_lists_every_model_with_its_facts(settings: Settings) -> None:
    store = ModelStore(settings.models_dir)
    for name in ("yunet", "blazeface_short", "blazeface_full", "facemesh", "sface", "geometric_scorer",
                 "face_geometry"):
        spec = store.spec(name)
        for key in ("task", "version", "file", "sha256", "licence", "source"):
            assert spec.get(key), f"{name} lacks {key}"
        if spec["file"].endswith(".onnx"):
            assert spec["inputs"] and spec["outputs"] and "preprocessing" in spec
        assert (store.dir / spec["file"]).is_file()


def test_verify_loads_and_warms_every_model(settings: Settings) -> None:
    report = ModelStore(settings.models_dir, threads=1).verify()
    assert report and all(row["ok"] for row in report), report
    assert all(row["provider"] == "CPUExecutionProvider" for row in report if "provider" in row)


def test_checksum_mismatch_is_refused(tmp_path, settings: Settings) -> None:
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir, models)
    path = models / "facemesh.onnx"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    store = ModelStore(models)
    with pytest.raises(errors.ModelIntegrityError) as info:
        store.session("facemesh")
    assert info.value.code == "MODEL_CHECKSUM_MISMATCH"
    failed = {row["name"] for row in store.verify() if not row["ok"]}
    assert failed == {"facemesh"}


def test_missing_manifest_and_unknown_model(tmp_path, settings: Settings) -> None:
    with pytest.raises(errors.ModelUnavailable):
        ModelStore(tmp_path)
    with pytest.raises(errors.ModelUnavailable):
        ModelStore(settings.models_dir).spec("no_such_model")


def test_no_session_before_it_is_needed(settings: Settings) -> None:
    store = ModelStore(settings.models_dir)
    assert store.loaded() == {}
    store.session("blazeface_short")
    assert set(store.loaded()) == {"blazeface_short@mediapipe-0.6.0.1"}


def test_gpu_assignment_is_round_robin() -> None:
    assert [gpu_for_child(i, (0, 1)) for i in range(5)] == [0, 1, 0, 1, 0]
    assert [gpu_for_child(i, (3,)) for i in range(3)] == [3, 3, 3]
    assert [gpu_for_child(i, (2, 5, 7)) for i in range(4)] == [2, 5, 7, 2]
    with pytest.raises(ValueError):
        gpu_for_child(0, ())


def test_cuda_without_provider_falls_back_to_cpu_with_one_warning(monkeypatch, caplog) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(store_module, "_warned_no_cuda", False)
    with caplog.at_level(logging.WARNING, logger="aurum.store"):
        assert choose_providers("cuda", 1) == ["CPUExecutionProvider"]
        assert choose_providers("cuda", 1) == ["CPUExecutionProvider"]
    assert len([r for r in caplog.records if "CUDA" in r.getMessage()]) == 1


def test_cuda_provider_gets_the_device_id(monkeypatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers("cuda", 3) == [("CUDAExecutionProvider", {"device_id": 3}), "CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


SERVICE_SIDE = ("flask", "celery", "redis", "kombu", "service", "api", "workers")


def test_core_package_imports_no_web_queue_or_service_code() -> None:
    """Every module under aurum/, every import statement in it (function-local ones too): none
    reaches Flask, Celery, Redis or the service layer, except the CLI's Redis-admin commands
    (``aurum keys``, ``aurum cache``), which import them inside their own functions."""
    import ast

    core = Path(__file__).resolve().parents[2] / "aurum"
    modules = sorted(core.rglob("*.py"))
    assert len(modules) > 25
    offending = []
    for path in modules:
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in SERVICE_SIDE]
            if bad and not (path.name == "cli.py" and id(node) not in top_level):
                offending.append(f"{path.relative_to(core.parent)}:{node.lineno} {bad}")
    assert offending == []
    code = ("import sys, json, aurum.pipeline, aurum.cli, aurum.client, aurum.fallback; "
            f"print(json.dumps([m for m in {SERVICE_SIDE!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
