"""Measure the geometric scorer's constants on the development set, as its docstring defines them.

    python3 bench/calibrate.py [--json bench/results/calibration.json]

Every face of the development set (``bench/robustness.py``'s faces) is scored clean and after each
ordinary edit (``robustness.ORDINARY``), always scored; from the features:

- centre: the median clean value over the faces;
- floor: twice the mean within-face standard deviation over the edits;
- width: 1.5 x the standard deviation between faces of ln(clean + floor);
- weight: proportional to (between-face SD / mean within-face SD of ln(value + floor))^2.

It prints the four dicts to paste into ``aurum/scoring/geometric.py`` (the constants stay literal
there, so a change to them is a reviewed diff), and what the scorer built from them would do on
the same photos: the median / p90 / max score shift of an edit and the between / within spread.
Run ``bench/robustness.py`` after rebuilding the model for the figures that count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import robustness  # noqa: E402
from aurum.config import Settings  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402
from aurum.scoring.features import FEATURES  # noqa: E402

FLOOR_SPREADS = 2.0
WIDTH_SPREADS = 1.5


def collect(pipeline: Pipeline, faces: list) -> list[dict]:
    """Per face: its clean features and each ordinary edit's (None where the face was lost)."""
    forced = ScoreOptions(always_score=True)
    rows = []
    for person, name, rgb in faces:
        clean = robustness._primary(pipeline.score_many([robustness._png(rgb)], forced)[0])
        if clean is None:
            continue
        edits = {}
        for tname, edit in robustness.ORDINARY.items():
            face = robustness._match(pipeline.score_many([edit(rgb, clean)], forced)[0],
                                     robustness._where(tname, rgb, clean), clean)
            edits[tname] = face["score"]["features"] if face else None
        rows.append({"person": person, "photo": name, "clean": clean["score"]["features"], "edits": edits})
    return rows


def _values(row: dict, feature: str) -> np.ndarray:
    return np.array([row["clean"][feature]] + [e[feature] for e in row["edits"].values() if e])


def constants(rows: list[dict]) -> dict[str, dict[str, float]]:
    centres, floors, widths, weights, ratios = {}, {}, {}, {}, {}
    for f in FEATURES:
        clean = np.array([row["clean"][f] for row in rows])
        floor = FLOOR_SPREADS * float(np.mean([_values(row, f).std() for row in rows]))
        between = float(np.log(clean + floor).std())
        within = float(np.mean([np.log(_values(row, f) + floor).std() for row in rows]))
        centres[f], floors[f] = float(np.median(clean)), floor
        widths[f], ratios[f] = WIDTH_SPREADS * between, between / within
        weights[f] = ratios[f] ** 2
    total = sum(weights.values())
    rounded = {f: round(v / total, 3) for f, v in weights.items()}
    largest = max(rounded, key=rounded.get)  # the rounding's remainder, so that they sum to 1
    rounded[largest] = round(rounded[largest] + 1 - sum(rounded.values()), 3)
    return {"centres": {f: round(v, 5) for f, v in centres.items()},
            "floors": {f: round(v, 4) for f, v in floors.items()},
            "widths": {f: round(v, 3) for f, v in widths.items()},
            "weights": rounded,
            "between_over_within": {f: round(v, 1) for f, v in ratios.items()}}


def score(features: dict[str, float], c: dict[str, dict[str, float]]) -> float:
    """The geometric scorer's formula (aurum/scoring/geometric.py), in numpy."""
    return 100 * sum(c["weights"][f] / (1 + np.exp((np.log(max(features[f], 0.0) + c["floors"][f])
                                                    - np.log(c["centres"][f] + c["floors"][f])) / c["widths"][f]))
                     for f in FEATURES)


def simulate(rows: list[dict], c: dict[str, dict[str, float]]) -> dict:
    shifts, within, cleans = [], [], []
    for row in rows:
        base = score(row["clean"], c)
        scores = [base] + [score(e, c) for e in row["edits"].values() if e]
        cleans.append(base)
        within.append(float(np.std(scores)))
        shifts += [abs(s - base) for s in scores[1:]]
    return {"median_shift": round(float(np.median(shifts)), 3), "p90_shift": round(float(np.percentile(shifts, 90)), 2),
            "max_shift": round(float(np.max(shifts)), 2), "clean_range": [round(min(cleans), 1), round(max(cleans), 1)],
            "between_over_within": round(float(np.std(cleans) / np.mean(within)), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/results/calibration.json")
    args = parser.parse_args()
    pipeline = Pipeline(Settings.from_env())
    pipeline.load(embedding=False)
    rows = collect(pipeline, robustness.load_faces(robustness.default_photos()))
    c = constants(rows)
    report = {"faces": len(rows), "constants": c, "simulated": simulate(rows, c)}
    for name, values in c.items():
        if name == "between_over_within":
            print(f"# between-face / within-face spread per feature: {json.dumps(values)}")
            continue
        print(f"{name.upper()} = {json.dumps(values)}")
    print("simulated on the same photos:", json.dumps(report["simulated"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
