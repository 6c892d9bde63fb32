#!/usr/bin/env python3
"""Dev-only reference: MediaPipe's legacy face pipeline on a set of images.

Aurum never depends on mediapipe at run time; this script is only for making
test-time reference numbers (468-point face landmarks, BlazeFace boxes) to
compare aurum's ONNX pipeline against. Run it with its own venv's python:

    python3 -m venv /tmp/venv-mp && /tmp/venv-mp/bin/pip install mediapipe==0.10.14
    # or, exactly pinned: /tmp/venv-mp/bin/pip install -r scripts/requirements-mediapipe.txt
    /tmp/venv-mp/bin/python scripts/mediapipe_reference.py tests/photos --out ref.json

mediapipe 0.10.14 ships its .tflite models inside the wheel and runs offline.

For every image (grey or alpha images are converted to RGB) it writes:
  face_mesh: FaceMesh(static_image_mode=True, max_num_faces=N,
             refine_landmarks=False, min_detection_confidence=0.5); each face
             is 468 [x, y, z] in pixels: x*width, y*height, z*width (MediaPipe's
             z uses the same scale as x; smaller z is nearer the camera).
  face_detection: FaceDetection(model_selection=0 "short_range" and 1
             "full_range", min_detection_confidence=0.5); each detection is
             score, box [x, y, w, h] in pixels and 6 keypoints [x, y] in pixels
             (right eye, left eye, nose tip, mouth centre, right ear tragion,
             left ear tragion; "right" = the subject's right).
"""
import argparse
import json
import pathlib
import sys

import cv2
import mediapipe as mp

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def image_paths(args):
    for a in args:
        p = pathlib.Path(a)
        if p.is_dir():
            yield from sorted(q for q in p.iterdir() if q.suffix.lower() in EXTS)
        else:
            yield p


def r(v):
    return round(float(v), 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="image files or directories")
    ap.add_argument("--out", help="write JSON here instead of stdout")
    ap.add_argument("--max-faces", type=int, default=10)
    a = ap.parse_args()

    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=a.max_faces,
        refine_landmarks=False, min_detection_confidence=0.5)
    dets = {name: mp.solutions.face_detection.FaceDetection(
                model_selection=sel, min_detection_confidence=0.5)
            for name, sel in (("short_range", 0), ("full_range", 1))}

    images = []
    for p in image_paths(a.paths):
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)  # grey/alpha -> 3-channel
        if bgr is None:
            sys.exit(f"cannot read image: {p}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]

        res = mesh.process(rgb)
        faces = [[[r(l.x * w), r(l.y * h), r(l.z * w)] for l in f.landmark]
                 for f in (res.multi_face_landmarks or [])]

        fd = {}
        for name, det in dets.items():
            out = []
            for d in det.process(rgb).detections or []:
                b = d.location_data.relative_bounding_box
                out.append({
                    "score": r(d.score[0]),
                    "box": [r(b.xmin * w), r(b.ymin * h), r(b.width * w), r(b.height * h)],
                    "keypoints": [[r(k.x * w), r(k.y * h)]
                                  for k in d.location_data.relative_keypoints],
                })
            fd[name] = out

        images.append({"path": str(p), "width": w, "height": h,
                       "face_mesh": faces, "face_detection": fd})

    doc = {"mediapipe_version": mp.__version__, "max_num_faces": a.max_faces,
           "images": images}
    text = json.dumps(doc)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
