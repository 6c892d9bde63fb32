"""Every Redis key Aurum writes, built here and nowhere else.

Celery's own keys sit beside these: ``celery-task-meta-<job id>`` (results), the ``score`` and
``fallback`` lists (queues), ``unacked*`` (kombu's reserved messages) and ``_kombu.*``.
"""

from __future__ import annotations

from .contract import TASKS

ROOT = "aurum:"

# Per job (a 32-hex job id); a DELETE removes every one of them (:func:`of_job`).
JOB = ROOT + "job:"              # the sealed job record: owner, kind, images, cache keys
DONE = ROOT + "done:"            # the job-ended stream that ?wait= blocks on
DELETED = ROOT + "deleted:"      # tombstone: a worker meeting the job drops it and what it made
REQUEUE = ROOT + "requeue:"      # one API process at a time re-publishes a lost message
DELIVERIES = ROOT + "deliveries:"  # executions of a job per task, for POISON_MESSAGE

# Per upload and per result.
IMAGE = ROOT + "image:"          # sealed image bytes, random key, short TTL
CACHE = ROOT + "cache:"          # sealed result document, by cache key (scoped per API key)
INFLIGHT = ROOT + "inflight:"    # the job computing a cache key now (coalescing)

# Service-wide.
DEAD_LETTERS = ROOT + "dead-letters"  # job ids set aside as POISON_MESSAGE (a capped list)
HEARTBEATS = ROOT + "heartbeats"      # sorted set: "<hostname>:<child>" -> last beat
WORKERS = ROOT + "workers"            # hash: "<hostname>:<child>" -> what that child loaded, consumes, seals with
API_KEY = ROOT + "key:"               # sha256 of a token -> the key's record
API_KEYS = ROOT + "keys"              # set of every key id
API_KEYS_ACTIVE = ROOT + "keys:active"  # set of the ids not revoked (counted in O(1))
LIMITS = ROOT + "limits"              # the rate limiter's counters (api/limits.py)
ARRIVALS = ROOT + "arrivals:"         # per second: images accepted to be computed (the autoscaler's forecast)

# Model lifecycle (service/routing.py, service/comparison.py): no image, job or key is named in
# these; the statistics are counts and the shadow pairs anonymous scores, expiring.
ROUTING = ROOT + "models:routing"     # the routing policy (JSON)
ROUTING_AUDIT = ROOT + "models:audit"  # stream: every policy change, who and what
PAIRS = ROOT + "models:pairs:"        # list per version pair and window: (live, shadow) score pairs
STATS = ROOT + "models:stats:"        # hash per version and window: score bins, verdicts, faces, latency
REFERENCE = ROOT + "models:reference:"  # hash per version: the reference window drift is measured against


def job(job_id: str) -> str:
    return JOB + job_id


def done(job_id: str) -> str:
    return DONE + job_id


def deleted(job_id: str) -> str:
    return DELETED + job_id


def requeue(job_id: str) -> str:
    return REQUEUE + job_id


def deliveries(task_name: str, job_id: str) -> str:
    return f"{DELIVERIES}{task_name}:{job_id}"


def cache(key: str) -> str:
    return CACHE + key


def inflight(key: str) -> str:
    return INFLIGHT + key


def api_key(key_id: str) -> str:
    return API_KEY + key_id


def of_job(job_id: str) -> list[str]:
    """The keys named by a job's id (its images and cache entries are named in its record)."""
    return [job(job_id), done(job_id), requeue(job_id), *(deliveries(name, job_id) for name in TASKS)]


def pairs(live: str, candidate: str, window: int) -> str:
    return f"{PAIRS}{live}|{candidate}:{window}"


def stats(ref: str, window: int) -> str:
    return f"{STATS}{ref}:{window}"


def reference(ref: str) -> str:
    return REFERENCE + ref


def arrivals(second: int) -> str:
    return f"{ARRIVALS}{second}"
