"""Helpers for the chaos tests: submit through the real API, wait for every accepted job, and
write the figures that RELIABILITY.md reports."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

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


class Load:
    """Clients calling ``post(seed)`` (a submission of a photo made from ``seed``, a new one each
    call) until stopped; every answer is kept with its start time and error code."""

    def __init__(self, post: Callable[[int], requests.Response], clients: int = 3, seed: int = 0) -> None:
        self.post, self.seed = post, seed
        self.answers: list[tuple[float, int, str]] = []  # (monotonic time, status, error code)
        self.accepted: list[str] = []
        self.slowest = 0.0
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _client(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            start = time.monotonic()
            code = ""
            try:
                response = self.post(self.seed + n * 10_000 + i)
                status = response.status_code
                if status == 202:
                    job_id = response.json()["job_id"]
                elif status >= 400:
                    code = response.json()["error"]["code"]
            except requests.RequestException:
                status = -1  # no answer in time (a hang), or a reset
            except ValueError:
                code = "NOT_JSON"  # not our error shape
            with self._lock:
                self.answers.append((start, status, code))
                self.slowest = max(self.slowest, time.monotonic() - start)
                if status == 202:
                    self.accepted.append(job_id)
            i += 1
            time.sleep(0.05)

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, status, _ in self.answers:
            out[status] = out.get(status, 0) + 1
        return out

    def since(self, t: float) -> list[tuple[float, int, str]]:
        return [a for a in self.answers if a[0] >= t]
