"""What each model version does with the traffic (service/comparison.py), and the shadow.

After a job's results are computed (never for a cached one), each result counts toward the
window summaries and histograms of the versions that made it (its detector's and its scorer's).
Then, for a job routed with a shadow candidate, the candidate scores the same images: a scorer
from the features the result carries (no second pipeline run), a detector (or a scorer that needs
the embedding) by running the pipeline with it. Its scores are paired with the live ones and
counted toward its own summaries; whatever happens there, the client's result is untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions
from aurum.scoring.scorer import Scorer, rescore
from service import comparison

from . import metrics, runtime

log = logging.getLogger(__name__)
ROLES = ("detector", "scorer")


def observe(route: dict[str, Any] | None, pipe: Pipeline, computed: list[tuple[bytes, dict[str, Any]]],
            opts: ScoreOptions) -> None:
    if not computed:
        return
    s = runtime.settings()
    arms = (route or {}).get("arms", {})
    try:
        with runtime.images().redis.pipeline(transaction=False) as rp:
            for _, result in computed:
                ms = result["timings_ms"]["total"]
                counts = comparison.summarise(result, ms)
                for role in ROLES:
                    comparison.record(rp, pipe.roles[role], counts, s.model_window, s.model_stats_ttl)
                    metrics.observe_version([pipe.roles[role]], arms.get(role, "live"), result, ms / 1000)
            for role, candidate in ((route or {}).get("shadow") or {}).items():
                _shadow(rp, role, candidate, pipe, computed, opts)
            rp.execute()
    except redis.RedisError as exc:  # statistics: the job's result stands without them
        log.warning("model statistics not recorded: %s", exc)


def _shadow(rp: redis.client.Pipeline, role: str, candidate: str, pipe: Pipeline,
            computed: list[tuple[bytes, dict[str, Any]]], opts: ScoreOptions) -> None:
    s = runtime.settings()
    for data, result in computed:
        live_ms = result["timings_ms"]["total"]
        start = time.perf_counter()
        try:
            if role == "scorer" and not (scorer := Scorer(pipe.store, candidate)).needs_embedding:
                given = [(f.get("score") or {}).get("value") for f in result["faces"]]
                scores = [c if g is not None else None for g, c in zip(given, rescore(scorer, result))]
                extra_ms = (time.perf_counter() - start) * 1000
                shadow_ms = live_ms - result["timings_ms"].get("score", 0.0) + extra_ms
                shadow_result, pairs = result, [(g, c) for g, c in zip(given, scores) if g is not None]
            else:
                shadow_result = runtime.pipeline({**pipe.roles, role: candidate}).score(data, opts)
                extra_ms = shadow_ms = (time.perf_counter() - start) * 1000
                scores = [(f.get("score") or {}).get("value") for f in shadow_result["faces"]]
                pairs = _matched(result["faces"], shadow_result["faces"])
        except Exception as exc:  # noqa: BLE001 - a shadow never fails the job (a NO_FACE included)
            metrics.SHADOW_FAILURES.labels(role).inc()
            log.info("shadow %s %s: %s: %s", role, candidate, type(exc).__name__, exc)
            continue
        metrics.SHADOW_SECONDS.labels(role).observe(extra_ms / 1000)
        metrics.observe_version([candidate], "shadow", shadow_result, shadow_ms / 1000, scores)
        comparison.record(rp, candidate, comparison.summarise(shadow_result, shadow_ms, scores),
                          s.model_window, s.model_stats_ttl)
        comparison.record_pairs(rp, pipe.roles[role], candidate, pairs, (live_ms, shadow_ms), s.result_ttl)


def _matched(live: list[dict], shadow: list[dict], min_iou: float = 0.5) -> list[tuple[float, float]]:
    """Score pairs of the faces two detectors both found (boxes overlapping by ``min_iou``)."""
    pairs = []
    for face in live:
        value = face["score"]["value"]
        best = max(shadow, key=lambda other: _iou(face["box"], other["box"]), default=None)
        if value is not None and best is not None and _iou(face["box"], best["box"]) >= min_iou \
                and best["score"]["value"] is not None:
            pairs.append((value, best["score"]["value"]))
    return pairs


def _iou(a: list[float], b: list[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
