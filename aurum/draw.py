"""Draw a result on its photo: boxes, keypoints, landmarks and the score of each face."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import Settings
from .image import decode_image


def render(rgb: np.ndarray, result: dict[str, Any], scale: float = 1.0) -> np.ndarray:
    """A BGR copy of ``rgb`` with the faces of ``result`` drawn (coordinates x ``scale``)."""
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for i, face in enumerate(result["faces"]):
        colour = (80, 200, 80) if face["quality"]["passed"] else (40, 160, 240)
        x, y, w, h = (v * scale for v in face["box"])
        cv2.rectangle(canvas, (round(x), round(y)), (round(x + w), round(y + h)), colour, thickness)
        for px, py, *_ in face.get("landmarks", []):
            cv2.circle(canvas, (round(px * scale), round(py * scale)), max(1, thickness // 2), (255, 220, 0), -1)
        for px, py in face["keypoints"].values():
            cv2.circle(canvas, (round(px * scale), round(py * scale)), thickness + 1, (0, 0, 255), -1)
        value = face["score"]["value"]
        label = f"#{i} {'-' if value is None else f'{value:.0f}'}"
        font = 0.5 * thickness
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        top = max(round(y) - th - 6, 0)
        cv2.rectangle(canvas, (round(x), top), (round(x) + tw + 6, top + th + 6), colour, -1)
        cv2.putText(canvas, label, (round(x) + 3, top + th + 3), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def draw_result(data: bytes, result: dict[str, Any], out: Path, settings: Settings) -> Path:
    image = decode_image(data, settings)
    cv2.imwrite(str(out), render(image.rgb, result, scale=image.scale))
    return out
