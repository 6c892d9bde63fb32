"""Helpers for the chaos tests: submit through the real API, wait for every accepted job, and
write the figures that RELIABILITY.md reports."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import requests

from tests.helpers.stack import ROOT, Stack

ARTIFACTS = Path(os.environ.get("AURUM_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def submit(stack: Stack, data: bytes, timeout: float = 5.0, **params) -> requests.Response:
    return stack.http.post(stack.base + "/api/ml/score", files={"image": ("p", data)}, params=params,
                           timeout=timeout)


def settle(stack: Stack, job_ids: list[str], deadline_s: float) -> dict[str, dict]:
    """Poll every job until it has ended or the deadline passes: {job_id: final document}."""
    pending, done = set(job_ids), {}
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            try:
                doc = stack.http.get(f"{stack.base}/api/ml/jobs/{job_id}", timeout=5).json()
            except (requests.RequestException, ValueError):
                continue
            if doc.get("status") in ("succeeded", "failed"):
                done[job_id] = doc
                pending.discard(job_id)
        time.sleep(0.2)
    return done


def executions(stack: Stack, job_id: str) -> int:
    import redis

    r = redis.Redis.from_url(stack.redis.url_for(0))
    return sum(int(r.get(k) or 0) for k in r.scan_iter(f"aurum:deliveries:*:{job_id}"))


def record(name: str, figures: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"chaos-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
