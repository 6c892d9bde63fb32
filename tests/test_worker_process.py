"""A real `celery worker` process (prefork, 2 children) from the Procfile's command, against our
own redis-server: jobs complete, a deep queue of single-image jobs runs in micro-batches, and a
child SIGKILLed mid-job (or mid-micro-batch) does not lose a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import encode, group_photo, photo_bytes

ROOT = Path(__file__).resolve().parent.parent


SAFETY_FLUSH = 30  # seconds: the pool policy's timer; a lone job must not wait for it


@pytest.fixture(scope="module")
def live_worker(celery_app, tmp_path_factory):
    # AURUM_REDIS_URL: set by celery_app
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AURUM_MICRO_BATCH_INTERVAL": str(SAFETY_FLUSH)}
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
                             "--concurrency", "2", "--queues", "score,fallback", "--loglevel", "INFO",
                             "--without-gossip", "--without-mingle"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not celery_app.control.ping(timeout=0.5):
        assert proc.poll() is None, "the worker exited"
    assert celery_app.control.ping(timeout=1), "the worker did not answer a ping"
    proc.log_path = log_path
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


def job_lines(worker) -> list[dict]:
    """The worker's "job" log lines (one per job outcome), parsed."""
    lines = []
    for line in worker.log_path.read_text().splitlines():
        if line.startswith("{") and '"message": "job"' in line:
            lines.append(json.loads(line))
    return lines


def test_a_deep_queue_runs_in_micro_batches_with_the_same_results(live_worker, pipeline) -> None:
    """24 unique photos submitted at once: the worker runs them several at a time (each job's
    log line says its batch size), and every result equals the in-process one."""
    from workers import runtime
    from workers.tasks import score_image

    from .test_cache import unique_photo

    photos = [unique_photo(5000 + i) for i in range(24)]
    jobs = [score_image.apply_async(args=(runtime.images().put(p),)) for p in photos]
    results = [j.get(timeout=120) for j in jobs]
    local = pipeline.score(photos[0])
    for result in results:
        assert [f["box"] for f in result["faces"]] == [f["box"] for f in local["faces"]]
        assert [f["score"]["value"] for f in result["faces"]] == [f["score"]["value"] for f in local["faces"]]
    time.sleep(0.5)  # the log lines of the last batch
    sizes = {line["job_id"]: line["batch"] for line in job_lines(live_worker) if line.get("task") == "aurum.score_image"}
    assert {j.id for j in jobs} <= set(sizes)
    assert max(sizes[j.id] for j in jobs) > 1, "a deep queue should have been batched"
    assert all(sizes[j.id] <= 16 for j in jobs)  # AURUM_MICRO_BATCH


def test_a_lone_job_goes_at_once_to_a_free_child(live_worker) -> None:
    """On an idle worker a single job is not held back for company: it is done long before the
    safety-net flush (SAFETY_FLUSH seconds) could have sent it."""
    from workers import runtime
    from workers.tasks import score_image

    from .test_cache import unique_photo

    job = score_image.apply_async(args=(runtime.images().put(unique_photo(5100)),))
    assert len(job.get(timeout=SAFETY_FLUSH / 3)["faces"]) == 1
