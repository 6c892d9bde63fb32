"""Several versions of a model side by side: the manifest's registry, refs, and pipelines that
serve another version on the same sessions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aurum import errors
from aurum.config import Settings
from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions
from aurum.scoring.scorer import Scorer, rescore
from aurum.store import ModelStore

from aurum.scoring import geometric
from tests.helpers.models import CANDIDATE_VERSION, LIVE_SCORER, with_candidate
from tests.helpers.photos import photo_bytes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return with_candidate(tmp_path_factory.mktemp("models"))


def test_a_second_version_is_registered_beside_the_default(models) -> None:
    folder, ref = models
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    assert manifest["models"]["geometric_scorer"]["version"] == geometric.VERSION  # the default is untouched
    entry = manifest["registry"]["geometric_scorer"][CANDIDATE_VERSION]
    assert entry["file"] == f"geometric_scorer-{CANDIDATE_VERSION}.onnx" and len(entry["sha256"]) == 64
    assert entry["created"]["by"] == "tests/helpers/models.py" and entry["created"]["code"]["aurum"]

    store = ModelStore(folder)
    assert store.ref("geometric_scorer") == LIVE_SCORER
    assert store.ref(ref) == ref
    assert ref in store.all_refs() and LIVE_SCORER in store.all_refs()
    with pytest.raises(errors.ModelUnavailable):
        store.ref("geometric_scorer@9.9.9")
    rows = {(r["name"], r["version"]): r for r in store.describe()}
    assert rows[("geometric_scorer", geometric.VERSION)]["default"] and not rows[("geometric_scorer", CANDIDATE_VERSION)]["default"]
    assert all(r["created"] and r["licence"] for r in rows.values())  # every entry says who made it


def test_the_cli_lists_and_verifies_every_version(models) -> None:
    folder, ref = models
    out = subprocess.run([sys.executable, "-m", "aurum", "--models-dir", str(folder), "models", "list", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    listed = {f"{r['name']}@{r['version']}" for r in json.loads(out.stdout)}
    assert {ref, LIVE_SCORER, "yunet@2023mar-fp32.1"} <= listed
    verify = subprocess.run([sys.executable, "-m", "aurum", "--models-dir", str(folder), "models", "verify"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"geometric_scorer   {CANDIDATE_VERSION}" in verify.stdout


def test_two_scorer_versions_served_by_one_store(models) -> None:
    folder, ref = models
    live = Pipeline(Settings.from_env(models_dir=str(folder), ort_threads=1))
    candidate = live.variant({"scorer": ref})
    assert candidate.store is live.store and candidate.roles["detector"] == live.roles["detector"]
    data = photo_bytes("astronaut.png")
    a, b = live.score(data), candidate.score(data, ScoreOptions(always_score=True))
    assert a["models"]["geometric_scorer"] == geometric.VERSION and b["models"]["geometric_scorer"] == CANDIDATE_VERSION
    assert a["faces"][0]["score"]["model"] == LIVE_SCORER
    assert b["faces"][0]["score"]["model"] == ref
    assert a["faces"][0]["score"]["features"] == b["faces"][0]["score"]["features"]  # the same measurements
    assert abs(a["faces"][0]["score"]["value"] - b["faces"][0]["score"]["value"]) > 0.5  # other weights
    # a shadow scorer from the features a result carries matches running the pipeline with it
    assert rescore(Scorer(live.store, ref), a) == pytest.approx([b["faces"][0]["score"]["value"]], abs=0.01)
    assert len({k for k in live.store.loaded() if k.startswith("geometric_scorer@")}) == 2


def test_another_detector_version_serves_by_role(models) -> None:
    folder, _ = models
    live = Pipeline(Settings.from_env(models_dir=str(folder), ort_threads=1))
    other = live.variant({"detector": "blazeface_full"})
    result = other.score(photo_bytes("astronaut.png"))
    assert "blazeface_full" in result["models"] and "yunet" not in result["models"]
    with pytest.raises(errors.ModelUnavailable):
        live.variant({"scorer": "geometric_scorer@0.0.0"})
