"""The default scorer: a transparent formula over the face features, exported as an ONNX graph.

    component_i = exp(-feature_i / scale_i)        (1 for a perfect value, falls toward 0)
    score       = 100 * sum_i weight_i * component_i

It is NOT trained on human ratings (none can be had under a usable licence); the scales put a
typical frontal face from the test photos near the middle of each component's range. Because it
is an ONNX model in the manifest like any other, a trained scorer (``aurum train-scorer``)
replaces it by name.

Run ``python -m aurum.scoring.geometric [MODELS_DIR]`` to (re)write the ONNX file and its
manifest entry.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .features import FEATURES
from .manifest_entry import write_model

NAME = "geometric_scorer"
VERSION = "1.0.0"
# Feature value that maps to component 1/e (~0.37): about twice a typical clean frontal photo.
SCALES = {"symmetry": 0.08, "averageness": 0.20, "proportions": 0.12, "texture": 0.12}
WEIGHTS = {"symmetry": 0.35, "averageness": 0.25, "proportions": 0.25, "texture": 0.15}


def build_model(scales: dict[str, float] = SCALES, weights: dict[str, float] = WEIGHTS) -> onnx.ModelProto:
    n = len(FEATURES)
    inv_scale = np.array([-1.0 / scales[f] for f in FEATURES], dtype=np.float32).reshape(1, n)
    w = np.array([[100.0 * weights[f]] for f in FEATURES], dtype=np.float32)
    nodes = [
        helper.make_node("Mul", ["features", "neg_inv_scale"], ["scaled"]),
        helper.make_node("Exp", ["scaled"], ["components"]),
        helper.make_node("MatMul", ["components", "weights"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, NAME,
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
                 helper.make_tensor_value_info("components", TensorProto.FLOAT, ["N", n])],
        initializer=[numpy_helper.from_array(inv_scale, "neg_inv_scale"),
                     numpy_helper.from_array(w, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="aurum", producer_version=VERSION)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    models_dir = argv[0] if argv else "models"
    write_model(models_dir, NAME, build_model(), {
        "task": "scoring", "version": VERSION,
        "feature_set": list(FEATURES), "needs_embedding": False,
        "inputs": [{"name": "features", "shape": ["N", len(FEATURES)], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": ["N", 1], "dtype": "float32"},
                    {"name": "components", "shape": ["N", len(FEATURES)], "dtype": "float32"}],
        "preprocessing": {"features": "aurum.scoring.features (lower is better)"},
        "postprocessing": {"scales": SCALES, "weights": WEIGHTS, "range": [0, 100]},
        "licence": "Apache-2.0", "licence_file": "licences/AURUM-APACHE-2.0.txt",
        "card": "cards/geometric_scorer.md",
        "source": {"package": "aurum", "version": VERSION, "path": "aurum/scoring/geometric.py"},
        "trained_on_ratings": False,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
