"""How often the drift verdict fires on traffic that has not changed, and how often on traffic
that has: real scores of the development set's photos, under the ordinary edits of
bench/robustness.py (the unshifted population) and under shifts of it (darkened, blurred,
over-exposed copies of the same edits).

Each trial splits the unshifted results at random into a reference and a window of equal size
(two samples of one population: any verdict is a false alarm), and draws a window of the same size
from each shifted pool against the reference (any verdict missed is a miss). The verdict is
service/comparison.py's, with the default thresholds (PSI >= 0.25 and chi-square p < 0.001).

    python3 -m bench.drift                  # -> bench/results/drift.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from aurum.config import Settings
from aurum.errors import AurumError
from aurum.pipeline import Pipeline
from bench.robustness import ORDINARY, _gain, _png, load_faces
from service import comparison

ROOT = Path(__file__).resolve().parent.parent


def _decoded(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


SHIFTS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "darkened x0.35": lambda rgb, face: _gain(rgb, 0.35),
    "over-exposed x2.5": lambda rgb, face: _gain(rgb, 2.5),
    "blurred 6% of the face": lambda rgb, face: cv2.GaussianBlur(rgb, (0, 0), 0.06 * face["box"][2]),
}


def summaries(pipeline: Pipeline, photos: list[Path], edits: list[str], shifts: list[str]
              ) -> tuple[list[dict[str, int]], dict[str, list[dict[str, int]]]]:
    """Per image, its window counts: the unshifted pool (each photo under each edit) and each
    shifted pool (the shift applied to each of those images)."""
    unshifted: list[dict[str, int]] = []
    shifted: dict[str, list[dict[str, int]]] = {name: [] for name in shifts}

    def counts(data: bytes) -> dict[str, int]:
        result = pipeline.score_many([data])[0]
        if isinstance(result, AurumError):  # no face found: an image with none
            return {"images": 1, "faces": 0, "n:0": 1}
        return comparison.summarise(result, result["timings_ms"]["total"])

    for _, _, rgb in load_faces(photos):
        ref = pipeline.score(_png(rgb))["faces"][0]
        for edit in edits:
            data = ORDINARY[edit](rgb, ref)
            unshifted.append(counts(data))
            edited = _decoded(data)
            for name in shifts:
                shifted[name].append(counts(_png(SHIFTS[name](edited, ref))))
    return unshifted, shifted


def trials(unshifted: list[dict[str, int]], shifted: dict[str, list[dict[str, int]]], n: int, psi: float,
           p: float, seed: int = 0, size: int | None = None) -> dict[str, Any]:
    """``size``: images per window (default: half the unshifted pool)."""
    rng = random.Random(seed)
    half = min(size or len(unshifted) // 2, len(unshifted) // 2)
    total = comparison._sum
    null_psi: dict[str, list[float]] = {m: [] for m in comparison.MEASURES}
    alarms, faces = 0, []
    caught = {name: 0 for name in shifted}
    for _ in range(n):
        pool = unshifted[:]
        rng.shuffle(pool)
        ref, window = total(pool[:half]), total(pool[half:2 * half])
        min_faces = min(ref.get("faces", 0), window.get("faces", 0))
        faces.append(min_faces)
        verdict = comparison.drift(ref, window, psi, p, min_faces)
        alarms += verdict["drifted"]
        for m in comparison.MEASURES:
            null_psi[m].append(verdict["measures"][m]["psi"])
        for name, images in shifted.items():
            drawn = total(rng.sample(images, half))
            caught[name] += comparison.drift(ref, drawn, psi, p, min(min_faces, drawn.get("faces", 0)))["drifted"]
    return {
        "trials": n, "images_per_window": half, "faces_per_window_median": int(np.median(faces)),
        "false_alarm_rate": alarms / n,
        "null_psi": {m: {"median": round(float(np.median(v)), 4), "p99": round(float(np.percentile(v, 99)), 4)}
                     for m, v in null_psi.items()},
        "detection_rate": {name: caught[name] / n for name in shifted},
    }


def main(argv: list[str] | None = None) -> int:
    from tests.helpers.devset import devset_photos

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/drift.json")
    args = ap.parse_args(argv)
    start = time.time()
    pipeline = Pipeline(Settings.from_env())
    pipeline.load(embedding=False)
    edits = list(ORDINARY)
    unshifted, shifted = summaries(pipeline, devset_photos(), edits, list(SHIFTS))
    report = {"photos": len(devset_photos()), "edits": edits, "shifts": list(SHIFTS),
              "psi_threshold": 0.25, "p_threshold": 0.001,
              **trials(unshifted, shifted, args.trials, 0.25, 0.001),
              "small_windows": trials(unshifted, shifted, args.trials, 0.25, 0.001, size=40),
              "seconds": round(time.time() - start, 1)}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "edits"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
