"""The result cache (L1 + Redis) and in-flight coalescing, with a real worker and real Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import redis as redis_lib

from service.cache import ResultCache, cache_key, result_identity
from service.config import ServiceSettings
from aurum.schemas import ScoreOptions

from tests.helpers.photos import encode, photo_rgb, unique_photo
from tests.helpers.api import keyed_client, upload, wait_done


@pytest.fixture(scope="module")
def client(worker):
    from api import create_app

    return keyed_client(create_app(ServiceSettings.from_env()), "cache-tests")


@pytest.fixture
def fresh(client):
    from workers import runtime

    runtime.cache().clear()
    client.application.extensions["aurum.jobs"].cache.clear()


def executions(r: redis_lib.Redis, job_id: str) -> int:
    raw = r.get(f"aurum:deliveries:aurum.score_image:{job_id}")
    return int(raw) if raw else 0


def test_repeat_is_answered_from_cache_without_running_models(client, fresh) -> None:
    r = client.application.extensions["aurum.jobs"].redis
    data = unique_photo(1)
    first = upload(client, data, wait="20").get_json()
    second = upload(client, data, wait="20").get_json()
    assert first["result"]["cached"] is False and second["result"]["cached"] is True
    assert second["result"]["faces"] == first["result"]["faces"]
    assert executions(r, first["job_id"]) == 1 and executions(r, second["job_id"]) == 0
    assert r.get(f"celery-task-meta-{second['job_id']}") is None  # never queued
    assert first["job_id"] != second["job_id"]


def test_options_that_change_the_result_are_part_of_the_key(client, fresh) -> None:
    data = unique_photo(2)
    assert upload(client, data, wait="20").get_json()["result"]["cached"] is False
    with_embedding = upload(client, data, wait="20", return_embedding="true").get_json()
    assert with_embedding["result"]["cached"] is False and "embedding" in with_embedding["result"]["faces"][0]
    explicit_default = upload(client, data, wait="20", max_faces=str(ServiceSettings.from_env().max_faces)).get_json()
    assert explicit_default["result"]["cached"] is True  # an omitted option equals its default


def test_deterministic_failures_are_cached_too(client, fresh) -> None:
    data = encode(np.asarray(photo_rgb("coffee.png")))
    first = upload(client, data, wait="20")
    second = upload(client, data, wait="20")
    assert first.status_code == second.status_code == 422
    assert second.get_json()["error"]["code"] == "NO_FACE"
    r = client.application.extensions["aurum.jobs"].redis
    assert executions(r, second.get_json()["job_id"]) == 0


def test_two_concurrent_submissions_run_the_models_once(client, fresh) -> None:
    r = client.application.extensions["aurum.jobs"].redis
    data = unique_photo(3)
    a = upload(client, data).get_json()["job_id"]
    b = upload(client, data).get_json()["job_id"]  # while a is queued or running
    doc_a = wait_done(client, f"/api/ml/jobs/{a}")
    doc_b = wait_done(client, f"/api/ml/jobs/{b}")
    assert doc_a["result"]["faces"] == doc_b["result"]["faces"]
    assert executions(r, a) == 1 and executions(r, b) == 0
    assert doc_b["result"]["cached"] is True and doc_a["result"]["cached"] is False
    deadline = time.monotonic() + 30  # released just after the result is stored
    while list(r.scan_iter("aurum:inflight:*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(r.scan_iter("aurum:inflight:*"))  # the claim is released


def test_batch_items_come_from_cache_when_known(client, fresh) -> None:
    known = unique_photo(4)
    upload(client, known, wait="20")
    files = {"images": [(io.BytesIO(known), "a.png"), (io.BytesIO(unique_photo(5)), "b.png")]}
    doc = client.post("/api/ml/score/batch?wait=20", data=files, content_type="multipart/form-data").get_json()
    assert [item["cached"] for item in doc["result"]["items"]] == [True, False]


def test_delete_evicts_the_cached_result(client, fresh) -> None:
    data = unique_photo(6)
    job = upload(client, data, wait="20").get_json()["job_id"]
    assert client.delete(f"/api/ml/jobs/{job}").status_code == 204
    again = upload(client, data, wait="20").get_json()
    assert again["result"]["cached"] is False


def test_expiry_and_eviction_reach_l1(redis_server) -> None:
    r = redis_lib.Redis.from_url(f"{redis_server.url}/3")
    sealer = ServiceSettings.from_env().sealer
    cache = ResultCache(r, sealer, ttl=1, l1_size=4)
    cache.put("k", {"faces": []})
    assert cache.get("k") == {"faces": []}
    other_process = ResultCache(r, sealer, ttl=1)
    other_process.evict("k")  # a deletion elsewhere reaches this process's L1 at once
    assert cache.get("k") is None
    cache.put("k", {"faces": []})
    time.sleep(1.2)
    assert cache.get("k") is None and r.get("aurum:cache:k") is None


def test_a_hit_stores_the_record_that_answers_it_and_an_evicted_entry_stores_nothing(redis_server) -> None:
    """ResultCache.answer: an L1 hit is confirmed and its job's record stored in one script, an
    L2 hit reads then stores, and an entry evicted by another process is a miss that stores no
    record (the caller then queues the job)."""
    r = redis_lib.Redis.from_url(f"{redis_server.url}/3")
    sealer = ServiceSettings.from_env().sealer
    cache, other_process = ResultCache(r, sealer, ttl=60), ResultCache(r, sealer, ttl=60)
    cache.put("answer-k", {"faces": [1]})
    sealed = lambda name: lambda doc: (name, sealer.seal_json({"cached": doc}, name.encode()), 30)  # noqa: E731
    assert cache.answer("answer-k", sealed("answer-rec:l1")) == {"faces": [1]}  # from L1
    assert sealer.unseal_json(r.get("answer-rec:l1"), b"answer-rec:l1") == {"cached": {"faces": [1]}}
    assert 0 < r.ttl("answer-rec:l1") <= 30
    assert other_process.answer("answer-k", sealed("answer-rec:l2")) == {"faces": [1]}  # from Redis
    assert r.exists("answer-rec:l2")
    other_process.evict("answer-k")
    assert cache.answer("answer-k", sealed("answer-rec:gone")) is None
    assert not r.exists("answer-rec:gone") and cache.get("answer-k") is None
    r.delete("answer-rec:l1", "answer-rec:l2")


def test_a_follower_waits_for_a_leader_still_storing_its_submission(client, fresh) -> None:
    """A follower whose leader holds the claim but has no record yet (its submission's round
    trip under way) is not promoted to a job of its own; once the claim is gone (the leader's
    submission failed and let it go) it is."""
    jobs = client.application.extensions["aurum.jobs"]
    r = jobs.redis
    data = unique_photo(7)
    leader = "f" * 32  # a leader whose record is not stored yet
    first = upload(client, data).get_json()["job_id"]
    record = jobs.records.load(first)
    key = record["cache_keys"][0]
    wait_done(client, f"/api/ml/jobs/{first}")
    jobs.cache.evict(key)
    r.set(f"aurum:inflight:{key}", leader, ex=60)
    follower = upload(client, data).get_json()["job_id"]
    assert jobs.records.load(follower)["follows"] == leader
    assert client.get(f"/api/ml/jobs/{follower}").get_json()["status"] == "queued"
    assert "follows" in jobs.records.load(follower) and executions(r, follower) == 0
    r.delete(f"aurum:inflight:{key}")  # the leader's submission failed: its cleanup lets the claim go
    doc = wait_done(client, f"/api/ml/jobs/{follower}")
    assert doc["status"] == "succeeded" and executions(r, follower) == 1


def test_model_version_change_misses() -> None:
    settings = ServiceSettings.from_env()
    opts = ScoreOptions().resolve(settings)
    key = lambda versions: cache_key("ab" * 32, result_identity(versions, settings), opts)  # noqa: E731
    assert key({"yunet": "1", "facemesh": "1"}) != key({"yunet": "1", "facemesh": "2"})
    assert key({"yunet": "1", "facemesh": "1"}) == key({"facemesh": "1", "yunet": "1"})


def test_cache_clear_cli(client, redis_server) -> None:
    data = unique_photo(7)
    upload(client, data, wait="20")
    r = client.application.extensions["aurum.jobs"].redis
    assert list(r.scan_iter("aurum:cache:*"))
    out = subprocess.run([sys.executable, "-m", "aurum", "cache", "clear"], capture_output=True, text=True,
                         env={**os.environ, "AURUM_REDIS_URL": f"{redis_server.url}/1"}, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("removed ")
    assert not list(r.scan_iter("aurum:cache:*"))
