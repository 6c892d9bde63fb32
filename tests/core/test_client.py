"""The Python client against the real service: results, batches, retries on 429/503, fallback."""

from __future__ import annotations

import threading
import time

import pytest

from aurum.errors import AurumError
from aurum.client import AurumClient, ScoreResult, ServiceError, ServiceUnavailable

from tests.helpers.photos import encode, group_photo, photo_bytes, photo_rgb
from tests.helpers.redis_server import free_port
from tests.helpers.stack import Stack
from tests.helpers.photos import unique_photo


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("client-stack"), appendonly=True) as s:  # AOF: keys survive a restart
        yield s


@pytest.fixture
def client(stack) -> AurumClient:
    return AurumClient(stack.base, api_key=stack.http.headers["X-API-Key"], timeout=10)


def test_score_paths_bytes_and_arrays(client, pipeline, tmp_path) -> None:
    path = tmp_path / "astronaut.png"
    path.write_bytes(photo_bytes("astronaut.png"))
    by_path = client.score(path, wait=20)
    assert isinstance(by_path, ScoreResult) and len(by_path.faces) == 1 and not by_path.degraded
    local = pipeline.score(photo_bytes("astronaut.png"))
    assert by_path.score == local["faces"][0]["score"]["value"]
    by_array = client.score(photo_rgb("camera.png"), wait=20)  # turned past the yaw limit: withheld
    assert len(by_array.faces) == 1 and by_array.score is None and "POSE_YAW" in by_array.withheld
    forced = client.score(photo_rgb("camera.png"), wait=20, always_score=True)
    assert 0 <= forced.score <= 100 and 0 <= forced.confidence < by_path.confidence
    assert client.score(photo_bytes("astronaut.png"), wait=20).cached


def test_submit_get_wait_delete(client) -> None:
    job = client.submit(unique_photo(201), return_embedding=True)
    result = client.wait(job, timeout=20)
    assert len(result.primary["embedding"]) == 128 and result.job_id == job
    assert client.get(job)["status"] == "succeeded"
    client.delete(job)
    with pytest.raises(ServiceError) as info:
        client.get(job)
    assert info.value.code == "JOB_NOT_FOUND" and info.value.status == 404


def test_errors_come_back_with_their_codes(client) -> None:
    with pytest.raises(ServiceError) as info:
        client.score(photo_bytes("coffee.png"), wait=20)
    assert info.value.code == "NO_FACE"
    with pytest.raises(ServiceError) as info:
        client.submit(b"not an image")
    assert info.value.code == "UNSUPPORTED_FORMAT" and info.value.status == 415
    with pytest.raises(Exception):
        client.submit(photo_bytes("astronaut.png"), max_faces=0)  # validated before the upload


def test_batch_with_progress(client) -> None:
    canvas, _ = group_photo()
    seen = []
    out = client.score_batch([encode(canvas), photo_bytes("coffee.png"), photo_bytes("astronaut.png")],
                             progress=lambda done, total: seen.append((done, total)))
    assert isinstance(out[0], ScoreResult) and len(out[0].faces) == 3
    assert isinstance(out[1], ServiceError) and out[1].code == "NO_FACE"
    good, junk = client.score_batch([photo_bytes("astronaut.png"), b"junk"])  # a bad item fails alone
    assert isinstance(good, ScoreResult) and len(good.faces) == 1
    assert isinstance(junk, ServiceError) and junk.code == "UNSUPPORTED_FORMAT" and junk.details["index"] == 1
    assert seen[-1] == (3, 3)


def test_retries_on_429_honouring_retry_after(stack) -> None:
    import subprocess
    import sys

    token = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "slow", "--rate", "2/second"],
                           env=stack.env, capture_output=True, text=True, check=True).stdout.strip()
    limited = AurumClient(stack.base, api_key=token, retries=5)
    start = time.monotonic()
    states = [limited.get(limited.submit(unique_photo(300 + i)))["status"] for i in range(3)]
    elapsed = time.monotonic() - start
    assert all(s in ("queued", "running", "succeeded") for s in states)
    assert elapsed >= 0.9  # 6 requests at 2 per second: the client waited for the window


def test_retries_through_a_redis_restart(stack, client) -> None:
    """Redis stops; the API answers 503; the client retries; Redis comes back (AOF keeps the key)."""
    stack.redis.stop()
    restart = threading.Timer(1.5, stack.redis.start)
    restart.start()
    try:
        patient = AurumClient(stack.base, api_key=stack.http.headers["X-API-Key"], retries=8, backoff=0.5,
                              max_backoff=2.0)
        result = patient.score(unique_photo(400), wait=30)
        assert len(result.faces) == 1 and not result.degraded
    finally:
        restart.join()


def test_fallback_scores_locally_when_the_service_is_down(pipeline) -> None:
    down = AurumClient(f"http://127.0.0.1:{free_port()}", api_key="ak_x", retries=1, backoff=0.01, fallback=True)
    result = down.score(photo_bytes("astronaut.png"))
    assert result.degraded and result.raw["degraded_reason"].startswith("service unavailable")
    assert result.score == pipeline.score(photo_bytes("astronaut.png"))["faces"][0]["score"]["value"]
    strict = AurumClient(down.base_url, retries=0)
    with pytest.raises(ServiceUnavailable):
        strict.score(photo_bytes("astronaut.png"))
    with pytest.raises(AurumError) as info:  # the fallback raises the same codes as the service
        down.score(photo_bytes("coffee.png"))
    assert info.value.code == "NO_FACE"


def test_the_fallback_covers_every_call_that_scores(pipeline) -> None:
    """score_batch, submit, get, wait and delete work with the service down: batches item by item
    (a bad file keeps its own error in its place), submitted photos as local jobs."""
    down = AurumClient(f"http://127.0.0.1:{free_port()}", api_key="ak_x", retries=1, backoff=0.01, fallback=True)
    items = down.score_batch([photo_bytes("astronaut.png"), b"not an image", photo_bytes("coffee.png")])
    assert isinstance(items[0], ScoreResult) and items[0].degraded
    assert items[0].score == pipeline.score(photo_bytes("astronaut.png"))["faces"][0]["score"]["value"]
    assert [getattr(i, "code", None) for i in items[1:]] == ["UNSUPPORTED_FORMAT", "NO_FACE"]
    job = down.submit(photo_bytes("astronaut.png"), max_faces=1)
    assert job.startswith("local-") and down.get(job)["status"] == "succeeded"
    assert down.wait(job).degraded
    failed = down.submit(photo_bytes("coffee.png"))
    with pytest.raises(ServiceError) as info:
        down.wait(failed)
    assert info.value.code == "NO_FACE"
    down.delete(job)
    with pytest.raises(ServiceError) as info:
        down.get(job)
    assert info.value.code == "JOB_NOT_FOUND"
    strict = AurumClient(down.base_url, retries=0)
    for call in (lambda: strict.submit(photo_bytes("astronaut.png")),
                 lambda: strict.score_batch([photo_bytes("astronaut.png")])):
        with pytest.raises(ServiceUnavailable):
            call()


def test_a_submitted_job_is_scored_here_when_the_service_goes_away(stack) -> None:
    """The client keeps the photo of a job it submitted (in memory) until the job ends: when the
    service cannot be reached any more, wait() scores it here, marked degraded."""
    client = AurumClient(stack.base, api_key=stack.http.headers["X-API-Key"], timeout=10, retries=1,
                         backoff=0.01, fallback=True)
    job = client.submit(unique_photo(4100))
    client.base_url = f"http://127.0.0.1:{free_port()}"  # the service is gone for this client
    result = client.wait(job, timeout=30)
    assert result.degraded and result.job_id == "local-" + job and len(result.faces) == 1
    finished = AurumClient(stack.base, api_key=stack.http.headers["X-API-Key"], timeout=10, fallback=True)
    done = finished.submit(unique_photo(4101))
    assert not finished.wait(done, timeout=60).degraded
    assert done not in finished._pending  # a finished job's photo is not kept


def test_cli_submit_and_status(stack, tmp_path) -> None:
    import json
    import subprocess
    import sys

    photo = tmp_path / "a.png"
    photo.write_bytes(unique_photo(500))
    env = {**stack.env, "AURUM_API_KEY": stack.http.headers["X-API-Key"], "AURUM_URL": stack.base}
    out = subprocess.run([sys.executable, "-m", "aurum", "submit", str(photo), "--wait", "20"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["faces"]) == 1
    status = subprocess.run([sys.executable, "-m", "aurum", "status", doc["job_id"]], env=env,
                            capture_output=True, text=True, timeout=30)
    assert json.loads(status.stdout)["status"] == "succeeded"
    batch = subprocess.run([sys.executable, "-m", "aurum", "submit", "--batch", "--wait", "30", str(photo),
                            str(photo)], env=env, capture_output=True, text=True, timeout=60)
    assert batch.returncode == 0 and len(batch.stdout.splitlines()) == 2
