"""Worker-side Prometheus metrics.

Each pool child serves its own on ``AURUM_WORKER_METRICS_PORT`` + child index (see
:mod:`workers.signals`). Like Triton, a job's latency is split into queue time (submitted to
started) and compute time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

LATENCY = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
STAGE = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)

JOBS = Counter("aurum_jobs_total", "Job attempts by task and outcome (succeeded, failed, retried, fallback)",
               ["task", "outcome"])
QUEUE_SECONDS = Histogram("aurum_job_queue_seconds", "Submitted to started", ["task"], buckets=LATENCY)
COMPUTE_SECONDS = Histogram("aurum_job_compute_seconds", "Started to ended", ["task"], buckets=LATENCY)
STAGE_SECONDS = Histogram("aurum_stage_seconds", "Pipeline stage time per image", ["stage"], buckets=STAGE)
FACES = Histogram("aurum_faces_per_image", "Faces found per scored image", buckets=(0, 1, 2, 3, 5, 10, 20, 50))
BATCH_SIZE = Histogram("aurum_batch_size", "Images per batch job", buckets=(1, 2, 4, 8, 16, 32, 64))
MODEL_RUNS = Counter("aurum_model_runs_total", "Images that went through the models (not from cache)")
CACHE = Counter("aurum_cache_requests_total", "Result-cache lookups", ["side", "result"])
RETRIES = Counter("aurum_retries_total", "Retries of retryable failures", ["task"])
FALLBACKS = Counter("aurum_fallbacks_total", "Jobs handed to the degraded fallback", ["task"])
DEAD_LETTERS = Counter("aurum_dead_letters_total", "Jobs failed as POISON_MESSAGE")
MODEL_LOAD_SECONDS = Histogram("aurum_model_load_seconds", "Loading and warming a child's models",
                               buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
MODEL_LOAD_FAILURES = Counter("aurum_model_load_failures_total",
                              "Model loads that failed (each job of a child without models tries again)")
# What the results say, for the quality and score-shift alerts (deploy/alerts.yml): the scores
# given (withheld ones are not) by scorer version, and each face's quality verdict.
SCORES = Histogram("aurum_face_score", "Scores given, by scorer version and arm (live, candidate, shadow: "
                   "computed, never returned)", ["model", "arm"], buckets=tuple(range(5, 100, 5)))
# Per model version (name@version of the detector and of the scorer: each result counts for both)
MODEL_LATENCY = Histogram("aurum_model_latency_seconds", "Pipeline time per image, by model version and arm",
                          ["model", "arm"], buckets=LATENCY)
MODEL_FACES = Histogram("aurum_model_faces_per_image", "Faces per image, by model version and arm", ["model", "arm"],
                        buckets=(0, 1, 2, 3, 5, 10, 20))
MODEL_QUALITY = Counter("aurum_model_quality_total", "Face verdicts (passed, or each failure reason), by model "
                        "version and arm", ["model", "arm", "verdict"])
SHADOW_SECONDS = Histogram("aurum_shadow_seconds", "Extra time a shadow candidate took per image", ["role"],
                           buckets=STAGE + (1, 2))
SHADOW_FAILURES = Counter("aurum_shadow_failures_total", "Shadow runs that failed, or were skipped for lack of "
                          "time in their job (the client's result is unaffected)", ["role"])
FACES_JUDGED = Counter("aurum_faces_total", "Faces scored, by quality verdict (passed, failed)", ["quality"])
QUALITY_REASONS = Counter("aurum_quality_reasons_total", "Quality-failure reasons given", ["reason"])


def observe_result(result: dict[str, Any], arm: str = "live") -> None:
    """Stage times and face count of one computed result."""
    for stage, ms in result.get("timings_ms", {}).items():
        if stage != "total":
            STAGE_SECONDS.labels(stage).observe(ms / 1000)
    faces = result.get("faces", [])
    FACES.observe(len(faces))
    MODEL_RUNS.inc()
    for face in faces:
        quality = face.get("quality") or {}
        FACES_JUDGED.labels("passed" if quality.get("passed") else "failed").inc()
        for reason in quality.get("reasons", []):
            QUALITY_REASONS.labels(reason).inc()
        score = face.get("score") or {}
        if score.get("value") is not None:
            SCORES.labels(score.get("model", ""), arm).observe(score["value"])


def observe_version(refs: list[str], arm: str, result: dict[str, Any], seconds: float,
                    scores: list[float | None] | None = None) -> None:
    """The per-version histograms of one result (``scores``: a shadow's, per face)."""
    faces = result.get("faces", [])
    for ref in refs:
        MODEL_LATENCY.labels(ref, arm).observe(seconds)
        MODEL_FACES.labels(ref, arm).observe(len(faces))
        for face in faces:
            quality = face.get("quality") or {}
            for verdict in (["passed"] if quality.get("passed") else quality.get("reasons") or ["failed"]):
                MODEL_QUALITY.labels(ref, arm, verdict).inc()
    if scores is not None:
        for value in scores:
            if value is not None:
                SCORES.labels(refs[-1], arm).observe(value)
