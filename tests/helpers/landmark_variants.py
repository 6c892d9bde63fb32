"""Deterministic variants of the repository's portrait, shared by the landmark reference test and
the script that made its reference (``tests/photos/mediapipe_reference.json``)."""

from __future__ import annotations

import cv2
import numpy as np


def variants(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]
    out = {"id": rgb, "flip": np.ascontiguousarray(rgb[:, ::-1]),
           "half": cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
           }
    for angle in (8, -8):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        out[f"rotate{angle:+d}"] = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return out
