"""Write an ONNX model into a models folder and record it in that folder's manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from ..store import sha256_file


def write_model(models_dir: str | Path, name: str, model: onnx.ModelProto, entry: dict[str, Any]) -> Path:
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.onnx"
    onnx.save(model, path)
    manifest_path = models_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
        "schema_version": 1, "models": {}}
    manifest["models"][name] = {**entry, "file": path.name, "sha256": sha256_file(path),
                                "bytes": path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
