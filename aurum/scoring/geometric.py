"""The default scorer: a transparent formula over the face features, exported as an ONNX graph.

    z_i         = (ln(feature_i + floor_i) - ln(centre_i + floor_i)) / width_i
    component_i = 1 / (1 + exp(z_i))                        (1: ideal, 0.5: typical)
    score       = 100 * sum_i weight_i * component_i        (weights sum to 1)

It is NOT trained on human ratings (none can be had under a usable licence). Every constant is
measured on the development set (``tests/helpers/devset.py``: 14 faces of 12 people, each also edited 22
ordinary ways, ``bench/robustness.py``) by ``bench/calibrate.py``:

- ``centre_i``: the median face's feature value, so a face typical on every feature scores 50;
  a feature of 0 (perfect symmetry, the mean face's shape and proportions, skin as even as the
  rest of the face) gives 100 and one far beyond typical gives 0.
- ``floor_i``: twice the feature's mean within-face spread over the ordinary edits, so that a
  near-perfect value (symmetry of a few thousandths) is not magnified by the log beyond what
  the measurement can tell.
- ``width_i``: 1.5 x the spread of ln(feature_i + floor_i) between people (its standard
  deviation), so the scale is used without every photo's noise being magnified: a face one
  spread better than typical on every feature scores ~66, two spreads ~79, three ~88. The
  development set's clean photos score 40-68.
- ``weight_i``: proportional to the feature's squared ratio of between-person to within-face
  spread (in the same log space), i.e. how much it tells people apart for the noise a photo
  adds (measured ratios: symmetry 7.0, averageness 15.7, proportions 11.2, texture 14.8).

Because it is an ONNX model in the manifest like any other, a trained scorer (``aurum
train-scorer``) replaces it by name.

Run ``python -m aurum.scoring.geometric [MODELS_DIR]`` to (re)write the ONNX file and its
manifest entry.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .features import FEATURES
from .manifest_entry import creation_record, write_model

NAME = "geometric_scorer"
VERSION = "2.1.0"
# Measured by bench/calibrate.py (2026-12-03, features version 4, 14 faces x 22 ordinary edits).
FLOORS = {"symmetry": 0.0017, "averageness": 0.002, "proportions": 0.003, "texture": 0.0131}
CENTRES = {"symmetry": 0.01058, "averageness": 0.0754, "proportions": 0.05429, "texture": 0.6599}
WIDTHS = {"symmetry": 1.064, "averageness": 0.321, "proportions": 0.436, "texture": 0.222}
WEIGHTS = {"symmetry": 0.076, "averageness": 0.386, "proportions": 0.194, "texture": 0.344}


def build_model(centres: dict[str, float] = CENTRES, widths: dict[str, float] = WIDTHS,
                weights: dict[str, float] = WEIGHTS, floors: dict[str, float] = FLOORS) -> onnx.ModelProto:
    n = len(FEATURES)
    floor = np.array([floors[f] for f in FEATURES], dtype=np.float32).reshape(1, n)
    log_centre = np.array([np.log(centres[f] + floors[f]) for f in FEATURES], dtype=np.float32).reshape(1, n)
    neg_inv_width = np.array([-1.0 / widths[f] for f in FEATURES], dtype=np.float32).reshape(1, n)
    w = np.array([[100.0 * weights[f]] for f in FEATURES], dtype=np.float32)
    nodes = [
        helper.make_node("Relu", ["features"], ["positive"]),   # features are >= 0 by definition
        helper.make_node("Add", ["positive", "floor"], ["floored"]),
        helper.make_node("Log", ["floored"], ["log_features"]),
        helper.make_node("Sub", ["log_features", "log_centre"], ["centred"]),
        helper.make_node("Mul", ["centred", "neg_inv_width"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["components"]),
        helper.make_node("MatMul", ["components", "weights"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, NAME,
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
                 helper.make_tensor_value_info("components", TensorProto.FLOAT, ["N", n])],
        initializer=[numpy_helper.from_array(floor, "floor"),
                     numpy_helper.from_array(log_centre, "log_centre"),
                     numpy_helper.from_array(neg_inv_width, "neg_inv_width"),
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
        "postprocessing": {"floors": FLOORS, "centres": CENTRES, "widths": WIDTHS, "weights": WEIGHTS,
                           "range": [0, 100],
                           "formula": "100 * sum_i w_i / (1 + exp((ln(f_i + floor_i) - ln(c_i + floor_i)) / s_i))"},
        "licence": "Apache-2.0", "licence_file": "licences/AURUM-APACHE-2.0.txt",
        "card": "cards/geometric_scorer.md",
        "source": {"package": "aurum", "version": VERSION, "path": "aurum/scoring/geometric.py"},
        "trained_on_ratings": False,
        "created": creation_record("aurum.scoring.geometric", {"fitted_on": "the development set (tests/helpers/devset.py), measured by bench/calibrate.py"}),
    }, default=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
