"""What each model version does with the traffic (service/comparison.py), and the shadow.

After a job's results are computed (never for a cached one), each result counts toward the
window summaries and histograms of the versions that made it (its detector's and its scorer's).
Then, for a job routed with a shadow candidate, the candidate scores the same images: a scorer
from the features the result carries (no second pipeline run), a detector (or a scorer that needs
the embedding) by running the pipeline with it. Its scores are paired with the live ones and
counted toward its own summaries; whatever happens there, the client's result is untouched.

A shadow that would run the pipeline again runs only while the job has used less than half its
soft time limit; if the soft limit strikes during a shadow anyway, the shadow stops, the job
keeps its result (a batch with images left then ends TIMEOUT, as it would have).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from aurum.geometry import iou
from aurum.pipeline import ROLES, Pipeline
from aurum.schemas import ScoreOptions
from aurum.scoring.scorer import Scorer, rescore
from service import comparison

from . import metrics, runtime

log = logging.getLogger(__name__)


def observe(task: Any, route: dict[str, Any] | None, pipe: Pipeline, computed: list[tuple[bytes, dict[str, Any]]],
            opts: ScoreOptions, budget_s: float) -> None:
    """Record ``computed`` (image bytes, result) for the versions that made it, then run any
    shadow while the job is within ``budget_s`` seconds of its start. Never raises: statistics
    and shadows are the service's, not the client's."""
    if not computed:
        return
    s = runtime.settings()
    arms = (route or {}).get("arms", {})
    try:
        with runtime.images().redis.pipeline(transaction=False) as rp:
            total: dict[str, int] = {}  # one HINCRBY per field for the whole chunk, not per image
            for _, result in computed:
                ms = result["timings_ms"]["total"]
                for field, n in comparison.summarise(result, ms).items():
                    total[field] = total.get(field, 0) + n
                for role in ROLES:
                    metrics.observe_version([pipe.roles[role]], arms.get(role, "live"), result, ms / 1000)
            for role in ROLES:
                comparison.record(rp, pipe.roles[role], total, s.model_window, s.model_stats_ttl)
            for role, candidate in ((route or {}).get("shadow") or {}).items():
                if not getattr(task.request, "aurum_shadow_stopped", False):
                    _shadow(task, rp, role, candidate, pipe, computed, opts, budget_s)
            rp.execute()
    except SoftTimeLimitExceeded:  # struck while recording: the result stands, the job ends now
        task.request.aurum_shadow_stopped = True
    except Exception as exc:  # noqa: BLE001 - Redis away, or a bug here: the job's result stands
        log.warning("model statistics not recorded: %s: %s", type(exc).__name__, exc)


def _shadow(task: Any, rp: Any, role: str, candidate: str, pipe: Pipeline,
            computed: list[tuple[bytes, dict[str, Any]]], opts: ScoreOptions, budget_s: float) -> None:
    s = runtime.settings()
    try:
        scorer = Scorer(pipe.store, candidate) if role == "scorer" else None
    except Exception as exc:  # noqa: BLE001 - a candidate this worker cannot build
        metrics.SHADOW_FAILURES.labels(role).inc()
        log.info("shadow %s %s not built: %s", role, candidate, exc)
        return
    rescoring = scorer is not None and not scorer.needs_embedding
    for data, result in computed:
        if not rescoring and time.time() - task.request.aurum_started > budget_s:
            metrics.SHADOW_FAILURES.labels(role).inc()  # no time left in this job for a second run
            continue
        live_ms = result["timings_ms"]["total"]
        start = time.perf_counter()
        try:
            if rescoring:
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
        except SoftTimeLimitExceeded:  # the job keeps its result; no more shadows in it
            metrics.SHADOW_FAILURES.labels(role).inc()
            task.request.aurum_shadow_stopped = True
            return
        except Exception as exc:  # noqa: BLE001 - a shadow never fails the job (a NO_FACE included)
            metrics.SHADOW_FAILURES.labels(role).inc()
            log.info("shadow %s %s: %s: %s", role, candidate, type(exc).__name__, exc)
            continue
        metrics.SHADOW_SECONDS.labels(role).observe(extra_ms / 1000)
        metrics.observe_version([candidate], "shadow", shadow_result, shadow_ms / 1000, scores)
        comparison.record(rp, candidate, comparison.summarise(shadow_result, shadow_ms, scores),
                          s.model_window, s.model_stats_ttl)
        comparison.record_pairs(rp, pipe.roles[role], candidate, pairs, (live_ms, shadow_ms), s.model_window,
                                s.result_ttl)


def _matched(live: list[dict], shadow: list[dict], min_iou: float = 0.5) -> list[tuple[float, float]]:
    """Score pairs of the faces two detectors both found (boxes overlapping by ``min_iou``)."""
    def corners(face: dict) -> np.ndarray:
        x, y, w, h = face["box"]
        return np.array([x, y, x + w, y + h], dtype=np.float64)

    scored = [f for f in shadow if f["score"]["value"] is not None]
    if not scored:
        return []
    boxes = np.stack([corners(f) for f in scored])
    pairs = []
    for face in live:
        if face["score"]["value"] is None:
            continue
        overlap = iou(corners(face), boxes)
        best = int(np.argmax(overlap))
        if overlap[best] >= min_iou:
            pairs.append((face["score"]["value"], scored[best]["score"]["value"]))
    return pairs
