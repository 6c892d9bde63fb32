"""Write an ONNX model into a models folder and record it in that folder's manifest.

A name's first version becomes its default (``models``); a further version is registered beside
it (``registry``, schema 2) as a candidate: routing (service/routing.py) can then send traffic to
it, and ``aurum models promote`` make it live, without touching the default. Every entry carries
its creation record: what code and data made it, and when.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import onnx

from .. import __version__
from ..config import REPO_ROOT
from ..store import sha256_file

SCHEMA = 2


def creation_record(tool: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Who made a model version: the tool, Aurum's version and commit, the data, the time."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "by": tool,
            "code": {"aurum": __version__, "commit": commit}, "data": data or {}}


def write_model(models_dir: str | Path, name: str, model: onnx.ModelProto, entry: dict[str, Any],
                default: bool | None = None) -> Path:
    """Save ``model`` and record ``entry`` (with ``version``) under ``name``. ``default``: make it
    the name's default version (None: only when the name has none yet)."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = models_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": {}}
    current = manifest["models"].get(name)
    default = current is None if default is None else default
    path = models_dir / (f"{name}.onnx" if default else f"{name}-{entry['version']}.onnx")
    onnx.save(model, path)
    entry = {**entry, "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if default:
        if current is not None and current["version"] != entry["version"] and current["file"] != path.name:
            manifest.setdefault("registry", {}).setdefault(name, {})[current["version"]] = current
        manifest["models"][name] = entry
        manifest.get("registry", {}).get(name, {}).pop(entry["version"], None)
    else:
        if current is not None and current["version"] == entry["version"]:
            raise ValueError(f"{name}@{entry['version']} is already the default version")
        manifest.setdefault("registry", {}).setdefault(name, {})[entry["version"]] = entry
    manifest["schema_version"] = SCHEMA
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
