"""Face quality, in the spirit of ISO/IEC 29794-5: measured components and a verdict with reasons.

Image measures (sharpness, brightness, contrast) are taken on the FaceMesh crop, where every face
has the same size in pixels, inside the face oval; geometric measures come from the landmarks
and the pose. Thresholds live in :class:`aurum.config.Settings`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import Settings
from .landmarks import Mesh
from .pose import Pose
from .regions import LEFT_EYE_EAR, RIGHT_EYE_EAR

SHARPNESS_SCALE = 60.0   # Laplacian variance of the 192 px crop that maps to sharpness 0.63


def eye_aspect_ratio(points: np.ndarray, idx: tuple[int, int, int, int, int, int]) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) on the six eye points (Soukupova & Cech, 2016)."""
    p = points[list(idx), :2]
    vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(vertical / max(2 * np.linalg.norm(p[0] - p[3]), 1e-6))


def assess(mesh: Mesh, pose: Pose, box_size_px: float, image_shape: tuple[int, int],
           settings: Settings) -> dict:
    grey, mask = mesh.grey, mesh.face_mask
    if not mask.any():
        mask = np.ones_like(mask)
    face = grey[mask].astype(np.float64) / 255.0
    laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)  # integers from uint8: exact in float32
    lap_var = float(laplacian[mask].var(dtype=np.float64))
    sharpness = 1.0 - float(np.exp(-lap_var / SHARPNESS_SCALE))

    h, w = image_shape
    pts = mesh.points[:, :2]
    outside = ((pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)).mean()
    eye_openness = min(eye_aspect_ratio(mesh.points, RIGHT_EYE_EAR),
                       eye_aspect_ratio(mesh.points, LEFT_EYE_EAR))

    q = {
        "sharpness": round(sharpness, 4),
        "brightness": round(float(face.mean()), 4),
        "contrast": round(float(face.std()), 4),
        "face_size_px": round(float(box_size_px), 1),
        "frontal": round(float(max(0.0, 1.0 - max(abs(pose.yaw), abs(pose.pitch)) / 90.0)), 4),
        "eye_openness": round(eye_openness, 4),
        "truncation": round(float(outside), 4),
        "face_presence": round(mesh.presence, 4),
    }
    checks = [
        ("BLURRY", q["sharpness"] < settings.q_min_sharpness),
        ("TOO_DARK", q["brightness"] < settings.q_min_brightness),
        ("TOO_BRIGHT", q["brightness"] > settings.q_max_brightness),
        ("LOW_CONTRAST", q["contrast"] < settings.q_min_contrast),
        ("FACE_TOO_SMALL", q["face_size_px"] < settings.q_min_face_px),
        ("POSE_YAW", abs(pose.yaw) > settings.q_max_yaw),
        ("POSE_PITCH", abs(pose.pitch) > settings.q_max_pitch),
        ("POSE_ROLL", abs(pose.roll) > settings.q_max_roll),
        ("EYES_CLOSED", q["eye_openness"] < settings.q_min_eye_openness),
        ("TRUNCATED", q["truncation"] > settings.q_max_truncation),
        ("OCCLUDED", q["face_presence"] < 0.8),
    ]
    reasons = [code for code, failed in checks if failed]
    q["passed"] = not reasons
    q["reasons"] = reasons
    return q
