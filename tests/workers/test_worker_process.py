"""A real `celery worker` process (prefork, 2 children) from the Procfile's command, against our
own redis-server: jobs complete, every single-image job is a task of its own that ``celery
inspect`` sees, a slow job's time limit is its own (a hard limit ends it TIMEOUT, once), and a
child SIGKILLed mid-job does not lose a job."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.photos import encode, group_photo, photo_bytes, unique_photo

ROOT = Path(__file__).resolve().parents[2]
HUNG = unique_photo(5200)  # its job sleeps (AURUM_CHAOS) until a time limit stops it
STUCK = unique_photo(5201)  # its job hangs deaf to the soft limit (AURUM_CHAOS): only the hard limit ends it
SLOWISH = [unique_photo(5250 + i) for i in range(4)]  # each costs 1.5 s: slow, within an image's budget


@pytest.fixture(scope="module")
def live_worker(celery_app, tmp_path_factory):
    # AURUM_REDIS_URL: set by celery_app
    chaos = json.dumps({"sleep": {hashlib.sha256(HUNG).hexdigest(): 600,
                                  **{hashlib.sha256(p).hexdigest(): 1.5 for p in SLOWISH}},
                        "stuck": {hashlib.sha256(STUCK).hexdigest(): 600}})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AURUM_CHAOS": chaos}
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


def test_every_single_job_is_a_task_celery_inspect_sees(live_worker, celery_app, pipeline) -> None:
    """24 unique photos at once: each job runs as its own task (``celery inspect active`` lists
    them by id while they run, one log line each), and every result equals the in-process one."""
    from workers import runtime
    from workers.tasks import score_image

    photos = [unique_photo(5000 + i) for i in range(24)]
    jobs = [score_image.apply_async(args=(runtime.images().put(p),)) for p in photos]
    ids = {j.id for j in jobs}
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while not all(j.ready() for j in jobs) and time.monotonic() < deadline:
        active = celery_app.control.inspect(timeout=1).active() or {}
        seen |= {task["id"] for tasks in active.values() for task in tasks if task["name"] == "aurum.score_image"}
    assert seen and seen <= ids, "celery inspect active never listed a running job"
    results = [j.get(timeout=120) for j in jobs]
    local = pipeline.score(photos[0])
    for result in results:
        assert [f["box"] for f in result["faces"]] == [f["box"] for f in local["faces"]]
        assert [f["score"]["value"] for f in result["faces"]] == [f["score"]["value"] for f in local["faces"]]
    time.sleep(0.5)  # the last log lines
    lines = [line for line in job_lines(live_worker) if line.get("job_id") in ids]
    assert sorted(line["job_id"] for line in lines) == sorted(ids)  # one outcome line per job


def test_a_slow_job_times_out_alone(live_worker) -> None:
    """A job that overruns its soft limit ends TIMEOUT; the jobs beside it are not touched."""
    from service.contract import failure
    from workers import runtime
    from workers.tasks import score_image

    slow = score_image.apply_async(args=(runtime.images().put(HUNG),), soft_time_limit=3, time_limit=60)
    others = [score_image.apply_async(args=(runtime.images().put(unique_photo(5300 + i)),)) for i in range(6)]
    assert all(len(j.get(timeout=120)["faces"]) == 1 for j in others)
    with pytest.raises(Exception) as failed:
        slow.get(timeout=120)
    assert failure(failed.value)["error"]["code"] == "TIMEOUT"


def test_each_image_of_a_batch_has_its_own_time_budget(live_worker) -> None:
    """A batch's limits grow with its images (AURUM_TASK_IMAGE_SECONDS): four images of 1.5 s
    each (6 s) finish under a 2 s per-job soft limit with 3 s per further image (11 s: room for
    a loaded machine); without the per-image budget the same batch ends TIMEOUT."""
    from api import create_app
    from service.config import ServiceSettings
    from tests.helpers.api import keyed_client, wait_done

    def batch(image_seconds: float) -> dict:
        app = create_app(ServiceSettings.from_env(task_soft_time_limit=2, task_time_limit=30, cache_ttl=0,
                                                  task_image_seconds=image_seconds, rate_limit="1000/minute"))
        client = keyed_client(app, f"budget-{image_seconds}")
        files = [("images", (io.BytesIO(p), f"p{i}.png")) for i, p in enumerate(SLOWISH)]
        job = client.post("/api/ml/score/batch", data={"images": [f[1] for f in files]},
                          content_type="multipart/form-data").get_json()["job_id"]
        return wait_done(client, f"/api/ml/jobs/{job}", timeout=120)

    within = batch(3.0)
    assert within["status"] == "succeeded" and all(len(i["faces"]) == 1 for i in within["result"]["items"])
    cut_short = batch(0.0)
    assert cut_short["status"] == "failed" and cut_short["error"]["code"] == "TIMEOUT"


def test_a_hard_time_limit_ends_the_job_timeout_once(live_worker, celery_app) -> None:
    """A job deaf to its soft limit (stuck in a native call) is ended by the hard limit: the pool
    kills the child, the job fails TIMEOUT, is not redelivered as a worker crash (no
    POISON_MESSAGE), and the pool replaces the child. The soft limit comes first, as in every
    deployment: Celery's prefork pool starts the hard timer only once the soft one has fired, so
    a hard limit below the soft one would not be the limit that ends the job."""
    from service.contract import failure
    from workers import runtime
    from service.keyspace import deliveries
    from workers.tasks import score_image

    children = pool_children(live_worker.pid)
    started = time.monotonic()
    slow = score_image.apply_async(args=(runtime.images().put(STUCK),), soft_time_limit=2, time_limit=5)
    with pytest.raises(Exception) as failed:
        slow.get(timeout=120)
    assert failure(failed.value) == {"error": {"code": "TIMEOUT", "message": "The job exceeded its time limit."}}
    assert time.monotonic() - started < 60  # the hard limit (5 s), not the 600 s hang
    time.sleep(8)  # long enough for a redelivery to have started
    assert celery_app.AsyncResult(slow.id).state == "FAILURE"
    assert int(runtime.images().redis.get(deliveries(score_image.name, slow.id))) == 1
    deadline = time.monotonic() + 60  # the killed child lists (a zombie) until it is reaped and replaced
    while len(set(pool_children(live_worker.pid)) - set(children)) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    now = pool_children(live_worker.pid)
    assert len(set(now) - set(children)) == 1 and len(set(children) & set(now)) == 1  # one child replaced

