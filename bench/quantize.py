"""Cheaper FaceMesh variants, measured before any is adopted: INT8 (ONNX Runtime's static
quantization, calibrated on real face crops, QDQ and QOperator formats, per-channel weights) and
FP16 (when ``onnxconverter-common`` is installed), against the FP32 model the pipeline runs.

    python3 bench/quantize.py [--json bench/results/quantize.json]

FaceMesh is the model that costs most (six runs a face by default). The crops are the pipeline's
own FaceMesh inputs on the development set and four edits of each photo (half of them calibrate,
the others are measured). Reported per variant: milliseconds per crop (batches of 6, one thread,
median of 15 runs, FP32 timed first and last so the machine's drift shows) and the landmarks'
drift from FP32 in inter-ocular distances. A variant is worth adopting only if it is faster and
its drift is well under the mesh's own noise under ordinary edits (0.3-0.4 % of the IOD,
``aurum/landmarks.py``). Nothing here changes ``models/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                      quantize_static)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import robustness  # noqa: E402
import aurum.landmarks as landmarks  # noqa: E402
from aurum.config import Settings  # noqa: E402
from aurum.geometry import planar  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402

EDITS = ("resize 0.5x", "jpeg q30", "rotate +10", "gamma 1.5")


def face_crops() -> list[np.ndarray]:
    """The FaceMesh inputs the pipeline makes for the development set's photos and their edits."""
    crops: list[np.ndarray] = []
    run = landmarks.FaceMesh.run

    def recording(self, batch, transforms, mirrored=True):  # noqa: ANN001
        crops.extend(batch)
        return run(self, batch, transforms, mirrored)

    landmarks.FaceMesh.run = recording
    try:
        pipeline = Pipeline(Settings.from_env())
        pipeline.load(embedding=False)
        forced = ScoreOptions(always_score=True)
        for _, _, rgb in robustness.load_faces(robustness.default_photos()):
            face = robustness._primary(pipeline.score_many([robustness._png(rgb)], forced)[0])
            for name in EDITS:
                pipeline.score_many([robustness.ORDINARY[name](rgb, face)], forced)
    finally:
        landmarks.FaceMesh.run = run
    return crops


def variants(source: Path, calibration: list[np.ndarray], folder: Path) -> dict[str, Path]:
    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):  # noqa: ANN201
            crop = next(self.items, None)
            return None if crop is None else {"image": planar([crop], 1 / 255)}

    # per-channel quantization needs opset 13's DequantizeLinear axis; FaceMesh ships at opset 11
    upgraded, prepared = folder / "opset13.onnx", folder / "prepared.onnx"
    onnx.save(version_converter.convert_version(onnx.load(source), 13), upgraded)
    quant_pre_process(str(upgraded), str(prepared))
    out = {}
    for name, fmt in (("int8 QDQ", QuantFormat.QDQ), ("int8 QOperator", QuantFormat.QOperator)):
        path = folder / f"{name.replace(' ', '-')}.onnx"
        quantize_static(str(prepared), str(path), Reader(), quant_format=fmt, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
        out[name] = path
    try:
        from onnxconverter_common import float16
    except ImportError:
        print("fp16: skipped (pip install onnxconverter-common)")
    else:
        path = folder / "fp16.onnx"
        onnx.save(float16.convert_float_to_float16(onnx.load(source), keep_io_types=True), path)
        out["fp16"] = path
    return out


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(path: Path, x: np.ndarray, reference: np.ndarray | None) -> dict:
    s = session(path)
    points = s.run(["landmarks"], {"image": x})[0].reshape(len(x), 468, 3)
    row: dict = {}
    if reference is not None:
        iod = np.linalg.norm(reference[:, landmarks.RIGHT_EYE, :2].mean(1)
                             - reference[:, landmarks.LEFT_EYE, :2].mean(1), axis=1)
        drift = np.linalg.norm(points[:, :, :2] - reference[:, :, :2], axis=2).mean(1) / iod
        row.update(drift_iod_median=round(float(np.median(drift)), 5),
                   drift_iod_p90=round(float(np.percentile(drift, 90)), 5), drift_iod_max=round(float(drift.max()), 5))
    batch = x[:6]
    for _ in range(3):
        s.run(["landmarks"], {"image": batch})
    times = []
    for _ in range(15):
        start = time.perf_counter()
        s.run(["landmarks"], {"image": batch})
        times.append((time.perf_counter() - start) / len(batch) * 1000)
    row["ms_per_crop"] = round(float(np.median(times)), 3)
    return row, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/quantize.json")
    args = ap.parse_args()
    crops = face_crops()
    order = np.random.default_rng(0).permutation(len(crops))
    half = len(crops) // 2
    calibration, test = [crops[i] for i in order[:half]], [crops[i] for i in order[half:]]
    source = ROOT / "models/facemesh.onnx"
    x = planar(test, 1 / 255)
    report = {"model": "facemesh", "calibration_crops": len(calibration), "test_crops": len(test), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = variants(source, calibration, Path(tmp))
        report["variants"]["fp32"], reference = measure(source, x, None)
        for name, path in paths.items():
            report["variants"][name] = measure(path, x, reference)[0]
        report["variants"]["fp32 (again)"] = measure(source, x, None)[0]
    for name, row in report["variants"].items():
        print(f"{name:16s} {json.dumps(row)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
