"""Head pose (yaw, pitch, roll in degrees) by fitting the canonical face mesh to the landmarks.

A least-squares similarity fit (Kabsch/Umeyama, 3-D) of MediaPipe's canonical face to the 468
points gives the rotation. Conventions, as seen in the image: yaw > 0 when the nose turns toward
the image's right, pitch > 0 when the face looks up, roll > 0 when the head tilts
counter-clockwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray  # 3x3, canonical -> camera (x right, y up, z toward the viewer)
    scale: float


def to_camera_frame(points: np.ndarray) -> np.ndarray:
    """Image-space mesh points (x right, y down, z away) -> x right, y up, z toward the viewer."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 1:] *= -1
    return out


def fit_rotation(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation R and scale s minimising |s R src_c - dst_c| (both centred in the fit)."""
    s = src - src.mean(0)
    d = dst - dst.mean(0)
    u, sig, vt = np.linalg.svd(d.T @ s)
    sign = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])  # no reflections
    rot = (u * sign) @ vt
    scale = float((sig * sign).sum() / (s ** 2).sum())
    return rot, scale


def estimate_pose(points: np.ndarray, mean_shape: np.ndarray) -> Pose:
    rot, scale = fit_rotation(mean_shape, to_camera_frame(points))
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
    yaw = np.degrees(np.arcsin(np.clip(-rot[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    # Ry(yaw) turns +z (the nose) toward +x for yaw > 0; Rx(pitch) turns it toward -y: looking down.
    return Pose(yaw=float(yaw), pitch=float(-pitch), roll=float(roll), rotation=rot, scale=scale)


def frontalise(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Mesh points in the canonical frame: pose, position and size removed."""
    cam = to_camera_frame(points)
    return (cam - cam.mean(0)) @ pose.rotation / pose.scale
