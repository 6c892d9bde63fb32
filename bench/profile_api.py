"""Where an API request's CPU goes: the Flask app in-process (no gunicorn, no worker) against our
own redis-server, with cProfile, grouped by component.

    python3 bench/profile_api.py [--requests 400] [--json bench/results/profile_api.json]

Three requests a client makes: submitting a single photo (multipart, ``202``; cache off, so
each is queued), reading a job's status, and a cache hit answered at once with ``?wait=``. For each it prints the milliseconds per
request (unprofiled) and the share of the profiled time under each component: the rate limiter
(api/limits.py: its check and its X-RateLimit headers), Celery's publish, multipart parsing,
the API key lookup, image and record storage (sealing included), option validation, the
header probe, the status read, and the rest (Flask, Werkzeug, our code around them).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from service.sealing import new_key  # noqa: E402

os.environ.setdefault("AURUM_ENCRYPTION_KEYS", new_key("bench"))

# Component: substrings of "file:function" whose cumulative time is charged to it (first match of
# a request's top-level callees below the view and the before/after-request hooks).
COMPONENTS = {
    "rate limiter (check + headers)": ("api/limits.py:check", "api/limits.py:headers"),
    "Celery publish": ("api/jobs.py:_publish",),
    "multipart parsing": ("api/uploads.py:read_single",),
    "API key lookup": ("api/auth.py:authenticate",),
    "images + record to Redis": ("api/jobs.py:_save", "images.py:put"),
    "cache lookup": ("service/cache.py:answer",),
    "options": ("aurum/schemas.py:load_options",),
    "header probe": ("aurum/image.py:probe",),
    "status read": ("api/jobs.py:_status",),
}


def breakdown(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    shares: dict[str, float] = {}
    for name, needles in COMPONENTS.items():
        seconds = 0.0
        for (file, _, func), (_, _, _, ct, _) in stats.items():
            key = f"{file}:{func}"
            if any(key.endswith(n) or n in key for n in needles):
                seconds += ct
        shares[name] = round(100 * seconds / total, 1)
    shares["everything else (Flask, Werkzeug, our glue)"] = round(100 - sum(shares.values()), 1)
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from tests.helpers.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            os.environ.update({"AURUM_REDIS_URL": f"{server.url}/0", "AURUM_LOG_LEVEL": "WARNING",
                               "AURUM_RATE_LIMIT": "1000000/minute;100000/second"})
            report = run(args.requests)
        finally:
            server.stop()
    for name, row in report.items():
        print(f"{name}: {row['ms_per_request']} ms per request")
        for component, share in row["shares_percent"].items():
            print(f"    {share:5.1f}%  {component}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run(n: int) -> dict:
    from service import heartbeats
    from service.cache import cache_key, result_identity
    from service.config import ServiceSettings
    from aurum.pipeline import Pipeline
    from aurum.schemas import ScoreOptions
    from api import create_app
    from load import multipart
    from pipeline import selfies

    app = create_app(ServiceSettings.from_env(cache_ttl=0))  # every submission is queued
    cached_app = create_app(ServiceSettings.from_env())  # the cache on, for the cache hit
    token, key = app.extensions["aurum.keys"].create("profile")
    headers = {"X-API-Key": token}
    content_type = "multipart/form-data; boundary=aurumbench"
    photos = selfies(n)
    bodies = [multipart(p) for p in photos]
    client = app.test_client()
    jobs = cached_app.extensions["aurum.jobs"]
    job_ids: list[str] = []

    def submit(i: int) -> None:
        response = client.post("/api/ml/score", data=bodies[i % n], headers=headers, content_type=content_type)
        assert response.status_code == 202, response.get_json()
        job_ids.append(response.get_json()["job_id"])

    def status(i: int) -> None:
        assert client.get(f"/api/ml/jobs/{job_ids[i % len(job_ids)]}", headers=headers).status_code == 200

    # a real result in the cache for the cache-hit request
    pipeline = Pipeline(jobs.settings)
    pipeline.load(embedding=False)
    identity = result_identity(pipeline.versions(), jobs.settings)
    heartbeats.beat(jobs.redis, "profile:0", {"result": identity})  # what a worker child tells the API
    jobs.cache.put(cache_key(hashlib.sha256(photos[0]).hexdigest(), identity, ScoreOptions().resolve(jobs.settings),
                             scope=key.id), {**pipeline.score(photos[0]), "cached": False})

    cached_client = cached_app.test_client()

    def hit(_: int) -> None:
        response = cached_client.post("/api/ml/score?wait=20", data=bodies[0], headers=headers, content_type=content_type)
        assert response.status_code == 200, response.get_json()

    report = {}
    for name, request in (("submit (202)", submit), ("status read", status), ("cache hit with ?wait=", hit)):
        for i in range(20):
            request(i)  # warm-up
        start = time.perf_counter()
        for i in range(n):
            request(i)
        ms = (time.perf_counter() - start) * 1000 / n
        profile = cProfile.Profile()
        profile.enable()
        for i in range(n):
            request(i)
        profile.disable()
        report[name] = {"ms_per_request": round(ms, 2), "shares_percent": breakdown(profile)}
    return report


if __name__ == "__main__":
    sys.exit(main())
