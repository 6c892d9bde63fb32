"""A real `celery worker` process (prefork, 2 children) from the Procfile's command, against our
own redis-server: jobs complete, and a child SIGKILLed mid-job does not lose the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import encode, group_photo, photo_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def live_worker(celery_app, tmp_path_factory):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # AURUM_REDIS_URL: set by celery_app
    log = open(tmp_path_factory.mktemp("worker") / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
                             "--concurrency", "2", "--queues", "score,fallback", "--loglevel", "INFO",
                             "--without-gossip", "--without-mingle"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not celery_app.control.ping(timeout=0.5):
        assert proc.poll() is None, "the worker exited"
    assert celery_app.control.ping(timeout=1), "the worker did not answer a ping"
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_jobs_complete_on_a_prefork_worker(live_worker, pipeline) -> None:
    from workers import runtime
    from workers.tasks import score_image

    jobs = [score_image.apply_async(args=(runtime.images().put(photo_bytes(n)),))
            for n in ("astronaut.png", "camera.png") * 3]
    results = [j.get(timeout=60) for j in jobs]
    local = {n: pipeline.score(photo_bytes(n)) for n in ("astronaut.png", "camera.png")}
    for result, name in zip(results, ("astronaut.png", "camera.png") * 3):
        assert [f["box"] for f in result["faces"]] == [f["box"] for f in local[name]["faces"]]
        assert [f["score"] for f in result["faces"]] == [f["score"] for f in local[name]["faces"]]


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_child_killed_mid_job_the_job_still_completes(live_worker) -> None:
    from workers import runtime
    from workers.tasks import score_batch

    canvas, _ = group_photo()
    data = encode(canvas)
    keys = [runtime.images().put(data) for _ in range(32)]
    job = score_batch.apply_async(args=(keys,))
    deadline = time.monotonic() + 30
    while job.state not in ("STARTED", "PROGRESS") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state in ("STARTED", "PROGRESS"), "the batch never started"
    children = pool_children(live_worker.pid)
    assert len(children) == 2
    for pid in children:  # one of them is running the batch
        os.kill(pid, signal.SIGKILL)
    out = job.get(timeout=120)
    assert out["done"] == 32 and all(len(item["faces"]) == 3 for item in out["items"])
    assert set(pool_children(live_worker.pid)).isdisjoint(children)  # replaced by new children
