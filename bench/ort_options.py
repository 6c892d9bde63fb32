"""ONNX Runtime session options against the fast profile, in one run: graph optimisation level,
the CPU memory arena and memory-pattern planning, one ONNX Runtime thread
(as in a worker child).

    python3 bench/ort_options.py [--images 48] [--rounds 3] [--json bench/results/ort_options.json]

Each configuration builds its own pipeline (the model store's sessions, with the options changed
by wrapping ``onnxruntime.InferenceSession`` while it loads, for this measurement only) and scores the same unique
selfies; configurations are interleaved round by round, and the medians are compared with the
store's own settings (ORT_ENABLE_ALL, arena on, memory pattern off).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import onnxruntime as ort  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aurum.config import Settings  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402
from pipeline import selfies  # noqa: E402

LEVELS = ort.GraphOptimizationLevel
CONFIGS = {
    "store default (ALL, arena, no mem pattern)": {},
    "graph level EXTENDED": {"graph_optimization_level": LEVELS.ORT_ENABLE_EXTENDED},
    "graph level BASIC": {"graph_optimization_level": LEVELS.ORT_ENABLE_BASIC},
    "no CPU memory arena": {"enable_cpu_mem_arena": False},
    "memory pattern on (ORT's default)": {"enable_mem_pattern": True},
}


def build(overrides: dict) -> Pipeline:
    """A loaded fast-profile pipeline whose sessions get ``overrides`` on top of the store's
    options (the store's call to ``InferenceSession`` is wrapped while it loads)."""
    original = ort.InferenceSession

    def session(path, sess_options=None, **kwargs):
        for name, value in overrides.items():
            setattr(sess_options, name, value)
        return original(path, sess_options=sess_options, **kwargs)

    ort.InferenceSession = session
    try:
        pipeline = Pipeline(Settings.from_env(ort_threads=1))
        pipeline.load(embedding=False)
    finally:
        ort.InferenceSession = original
    return pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    images = selfies(args.images)
    options = ScoreOptions()
    pipelines = {name: build(overrides) for name, overrides in CONFIGS.items()}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, pipeline in pipelines.items():
            for data in images[:4]:
                pipeline.score(data, options)  # warm
            start = time.perf_counter()
            for data in images:
                pipeline.score(data, options)
            times[name].append((time.perf_counter() - start) * 1000 / len(images))
    base = statistics.median(times[next(iter(CONFIGS))])
    report = {}
    for name, samples in times.items():
        ms = statistics.median(samples)
        report[name] = {"ms_per_image": round(ms, 2), "relative_to_default": round(ms / base, 3)}
        print(f"{name:42s} {ms:7.2f} ms/image   x{ms / base:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
