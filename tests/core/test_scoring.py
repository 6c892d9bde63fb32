"""Scorers: the default ONNX graph is the documented formula; a trained scorer learns a known
function from rated photos and plugs in by name."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageEnhance

from aurum import errors
from aurum.config import Settings
from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions
from aurum.scoring import geometric
from aurum.scoring.features import FEATURES
from aurum.scoring.train import train_from_csv

from tests.helpers.photos import photo_rgb


def test_geometric_graph_is_the_documented_formula(settings: Settings) -> None:
    session = ort.InferenceSession(f"{settings.models_dir}/geometric_scorer.onnx")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.3, (16, len(FEATURES))).astype(np.float32)
    score, components = session.run(["score", "components"], {"features": x})
    c, w, floor = (np.array([table[f] for f in FEATURES]) for table in (geometric.CENTRES, geometric.WIDTHS, geometric.FLOORS))
    weights = np.array([geometric.WEIGHTS[f] for f in FEATURES])
    expected_components = 1 / (1 + np.exp((np.log(x + floor) - np.log(c + floor)) / w))
    assert np.allclose(components, expected_components, atol=1e-5)
    assert np.allclose(score[:, 0], 100 * expected_components @ weights, atol=1e-3)
    assert weights.sum() == pytest.approx(1.0)


def test_geometric_scale_anchors(settings: Settings) -> None:
    """The model card's anchors: every feature at 0 scores ~100, at the typical (median) face 50,
    far beyond typical ~0; the scale is monotone in every feature."""
    session = ort.InferenceSession(f"{settings.models_dir}/geometric_scorer.onnx")
    centre = np.array([[geometric.CENTRES[f] for f in FEATURES]], dtype=np.float32)
    run = lambda x: float(session.run(["score"], {"features": np.asarray(x, dtype=np.float32)})[0][0, 0])  # noqa: E731
    assert run(centre) == pytest.approx(50.0, abs=1e-3)
    assert run(np.zeros_like(centre)) > 85
    assert run(centre * 50) < 10
    for i in range(len(FEATURES)):
        worse = centre.copy()
        worse[0, i] *= 1.5
        assert run(worse) < 50


def test_committed_scorer_is_what_the_builder_makes(settings: Settings) -> None:
    built = geometric.build_model()
    session = ort.InferenceSession(built.SerializeToString())
    committed = ort.InferenceSession(f"{settings.models_dir}/geometric_scorer.onnx")
    x = np.random.default_rng(1).uniform(0, 0.3, (8, len(FEATURES))).astype(np.float32)
    assert np.allclose(session.run(None, {"features": x})[0], committed.run(None, {"features": x})[0])


def rated_photos(folder) -> list:
    """48 varied real-face photos: crops, scales, rotations, light and blur of the two portraits."""
    rng = np.random.default_rng(42)
    paths = []
    for i in range(48):
        rgb = photo_rgb("astronaut.png" if i % 3 else "camera.png")
        img = Image.fromarray(rgb).rotate(float(rng.uniform(-15, 15)), resample=Image.BICUBIC)
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
        side = int(rng.integers(300, 700))
        arr = np.asarray(img.resize((side, side), Image.BILINEAR))
        if i % 4 == 0:
            arr = cv2.GaussianBlur(arr, (0, 0), float(rng.uniform(0.5, 2.0)))
        if i % 2:
            arr = arr[:, ::-1]
        path = folder / f"face{i:02d}.jpg"
        Image.fromarray(np.ascontiguousarray(arr)).save(path, quality=int(rng.integers(60, 95)))
        paths.append(path)
    return paths


@pytest.mark.slow
def test_train_scorer_recovers_a_known_rating_function(tmp_path, settings: Settings) -> None:
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir, models)
    run_settings = Settings.from_env(models_dir=str(models), ort_threads=1)
    photos = rated_photos(tmp_path)
    # The truth: a known linear function of the features, on a 1-10 scale.
    truth = np.array([-40.0, -15.0, -20.0, -30.0])
    pipe = Pipeline(run_settings)
    rows, expected, faceless = [], [], 0
    for path in photos:
        try:
            feats = pipe.score(path.read_bytes(), None)["faces"][0]["score"]["features"]
        except errors.NoFace:  # a small blurred copy can lose its face: the trainer must skip it
            rows.append((path.name, 5.0))
            faceless += 1
            continue
        rating = 9.0 + float(np.dot(truth, [feats[f] for f in FEATURES]))
        rows.append((path.name, rating))
        expected.append((path, rating))
    ratings = tmp_path / "ratings.csv"
    with open(ratings, "w", newline="") as fh:
        csv.writer(fh).writerows([("image", "rating"), *rows])

    report = train_from_csv(ratings, run_settings, name="synthetic", folds=5)
    assert faceless <= 6 and report["rows"] == 48 - faceless >= 40
    assert len(report["skipped"]) == faceless
    assert report["pearson_r"] >= 0.95

    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["models"]["synthetic"]["trained_on_ratings"] is True
    assert manifest["models"]["synthetic"]["created"]["data"]["rows"] == report["rows"]
    assert (models / "cards/synthetic.md").is_file()
    trained = Pipeline(Settings.from_env(models_dir=str(models), scorer="synthetic", ort_threads=1))
    lo, hi = min(r for _, r in expected), max(r for _, r in expected)
    for path, rating in expected[:6]:
        got = trained.score(path.read_bytes(), ScoreOptions(always_score=True))["faces"][0]["score"]
        assert got["model"].startswith("synthetic@")
        assert got["value"] == pytest.approx((rating - lo) / (hi - lo) * 100, abs=8)

    # trained again under the same name: a candidate beside the default, which stays as it was
    again = train_from_csv(ratings, run_settings, name="synthetic", folds=5)
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["models"]["synthetic"]["version"] == report["version"] != again["version"]
    entry = manifest["registry"]["synthetic"][again["version"]]
    assert entry["file"] == f"synthetic-{again['version']}.onnx" and (models / entry["card"]).is_file()
    assert entry["card"] != manifest["models"]["synthetic"]["card"]
    candidate = Pipeline(Settings.from_env(models_dir=str(models), scorer=again["ref"], ort_threads=1))
    assert candidate.score(expected[0][0].read_bytes(), ScoreOptions(always_score=True))["faces"][0]["score"]["model"] == again["ref"]
