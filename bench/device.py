"""Each model on one execution device: time per image by batch size, the pipeline per selfie,
and how far the device's outputs are from the CPU's on the same inputs.

    python3 bench/device.py [--device cuda] [--batches 1,2,4,8,16,32] [--repeats 20] [--images 8]
                            [--json bench/results/device-cuda.json]

``--device`` defaults to AURUM_DEVICE (the worker's setting); ``cuda`` needs onnxruntime-gpu
(``pip install onnxruntime-gpu`` in place of onnxruntime) and exits 2, saying so, when ONNX
Runtime has no CUDA provider (``--allow-cpu`` runs on the CPU instead, and the JSON says so).

For every ONNX model the pipeline runs (YuNet, FaceMesh, SFace, the geometric scorer, and the
BlazeFace detectors a route can pick) it feeds real inputs made from the test photos the way the
pipeline makes them (YuNet at 640 and 320, FaceMesh crops, SFace aligned faces, the scorer's
features), stacked to each batch size, and reports the median ms per call and per image and
the speed-up per image against batch 1. Then it scores unique selfies end to end on the
device (``Pipeline.score``, the default profile) and, off the CPU, the largest difference from
the CPU's results on the same images: score points, landmark error as a fraction of the
inter-ocular distance, and embedding cosine. A GPU check on a lent machine is this one command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aurum.config import Settings  # noqa: E402
from aurum.embed import align, five_points  # noqa: E402
from aurum.image import decode_image  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402
from aurum.scoring.features import feature_vector  # noqa: E402
from aurum.store import CUDA  # noqa: E402
from bench.pipeline import selfies  # noqa: E402


def model_inputs(pipeline: Pipeline, images: list[bytes]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per model, one feed per image (batch 1), made as the pipeline makes its inputs."""
    from aurum.geometry import letterbox

    s, store = pipeline.settings, pipeline.store
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    for data in images:
        img = decode_image(data, s)
        det = pipeline.detector.full.detect([img.rgb], s.detection_threshold)[0][:1]
        crops, _ = pipeline.facemesh.crops(img.rgb, det)
        result = pipeline.score(data, ScoreOptions())
        for size in (640, 320):  # YuNet as the full and the first stage see a photo
            h, w = img.rgb.shape[:2]
            ratio = min(1.0, size / max(h, w))
            nw, nh = round(w * ratio), round(h * ratio)
            padded = np.zeros((-(-nh // 32) * 32, -(-nw // 32) * 32, 3), np.float32)
            padded[:nh, :nw] = cv2.resize(img.rgb, (nw, nh))[:, :, ::-1]
            feeds.setdefault(f"yunet@{size}", []).append({"input": padded.transpose(2, 0, 1)[None]})
        for name, side in (("blazeface_short", 128), ("blazeface_full", 192)):
            square, _ = letterbox(img.rgb, side)
            feeds.setdefault(name, []).append(
                {"image": square.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1})
        feeds.setdefault("facemesh", []).append(
            {"image": crops[0][None].astype(np.float32).transpose(0, 3, 1, 2) / 255})
        aligned = align(img.rgb, five_points(det[0].keypoints))
        feeds.setdefault("sface", []).append(
            {"image": np.ascontiguousarray(aligned[None, :, :, ::-1].astype(np.float32).transpose(0, 3, 1, 2))})
        feeds.setdefault(pipeline.scorer.ref, []).append(
            {"features": np.array([feature_vector(result["faces"][0]["score"]["features"])], np.float32)})
    return feeds


def batch_scaling(store, feeds: dict[str, list[dict]], batches: list[int], repeats: int) -> dict:
    """Median ms per call and per image for each model and batch size (a batch stacks the
    images' feeds, cycling through them)."""
    out = {}
    for key, per_image in feeds.items():
        name = key.split("@")[0] if key.startswith("yunet") else key
        session = store.session(name)
        # YuNet's input follows each photo's shape: a batch stacks photos of the first one's
        shape = {k: v.shape for k, v in per_image[0].items()}
        same = [f for f in per_image if {k: v.shape for k, v in f.items()} == shape]
        rows = []
        for batch in batches:
            feed = {k: np.concatenate([same[i % len(same)][k] for i in range(batch)]) for k in same[0]}
            session.run(None, feed)  # warm-up: the first run at a new shape plans memory
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - start) * 1000)
            call = statistics.median(times)
            rows.append({"batch": batch, "ms_per_call": round(call, 4), "ms_per_image": round(call / batch, 4)})
        one = rows[0]["ms_per_image"]
        for row in rows:
            row["speedup_per_image"] = round(one / row["ms_per_image"], 2) if row["ms_per_image"] else None
        out[key] = {"provider": store._loaded[store.ref(name)].provider, "rows": rows}
    return out


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[33, :2] - landmarks[263, :2]))


def end_to_end(pipeline: Pipeline, images: list[bytes], rounds: int) -> tuple[float, list[dict]]:
    """Median ms per selfie through ``Pipeline.score`` (best of ``rounds``), and the results."""
    options = ScoreOptions(return_landmarks=True, return_embedding=True)
    results = [pipeline.score(data, options) for data in images]  # warm-up, and the outputs
    best = None
    for _ in range(rounds):
        times = []
        for data in images:
            start = time.perf_counter()
            pipeline.score(data, ScoreOptions())
            times.append((time.perf_counter() - start) * 1000)
        best = min(best or float("inf"), statistics.median(times))
    return best, results


def drift(reference: list[dict], device: list[dict]) -> dict:
    """Largest differences of the device's results from the CPU's, face by face."""
    score, mesh, cosine = 0.0, 0.0, 1.0
    for ref, got in zip(reference, device):
        for a, b in zip(ref["faces"], got["faces"]):
            if a["score"]["value"] is not None and b["score"]["value"] is not None:
                score = max(score, abs(a["score"]["value"] - b["score"]["value"]))
            la, lb = np.asarray(a["landmarks"], float), np.asarray(b["landmarks"], float)
            mesh = max(mesh, float(np.linalg.norm(la - lb, axis=1).mean()) / _eye_distance(la))
            ea, eb = np.asarray(a["embedding"], float), np.asarray(b["embedding"], float)
            cosine = min(cosine, float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))))
    return {"max_score_diff": round(score, 3), "max_landmark_error_iod": round(mesh, 5),
            "min_embedding_cosine": round(cosine, 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=os.environ.get("AURUM_DEVICE", "cpu"), choices=("cpu", "cuda"))
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--images", type=int, default=8, help="unique selfies (inputs and end to end)")
    parser.add_argument("--rounds", type=int, default=3, help="end-to-end rounds (the best median is kept)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU if CUDA is missing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    batches = sorted({int(b) for b in args.batches.split(",")})

    import onnxruntime as ort

    available = ort.get_available_providers()
    device = args.device
    if device == "cuda" and CUDA not in available:
        if not args.allow_cpu:
            print(f"--device cuda: this onnxruntime {ort.__version__} has no CUDA provider (it has "
                  f"{', '.join(available)}); install onnxruntime-gpu, or pass --allow-cpu.", file=sys.stderr)
            return 2
        device = "cpu"
    settings = Settings.from_env(device=device)
    pipeline = Pipeline(settings)
    images = selfies(args.images)
    report = {"asked": args.device, "device": device, "onnxruntime": ort.__version__, "providers": available,
              "images": len(images), "repeats": args.repeats}
    report["models"] = batch_scaling(pipeline.store, model_inputs(pipeline, images), batches, args.repeats)
    report["pipeline_ms_per_selfie"], results = end_to_end(pipeline, images, args.rounds)
    report["pipeline_ms_per_selfie"] = round(report["pipeline_ms_per_selfie"], 2)
    if device != "cpu":
        cpu = Pipeline(Settings.from_env(device="cpu"))
        report["cpu_pipeline_ms_per_selfie"], reference = end_to_end(cpu, images, args.rounds)
        report["cpu_pipeline_ms_per_selfie"] = round(report["cpu_pipeline_ms_per_selfie"], 2)
        report["drift_from_cpu"] = drift(reference, results)

    print(f"device {device} (asked {args.device}), onnxruntime {ort.__version__}")
    print(f"{'model':22} {'provider':22} " + " ".join(f"{'b=' + str(b):>9}" for b in batches) + "   ms/image")
    for key, row in report["models"].items():
        print(f"{key:22} {row['provider']:22} "
              + " ".join(f"{r['ms_per_image']:9.3f}" for r in row["rows"])
              + f"   x{row['rows'][-1]['speedup_per_image']} at b={batches[-1]}")
    print(f"pipeline per selfie: {report['pipeline_ms_per_selfie']} ms"
          + (f" (CPU {report['cpu_pipeline_ms_per_selfie']} ms); drift from the CPU: {report['drift_from_cpu']}"
             if "drift_from_cpu" in report else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
