"""Run whichever scorer the manifest names: features (+ embedding) in, 0-100 out."""

from __future__ import annotations

import numpy as np

from ..store import ModelStore, split_ref
from .features import FEATURES


class Scorer:
    def __init__(self, store: ModelStore, name: str) -> None:
        """``name``: a scorer's manifest name or ``name@version``."""
        self.store = store
        self.ref = store.ref(name)
        self.name = split_ref(self.ref)[0]
        self.spec = store.spec(name)
        self.version = self.spec["version"]
        self.needs_embedding = bool(self.spec.get("needs_embedding", False))
        feature_set = self.spec.get("feature_set", list(FEATURES))
        if list(feature_set) != list(FEATURES):
            raise ValueError(f"scorer {name} expects features {feature_set}, the pipeline makes {FEATURES}")

    def run(self, features: np.ndarray, embeddings: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores [N] clipped to 0-100 and, if the scorer has them, components [N, F]."""
        x = features.astype(np.float32)
        if self.needs_embedding:
            x = np.concatenate([x, embeddings.astype(np.float32)], axis=1)
        session = self.store.session(self.ref)
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
        scores = np.clip(outputs["score"].reshape(len(x)), 0.0, 100.0)
        return scores, outputs.get("components")


def rescore(scorer: Scorer, result: dict) -> list[float]:
    """``scorer``'s scores of a result's faces, from the features the result carries (rounded to
    5 decimals: within 0.01 points of scoring the unrounded ones): a shadow scorer without
    running the pipeline again. Not for a scorer that needs the embedding."""
    if scorer.needs_embedding:
        raise ValueError(f"{scorer.ref} needs the embedding: run the pipeline with it")
    faces = result.get("faces", [])
    if not faces:
        return []
    x = np.array([[f["score"]["features"][n] for n in FEATURES] for f in faces], dtype=np.float32)
    return [float(v) for v in scorer.run(x)[0]]
