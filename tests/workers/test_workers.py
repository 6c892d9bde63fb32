"""Celery tasks against a real redis-server and a real (in-process) worker with the real models."""

from __future__ import annotations

import shutil
import time

import numpy as np

import pytest
from prometheus_client import REGISTRY
from aurum import errors

from tests.helpers.photos import encode, group_photo, photo_bytes


@pytest.fixture
def fresh_cache(worker):
    """Forget cached results, so that the next job really runs the models."""
    from workers import runtime

    runtime.cache().clear()


def released(key: str, timeout: float = 5.0) -> bool:
    """The worker deletes a job's image right after storing its outcome: wait for it."""
    from workers import runtime

    deadline = time.monotonic() + timeout
    while runtime.images().redis.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not runtime.images().redis.exists(key)


def put(data: bytes) -> str:
    from workers import runtime

    return runtime.images().put(data)


def test_score_image_equals_in_process_result_and_deletes_the_image(worker, pipeline, fresh_cache) -> None:
    from workers.tasks import score_image

    key = put(photo_bytes("astronaut.png"))
    result = score_image.apply_async(args=(key, {"return_embedding": True})).get(timeout=30)
    local = pipeline.score(photo_bytes("astronaut.png"), __import__("aurum.schemas").schemas.load_options(
        {"return_embedding": True}))
    for doc in (result, local):
        doc.pop("timings_ms")
    assert result.pop("cached") is False
    assert result == local
    assert released(key)


@pytest.mark.parametrize("data,code", [
    (b"definitely not an image", "UNSUPPORTED_FORMAT"),
    (photo_bytes("coffee.png"), "NO_FACE"),
    (photo_bytes("rocket.jpg")[:4000], "CORRUPT_IMAGE"),
])
def test_bad_images_fail_at_once_with_their_code(worker, data: bytes, code: str) -> None:
    from workers.tasks import JobFailed, score_image

    key = put(data)
    async_result = score_image.apply_async(args=(key,))
    with pytest.raises(JobFailed) as info:
        async_result.get(timeout=30)
    assert info.value.code == code
    assert async_result.state == "FAILURE"
    assert released(key)


def test_expired_image(worker) -> None:
    from workers.tasks import JobFailed, score_image

    with pytest.raises(JobFailed) as info:
        score_image.apply_async(args=("aurum:image:gone",)).get(timeout=30)
    assert info.value.code == "IMAGE_EXPIRED"


def test_invalid_options_fail_with_invalid_option(worker) -> None:
    from workers.tasks import JobFailed, score_image

    with pytest.raises(JobFailed) as info:
        score_image.apply_async(args=(put(photo_bytes("astronaut.png")), {"max_faces": 0})).get(timeout=30)
    assert info.value.code == "INVALID_OPTION"


def test_batch_reports_per_item_results_and_progress(worker, pipeline) -> None:
    from workers.tasks import score_batch

    canvas, _ = group_photo()
    images = [photo_bytes("astronaut.png"), b"nope", encode(canvas)] * 4  # 12 items: two chunks
    keys = [put(d) for d in images]
    async_result = score_batch.apply_async(args=(keys,))
    seen_progress = set()
    deadline = time.monotonic() + 60
    while not async_result.ready() and time.monotonic() < deadline:
        if async_result.state == "PROGRESS":
            seen_progress.add(async_result.info["done"])
        time.sleep(0.005)
    out = async_result.get(timeout=5)
    assert out["total"] == out["done"] == 12
    for i, item in enumerate(out["items"]):
        if i % 3 == 1:
            assert item["error"]["code"] == "UNSUPPORTED_FORMAT"
        else:
            assert len(item["faces"]) == (1 if i % 3 == 0 else 3)
    single = pipeline.score(encode(canvas))
    assert [f["score"] for f in out["items"][2]["faces"]] == [f["score"] for f in single["faces"]]
    assert seen_progress <= {8, 12}


def test_retryable_error_is_retried_then_succeeds(worker, monkeypatch, fresh_cache) -> None:
    """Fault injection: inference fails twice (as a transient ONNX Runtime error would)."""
    from workers import runtime, tasks

    monkeypatch.setattr(tasks, "backoff", lambda retries: 0.05)
    target = runtime.pipeline()
    calls = {"n": 0}
    real = target.score

    def flaky(data, options=None):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise errors.InferenceFailed("landmarks failed: simulated transient fault")
        return real(data, options)

    monkeypatch.setattr(target, "score", flaky)
    result = tasks.score_image.apply_async(args=(put(photo_bytes("astronaut.png")),)).get(timeout=30)
    assert calls["n"] == 3 and len(result["faces"]) == 1


def test_exhausted_retries_go_to_the_fallback(worker, monkeypatch, fresh_cache) -> None:
    """Inference keeps failing: after MAX_RETRIES the job (same id) is scored by the fallback
    task, a simpler real method, and says so."""
    from workers import runtime, tasks

    monkeypatch.setattr(tasks, "backoff", lambda retries: 0.02)
    calls = {"n": 0}

    def broken(data, options=None):
        calls["n"] += 1
        raise errors.InferenceFailed("landmarks failed: simulated persistent fault")

    monkeypatch.setattr(runtime.pipeline(), "score", broken)
    key = put(photo_bytes("astronaut.png"))
    job = tasks.score_image.apply_async(args=(key,))
    result = job.get(timeout=30)
    assert calls["n"] == tasks.MAX_RETRIES + 1
    assert result["degraded"] is True and "INFERENCE_FAILED" in result["degraded_reason"]
    assert len(result["faces"]) == 1 and result["faces"][0]["score"]["model"].startswith("fallback_haar@")
    x, y, w, h = result["faces"][0]["box"]
    assert np.allclose([x + w / 2, y + h / 2], [223, 120], atol=10)  # the same face, found by Haar
    assert released(key)


def test_a_bug_fails_the_job_internal_error_without_retry_or_fallback(worker, monkeypatch, fresh_cache) -> None:
    """A bug in our own code is not an inference failure: one attempt, INTERNAL_ERROR (a 500
    for the API, a Sentry report), never a degraded fallback result."""
    from service.contract import failure
    from workers import runtime, tasks

    calls = {"n": 0}

    def bug(data, options=None):
        calls["n"] += 1
        raise KeyError("simulated bug")

    monkeypatch.setattr(runtime.pipeline(), "score", bug)
    job = tasks.score_image.apply_async(args=(put(photo_bytes("astronaut.png")),))
    with pytest.raises(KeyError) as raised:
        job.get(timeout=30)
    assert calls["n"] == 1 and failure(raised.value)["error"]["code"] == "INTERNAL_ERROR"


def test_models_that_cannot_load_go_straight_to_the_fallback(worker, tmp_path, monkeypatch, service_env,
                                                             settings) -> None:
    """A real load failure: a model file that no longer matches its checksum."""
    from workers import runtime, tasks

    models = tmp_path / "models"
    shutil.copytree(settings.models_dir, models)
    (models / "facemesh.onnx").write_bytes(b"corrupted")
    service_env(AURUM_MODELS_DIR=str(models))
    monkeypatch.setattr(runtime, "_pipeline", None)
    failures = REGISTRY.get_sample_value("aurum_model_load_failures_total") or 0
    result = tasks.score_image.apply_async(args=(put(photo_bytes("astronaut.png")),)).get(timeout=30)
    assert result["degraded"] is True and "MODEL_CHECKSUM_MISMATCH" in result["degraded_reason"]
    assert REGISTRY.get_sample_value("aurum_model_load_failures_total") > failures  # the operator is paged
    with pytest.raises(tasks.JobFailed) as info:
        tasks.score_image.apply_async(args=(put(photo_bytes("coffee.png")),)).get(timeout=30)
    assert info.value.code == "NO_FACE"
    batch = tasks.score_batch.apply_async(args=([put(photo_bytes("astronaut.png")), put(b"junk")],)).get(timeout=30)
    assert batch["degraded"] is True
    assert len(batch["items"][0]["faces"]) == 1 and batch["items"][1]["error"]["code"] == "UNSUPPORTED_FORMAT"
    monkeypatch.setattr(runtime, "_pipeline", None)  # the next test loads the real models again


def test_redelivered_job_becomes_a_dead_letter(worker) -> None:
    """A message that keeps coming back is failed with POISON_MESSAGE: simulate its earlier
    deliveries (each killed its worker) by the counter a real delivery increments."""
    from workers import runtime
    from service.keyspace import DEAD_LETTERS
    from workers.tasks import MAX_DELIVERIES, JobFailed, score_image

    job_id = "poison-job-1"
    store = runtime.images().redis
    store.set(f"aurum:deliveries:aurum.score_image:{job_id}", MAX_DELIVERIES)
    image = put(photo_bytes("astronaut.png"))
    with pytest.raises(JobFailed) as info:
        score_image.apply_async(args=(image,), task_id=job_id).get(timeout=30)
    assert info.value.code == "POISON_MESSAGE"
    assert job_id.encode() in store.lrange(DEAD_LETTERS, 0, -1)
    # a dead letter keeps its sealed image, for an operator to re-queue, until the image's TTL
    assert not released(image, timeout=1.0), "a dead letter's image went: it could not be re-queued"
    assert 0 < store.ttl(image) <= runtime.settings().image_ttl
    assert photo_bytes("astronaut.png") not in store.get(image)  # sealed, never in clear
    store.delete(image)


@pytest.mark.parametrize("task_name,photo,stored_as", [
    ("score_batch", "astronaut.png", "mark_as_done"),
    ("score_fallback", "astronaut.png", "mark_as_done"),
    ("score_fallback", "coffee.png", "mark_as_failure"),  # NO_FACE
])
def test_images_are_released_only_after_the_outcome_is_stored(worker, monkeypatch, fresh_cache,
                                                                task_name, photo, stored_as) -> None:
    """A worker killed between the two (or a store that fails) must leave the job able to run
    again: so its images are still there when its outcome is stored, and gone after."""
    import uuid

    from workers import runtime, tasks

    backend_class = type(tasks.score_batch.backend)  # each thread has its own backend instance
    real_store, seen = getattr(backend_class, stored_as), []

    def watching_store(self, task_id, *args, **kwargs):
        if task_id == job_id:
            seen.append(bool(runtime.images().redis.exists(key)))
        return real_store(self, task_id, *args, **kwargs)

    monkeypatch.setattr(backend_class, stored_as, watching_store)
    job_id, key = str(uuid.uuid4()), put(photo_bytes(photo))
    task = getattr(tasks, task_name)
    args = ([key],) if task_name == "score_batch" else ([key], None, "test", False)
    async_result = task.apply_async(args=args, task_id=job_id)
    async_result.get(timeout=30, propagate=False)
    assert async_result.state == ("SUCCESS" if stored_as == "mark_as_done" else "FAILURE")
    assert seen == [True], "the images went before the outcome was stored"
    assert released(key)


def test_messages_carry_keys_not_images(worker) -> None:
    from workers import runtime
    from workers.tasks import score_image

    key = put(photo_bytes("astronaut.png"))
    sig = score_image.s(key)
    assert sig.args == (key,) and len(repr(sig)) < 200
    runtime.images().delete(key)  # never run: leave no image behind for the tests after


def test_cache_keys_made_for_another_result_identity_are_left_alone(worker, fresh_cache) -> None:
    """The API keys a job's cache entry with the result identity its workers report (models and
    the settings that change a result). A child with another identity (a rolling upgrade) neither
    reads nor writes those keys: the entry would name models that did not make it."""
    import secrets

    from service.cache import identity_digest
    from service.contract import failure
    from workers import runtime
    from workers.tasks import JobFailed, score_image

    cache, ours = runtime.cache(), identity_digest(runtime.identity())
    planted, fresh = secrets.token_hex(32), secrets.token_hex(32)
    cache.put(planted, {"error": {"code": "NO_FACE", "message": "planted by the test"}})
    with pytest.raises(JobFailed) as info:  # same identity: the entry is used
        score_image.apply_async(args=(put(photo_bytes("astronaut.png")), None, planted),
                                headers={"aurum_identity": ours}).get(timeout=60)
    assert failure(info.value)["error"]["message"] == "planted by the test"
    result = score_image.apply_async(args=(put(photo_bytes("astronaut.png")), None, planted),
                                     headers={"aurum_identity": "0" * 16}).get(timeout=60)
    assert len(result["faces"]) == 1 and result["cached"] is False  # another identity: scored, not read
    score_image.apply_async(args=(put(photo_bytes("astronaut.png")), None, fresh),
                            headers={"aurum_identity": "0" * 16}).get(timeout=60)
    assert cache.get(fresh) is None  # ... and not written
    score_image.apply_async(args=(put(photo_bytes("astronaut.png")), None, fresh),
                            headers={"aurum_identity": ours}).get(timeout=60)
    assert cache.get(fresh) is not None


def test_worker_thread_budget() -> None:
    from workers.runtime import ort_threads

    assert ort_threads(2, cores=2) == 1
    assert ort_threads(1, cores=2) == 2
    assert ort_threads(None, cores=4) == 1
    assert ort_threads(8, cores=2) == 1


def test_gpu_pinning_wiring_falls_back_to_cpu_here(monkeypatch, service_env, caplog) -> None:
    """AURUM_DEVICE=cuda, AURUM_GPUS=3,5: child 1 asks for GPU 5; without a CUDA provider it
    runs on the CPU with one warning (this machine has no GPU)."""
    import logging

    from aurum import store
    from workers import runtime

    service_env(AURUM_DEVICE="cuda", AURUM_GPUS="3,5")
    monkeypatch.setattr(store, "_warned_no_cuda", False)
    with caplog.at_level(logging.WARNING, logger="aurum.store"):
        pipe = runtime.load(child_index=1, concurrency=2)
    monkeypatch.setattr(runtime, "_pipeline", None)
    assert pipe.settings.gpus == (5,) and pipe.store.device_id == 5
    assert {m.provider for m in pipe.store.loaded().values()} == {"CPUExecutionProvider"}
    assert len([r for r in caplog.records if "CUDA" in r.getMessage()]) == 1


def test_ready_reads_heartbeats_not_a_broadcast(redis_server, monkeypatch) -> None:
    """/ready is one Redis read of the children's heartbeats: it never broadcasts to the workers.
    It is ready while a child beats, consumes both queues and holds keys that open what this API
    seals; not ready once the beats are older than the TTL, without an encryption key here, with
    a queue nobody consumes, or with other keys in the workers."""
    import time

    import redis as redis_lib
    from celery.app.control import Control

    from api.health import Health
    from service.config import ServiceSettings
    from service.sealing import new_key, parse_keys
    from service import heartbeats, keyspace

    def health_with(keys: str) -> Health:
        return Health(client, ServiceSettings.from_env(encryption_keys=keys))

    monkeypatch.setattr(Control, "ping", lambda *a, **k: pytest.fail("a broadcast from /ready"))
    client = redis_lib.Redis.from_url(f"{redis_server.url}/0")  # this module's worker beats in /1
    client.delete(keyspace.HEARTBEATS, keyspace.WORKERS)
    ours = new_key("k1")
    prints = list(parse_keys(ours).fingerprints)
    record = {"hostname": "celery@host", "child": 1, "queues": ["fallback", "score"], "keys": prints, "models": []}
    health = health_with(ours)
    ok, body = health.readiness()
    assert not ok and body["reasons"] == ["NO_WORKER"]
    client.zadd(keyspace.HEARTBEATS, {"celery@old:0": time.time() - heartbeats.TTL - 1})
    assert not health.readiness()[0]  # a stale beat is no worker
    heartbeats.beat(client, "celery@host:1", record)
    ok, body = health.readiness()
    assert ok and body["checks"]["workers"] == ["celery@host"] and body["checks"]["children_with_models"] == 1
    heartbeats.beat(client, "celery@host:1", {**record, "queues": ["score"]})
    assert health.readiness()[1]["reasons"] == ["QUEUE_NOT_CONSUMED"]
    heartbeats.beat(client, "celery@host:1", {**record, "keys": list(parse_keys(new_key("k1")).fingerprints)})
    assert health.readiness()[1]["reasons"] == ["KEY_MISMATCH"]  # same key id, other key
    heartbeats.beat(client, "celery@host:1", record)
    assert health_with("").readiness()[1]["reasons"] == ["NO_ENCRYPTION_KEY"]
    rotating = health_with(f"{new_key('k2')},{ours}")  # k2 seals, k1 still opens
    assert rotating.readiness()[1]["reasons"] == ["KEY_MISMATCH"]  # the workers cannot open k2 yet
    heartbeats.stop(client, "celery@host:1")
    assert health.live_children() == {}


def test_a_loaded_child_beats(worker) -> None:
    """The module's worker loaded its models (worker_process_init): its child is in the set."""

    import redis as redis_lib

    from service.config import ServiceSettings as Settings
    from service import heartbeats

    client = redis_lib.Redis.from_url(Settings.from_env().redis_url)  # the database the worker uses
    fresh = heartbeats.live(client)
    assert fresh and all(m.rsplit(":", 1)[1].isdigit() for m in fresh)
    record = next(iter(fresh.values()))
    assert set(record["queues"]) >= {"score", "fallback"} and record["keys"] and record["models"]
