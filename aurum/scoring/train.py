"""``aurum train-scorer``: fit a scorer on rated photos and export it as an ONNX model.

The head is a ridge regression (standardised inputs, alpha by internal cross-validation) on the
face features, optionally with the SFace embedding. It is evaluated by k-fold cross-validation
(Pearson r, MAE, RMSE), refitted on all rows, converted with skl2onnx and recorded in the
manifest: a new name becomes its default version (``AURUM_SCORER=<name>`` selects it), a further
version of an existing name is registered beside it as a candidate (``aurum models route``). Ratings are mapped linearly onto 0-100
using their observed range.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import errors
from ..config import Settings
from ..schemas import ScoreOptions
from .features import FEATURES
from .manifest_entry import creation_record, write_model

MIN_ROWS = 10


def read_ratings(path: str | Path) -> list[tuple[Path, float]]:
    path = Path(path)
    rows = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or row[0].startswith("#"):
                continue
            try:
                rating = float(row[1])
            except (IndexError, ValueError):
                if i == 0:
                    continue  # a header line
                raise ValueError(f"{path}:{i + 1}: expected 'image_path,rating'") from None
            image = Path(row[0])
            rows.append((image if image.is_absolute() else path.parent / image, rating))
    return rows


def extract(rows: list[tuple[Path, float]], settings: Settings, with_embedding: bool, chunk: int = 16
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feature rows (primary face) and ratings; images that fail are reported, not fatal."""
    from ..pipeline import Pipeline

    pipeline = Pipeline(settings)
    options = ScoreOptions(return_embedding=with_embedding, max_faces=1)
    x, y, skipped = [], [], []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        results = pipeline.score_many([p.read_bytes() for p, _ in part], options)
        for (path, rating), result in zip(part, results):
            if isinstance(result, errors.AurumError):
                skipped.append(f"{path}: {result.code}")
                continue
            face = result["faces"][result["primary_face"]]
            row = [face["score"]["features"][f] for f in FEATURES]
            if with_embedding:
                row += face["embedding"]
            x.append(row)
            y.append(rating)
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float64), skipped


def fit_and_evaluate(x: np.ndarray, y100: np.ndarray, folds: int) -> tuple[Any, dict[str, float]]:
    def model():
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))

    predicted = cross_val_predict(model(), x, y100, cv=KFold(folds, shuffle=True, random_state=0))
    metrics = {
        "pearson_r": float(np.corrcoef(predicted, y100)[0, 1]),
        "mae": float(np.abs(predicted - y100).mean()),
        "rmse": float(np.sqrt(((predicted - y100) ** 2).mean())),
    }
    return model().fit(x, y100), metrics


def train_from_csv(ratings: str | Path, settings: Settings, name: str = "trained_scorer",
                   with_embedding: bool = False, folds: int = 5, out_dir: str | Path | None = None) -> dict[str, Any]:
    rows = read_ratings(ratings)
    x, y, skipped = extract(rows, settings, with_embedding)
    if len(y) < max(MIN_ROWS, folds):
        raise ValueError(f"only {len(y)} usable rated photos; at least {max(MIN_ROWS, folds)} are needed")
    lo, hi = float(y.min()), float(y.max())
    if hi <= lo:
        raise ValueError("all ratings are equal; nothing to learn")
    y100 = (y - lo) / (hi - lo) * 100.0
    model, metrics = fit_and_evaluate(x, y100, folds)

    n_in = x.shape[1]
    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_in]))],
                          final_types=[("score", FloatTensorType([None, 1]))], target_opset=13)
    out = Path(out_dir or settings.models_dir)
    version = dt.datetime.now(dt.timezone.utc).strftime("1.0.0+%Y%m%d%H%M%S")
    ratings_sha256 = hashlib.sha256(Path(ratings).read_bytes()).hexdigest()
    manifest = out / "manifest.json"
    doc = json.loads(manifest.read_text()) if manifest.exists() else {}
    known = name in doc.get("models", {})
    taken = {doc["models"][name]["version"]} if known else set()
    taken |= set(doc.get("registry", {}).get(name, {}))
    base, n = version, 1
    while version in taken:  # two trainings within a second
        n += 1
        version = f"{base}.{n}"
    card_name = f"cards/{name}-{version}.md" if known else f"cards/{name}.md"  # a candidate has its own
    card = out / card_name
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(
        f"# {name}\n\nA ridge-regression scorer trained by `aurum train-scorer` on {len(y)} rated photos "
        f"({'features + SFace embedding' if with_embedding else 'face features'}).\n\n"
        f"{folds}-fold cross-validation: Pearson r {metrics['pearson_r']:.3f}, MAE {metrics['mae']:.2f}, "
        f"RMSE {metrics['rmse']:.2f} (0-100 scale; ratings {lo:g}..{hi:g} mapped to 0..100).\n\n"
        "It reproduces whatever the ratings encode, biases included: audit the ratings before use.\n")
    entry = {
        "task": "scoring", "version": version, "feature_set": list(FEATURES),
        "needs_embedding": with_embedding,
        "inputs": [{"name": "features", "shape": ["N", n_in], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": ["N", 1], "dtype": "float32"}],
        "preprocessing": {"features": "aurum.scoring.features" + (" + sface embedding" if with_embedding else "")},
        "licence": "same as the ratings data", "card": card_name,
        "source": {"package": "aurum train-scorer", "ratings_sha256": ratings_sha256},
        "trained_on_ratings": True,
        "created": creation_record("aurum train-scorer", {
            "ratings": str(ratings), "ratings_sha256": ratings_sha256,
            "rows": int(len(y)), "with_embedding": with_embedding}),
        "training": {"rows": int(len(y)), "skipped": len(skipped), "folds": folds,
                     "rating_range": [lo, hi], **{k: round(v, 4) for k, v in metrics.items()}},
    }
    path = write_model(out, name, onx, entry)
    return {"name": name, "version": version, "ref": f"{name}@{version}", "file": str(path), "rows": int(len(y)), "skipped": skipped,
            "rating_range": [lo, hi], **metrics}
