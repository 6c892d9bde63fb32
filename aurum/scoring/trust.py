"""How far a face's score can be trusted: its confidence, and when it is withheld.

- ``confidence`` (0-1) is the product of what the photo lets us see and how steady the
  measurement was: sharpness (1 up to a blur of ~1 % of the face width, 0 at the BLURRY
  limit, ~2.2 %), eye and mouth visibility, frontal pose (falls with the square of yaw / pitch / roll
  against their limits), face size (1 from 128 px, 0.71 at the 64 px limit), FaceMesh's face
  presence, and the mesh's own stability: how far its plain and mirrored runs disagreed (1 up to
  2 % of the inter-ocular distance, which clean frontal photos stay under).
- The value is withheld (``value: null``, ``withheld`` naming the quality reasons) when the face
  cannot be judged (:data:`aurum.quality.UNJUDGEABLE`): blurred past the BLURRY limit or clipped
  bright (the mesh then drifts: up to 7 and 12 points on the development set), eyes or mouth
  occluded, or a pose past its limit. The
  request option ``always_score`` returns the value anyway, with its (low) confidence.
"""

from __future__ import annotations

from ..config import Settings
from ..quality import UNJUDGEABLE

SHARP_ENOUGH = 0.8        # sharpness from which blur costs no confidence
STEADY_MESH = 0.02        # plain-vs-mirrored mesh disagreement (IODs) that costs nothing
MESH_SCALE = 0.05         # ... and the further disagreement that costs a factor e
FULL_SIZE_PX = 128.0


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def confidence(quality: dict, pose: dict, disagreement: float, settings: Settings) -> float:
    s = settings
    sharp = _clip((quality["sharpness"] - s.q_min_sharpness) / (SHARP_ENOUGH - s.q_min_sharpness))
    seen = _clip(min(quality["eyes_visible"], quality["mouth_visible"]))
    turn = max(abs(pose["yaw"]) / s.q_max_yaw, abs(pose["pitch"]) / s.q_max_pitch, abs(pose["roll"]) / s.q_max_roll)
    frontal = _clip(1.0 - turn * turn)
    size = _clip(quality["face_size_px"] / FULL_SIZE_PX) ** 0.5 if quality["face_size_px"] < FULL_SIZE_PX else 1.0
    steady = 1.0 if disagreement <= STEADY_MESH else float(2.718281828 ** (-(disagreement - STEADY_MESH) / MESH_SCALE))
    return round(sharp * seen * frontal * size * quality["face_presence"] * steady, 3)


def withheld(reasons: list[str]) -> list[str]:
    """The quality reasons that make a face's score unjudgeable (empty: it is given)."""
    return [r for r in reasons if r in UNJUDGEABLE]
