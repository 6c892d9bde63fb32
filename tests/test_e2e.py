"""End to end, as deployed: gunicorn and a celery worker started from the Procfile's commands,
our own redis-server, real photos over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import encode, group_photo, photo_bytes
from .redis_server import RedisServer, free_port
from .test_deploy import procfile

ROOT = Path(__file__).resolve().parent.parent
RESULT_TTL = 4


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.redis = RedisServer(workdir).start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "AURUM_REDIS_URL": f"{self.redis.url}/0", "AURUM_RESULT_TTL": str(RESULT_TTL),
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        created = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "e2e"], env=self.env,
                                 capture_output=True, text=True, timeout=30, check=True)
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = created.stdout.strip()
        commands = procfile({"PORT": str(self.port), "AURUM_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2"})
        self.logs = [open(workdir / f"{name}.log", "w") for name in ("web", "worker")]
        self.procs = [subprocess.Popen(commands[name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                      for name, log in zip(("web", "worker"), self.logs)]

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), "a process exited"
            try:
                if self.http.get(self.base + "/ready", timeout=3).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError("the stack did not become ready")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def submit(stack: Stack, data: bytes, **params) -> requests.Response:
    return stack.http.post(stack.base + "/api/ml/score", files={"image": ("photo", data)}, params=params, timeout=40)


def poll(stack: Stack, url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = stack.http.get(stack.base + url, timeout=5).json()
        if doc["status"] in ("succeeded", "failed"):
            return doc
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def core(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("timings_ms", "cached")}


def test_http_result_equals_the_in_process_pipeline(stack, pipeline) -> None:
    response = submit(stack, photo_bytes("astronaut.png"))
    assert response.status_code == 202
    doc = poll(stack, response.json()["status_url"])
    assert core(doc["result"]) == core(pipeline.score(photo_bytes("astronaut.png")))


def test_wait_and_batch_progress(stack) -> None:
    response = submit(stack, photo_bytes("camera.png"), wait=20)
    assert response.status_code == 200 and len(response.json()["result"]["faces"]) == 1
    canvas, _ = group_photo()
    files = [("images", (f"{i}.png", encode(canvas))) for i in range(12)]
    response = stack.http.post(stack.base + "/api/ml/score/batch", files=files, timeout=40)
    assert response.status_code == 202
    doc = poll(stack, response.json()["status_url"])
    assert doc["progress"] == {"done": 12, "total": 12}
    assert all(len(item["faces"]) == 3 for item in doc["result"]["items"])


def test_concurrent_submissions(stack) -> None:
    photos = [photo_bytes("astronaut.png"), photo_bytes("camera.png")] * 12
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda d: submit(stack, d, wait=30), photos))
    assert [r.status_code for r in responses] == [200] * len(photos)
    assert len({r.json()["job_id"] for r in responses}) == len(photos)


def test_no_key_is_401_over_http(stack) -> None:
    response = requests.post(stack.base + "/api/ml/score", files={"image": ("p", photo_bytes("astronaut.png"))},
                             timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_bad_input_over_http(stack) -> None:
    assert submit(stack, b"not an image").json()["error"]["code"] == "UNSUPPORTED_FORMAT"
    response = submit(stack, photo_bytes("coffee.png"), wait=20)
    assert response.status_code == 422 and response.json()["error"]["code"] == "NO_FACE"


def test_delete_and_result_expiry(stack) -> None:
    first = submit(stack, photo_bytes("astronaut.png"), wait=20).json()["job_id"]
    second = submit(stack, photo_bytes("astronaut.png"), wait=20).json()["job_id"]
    assert stack.http.delete(f"{stack.base}/api/ml/jobs/{first}", timeout=5).status_code == 204
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{first}", timeout=5).status_code == 404
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{second}", timeout=5).status_code == 200
    time.sleep(RESULT_TTL + 1)
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{second}", timeout=5).status_code == 404


def test_redis_stopped_submit_answers_503_within_a_second(stack) -> None:
    """Last in this module: it stops the stack's Redis."""
    stack.redis.stop()
    start = time.monotonic()
    response = submit(stack, photo_bytes("astronaut.png"))
    assert time.monotonic() - start < 1.0
    assert response.status_code == 503 and response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert stack.http.get(stack.base + "/health", timeout=2).status_code == 200
    assert stack.http.get(stack.base + "/ready", timeout=5).status_code == 503
