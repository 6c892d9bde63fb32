"""Landmarks against MediaPipe's own face-mesh pipeline, on the same photos.

    /tmp/venv-mp/bin/python scripts/mediapipe_reference.py PHOTOS... --out ref.json --max-faces 1
    python3 bench/landmarks.py ref.json [--json bench/results/landmarks.json]

For every photo where mediapipe 0.10.14 (BlazeFace short range + FaceMesh, static mode) found a
face, Aurum's 468 points for the same face are compared with MediaPipe's: the normalised mean
error (mean point distance / inter-ocular distance of MediaPipe's eye centres) and the mesh
scale (RMS spread about the centroid, Aurum / MediaPipe). ``make`` builds a reference set from
the development set (as photographed, mirrored, rotated +-8 degrees, halved).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aurum.config import Settings  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.regions import LEFT_EYE, RIGHT_EYE  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402


def compare(pipeline: Pipeline, reference: dict) -> dict:
    rows = []
    for image in reference["images"]:
        if not image["face_mesh"]:
            continue
        ref = np.array(image["face_mesh"][0])
        result = pipeline.score_many([Path(image["path"]).read_bytes()], ScoreOptions(return_landmarks=True))[0]
        if not isinstance(result, dict):
            rows.append({"path": image["path"], "error": type(result).__name__})
            continue
        centre = ref[:, :2].mean(0)
        face = min(result["faces"], key=lambda f: float(np.linalg.norm(np.mean(f["landmarks"], 0)[:2] - centre)))
        pts = np.array(face["landmarks"])
        iod = float(np.linalg.norm(ref[RIGHT_EYE, :2].mean(0) - ref[LEFT_EYE, :2].mean(0)))
        nme = float(np.linalg.norm(pts[:, :2] - ref[:, :2], axis=1).mean() / iod)
        spread = lambda p: float(np.sqrt(((p[:, :2] - p[:, :2].mean(0)) ** 2).sum(1).mean()))  # noqa: E731
        rows.append({"path": image["path"], "nme": round(nme, 4), "scale": round(spread(pts) / spread(ref), 4)})
    ok = [r for r in rows if "nme" in r]
    nme = np.array([r["nme"] for r in ok])
    scale = np.array([r["scale"] for r in ok])
    return {"faces": len(ok), "errors": len(rows) - len(ok),
            "nme_median": round(float(np.median(nme)), 4), "nme_p90": round(float(np.quantile(nme, 0.9)), 4),
            "nme_max": round(float(nme.max()), 4),
            "scale_median": round(float(np.median(scale)), 4),
            "scale_within_3pct": int((np.abs(scale - 1) <= 0.03).sum()), "rows": rows}


def make(out_dir: Path) -> list[Path]:
    """Variants of the development photos for the reference (mediapipe finds near faces only, so
    group photos are left out)."""
    import cv2
    from PIL import Image

    from tests.helpers.devset import devset_photos

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in devset_photos():
        if src.stem.startswith(("friends", "featgroup")):
            continue
        rgb = np.asarray(Image.open(src).convert("RGB"))
        h, w = rgb.shape[:2]
        variants = {"id": rgb, "flip": rgb[:, ::-1],
                    "half": cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)}
        for angle in (8, -8):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            variants[f"r{angle}"] = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        for name, img in variants.items():
            path = out_dir / f"{src.stem}__{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", nargs="?", type=Path, help="JSON from scripts/mediapipe_reference.py")
    ap.add_argument("--make", type=Path, help="write the development set's variants to this folder and exit")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.make:
        print("\n".join(str(p) for p in make(args.make)))
        return 0
    pipeline = Pipeline(Settings.from_env(ort_threads=2))
    report = compare(pipeline, json.loads(args.reference.read_text()))
    print({k: v for k, v in report.items() if k != "rows"})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
