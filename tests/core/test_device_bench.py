"""bench/device.py, the one command a lent GPU machine runs (issue 15): it runs every model at
every batch size on real inputs, and compares a device's results with the CPU's. Here, without
a GPU: on the CPU, and refusing CUDA clearly when ONNX Runtime has no CUDA provider."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
import pytest

from tests.helpers.stack import ROOT


def test_every_model_at_every_batch_size_and_the_pipeline(tmp_path) -> None:
    out = tmp_path / "device.json"
    subprocess.run([sys.executable, "bench/device.py", "--device", "cpu", "--batches", "1,3", "--repeats", "2",
                    "--images", "2", "--rounds", "1", "--json", str(out)], cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["images"] == 2
    assert {"yunet@640", "yunet@320", "facemesh", "sface", "blazeface_full", "blazeface_short"} <= report["models"].keys()
    for name, model in report["models"].items():
        assert model["provider"] == "CPUExecutionProvider", name
        assert [r["batch"] for r in model["rows"]] == [1, 3]
        assert all(r["ms_per_call"] > 0 and r["ms_per_image"] * r["batch"] == pytest.approx(r["ms_per_call"], rel=0.01, abs=1e-3)
                   for r in model["rows"]), name
    assert report["pipeline_ms_per_selfie"] > 0 and "drift_from_cpu" not in report  # the CPU is the reference


def test_results_compared_face_by_face() -> None:
    """The drift a device run reports, on two CPU pipelines (one ONNX Runtime thread against
    the default): the same results to float precision."""
    sys.path.insert(0, str(ROOT))
    from aurum.config import Settings
    from aurum.pipeline import Pipeline
    from bench.device import drift, end_to_end
    from bench.pipeline import selfies

    images = selfies(2)
    _, a = end_to_end(Pipeline(Settings.from_env(ort_threads=1)), images, rounds=1)
    _, b = end_to_end(Pipeline(Settings.from_env(ort_threads=2)), images, rounds=1)
    d = drift(a, b)
    assert d["max_score_diff"] < 0.01 and d["max_landmark_error_iod"] < 1e-3 and d["min_embedding_cosine"] > 0.9999


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_without_a_cuda_provider_is_refused_clearly() -> None:
    done = subprocess.run([sys.executable, "bench/device.py", "--device", "cuda", "--images", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA provider" in done.stderr and "onnxruntime-gpu" in done.stderr
