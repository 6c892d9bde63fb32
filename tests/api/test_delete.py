"""DELETE removes everything of a job, on every path (finished, cached, coalesced, batch,
queued, running), and the result cache is scoped per API key. After each path the test lists
every key in the Redis database: only the job's tombstone may still name it."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from service.config import ServiceSettings

from tests.helpers.api import keyed_client, upload, wait_done
from tests.helpers.photos import unique_photo

# Families that belong to no job (API keys, limits, workers' heartbeats and model records, the
# model versions' routing policy, window counts and anonymous shadow pairs, the per-second
# arrival counts the autoscaler forecasts from: service/keyspace.py)
# and Celery's own queues; anything else left in the database after a DELETE is a leak.
SERVICE_WIDE = ("aurum:key:", "aurum:keys", "aurum:limits", "aurum:heartbeats", "aurum:workers", "aurum:deleted:",
                "aurum:models:", "aurum:arrivals:")
SLOW = 4.0  # seconds a "slow" photo's job sleeps in the worker (AURUM_CHAOS)


@pytest.fixture(scope="module")
def app(worker):
    from api import create_app

    return create_app(ServiceSettings.from_env(rate_limit="10000/minute", batch_image_limit="10000/minute"))


@pytest.fixture(scope="module")
def alice(app):
    return keyed_client(app, "delete-alice")


@pytest.fixture(scope="module")
def bob(app):
    return keyed_client(app, "delete-bob")


@pytest.fixture
def redis(app):
    return app.extensions["aurum.jobs"].redis


@pytest.fixture
def clean(app, redis):
    """An empty cache and no earlier job's keys, so that every key left is this test's."""
    from workers import runtime

    runtime.cache().clear()
    app.extensions["aurum.jobs"].cache.clear()
    for key in redis.scan_iter("aurum:*"):
        if not key.decode().startswith(SERVICE_WIDE[:5]):
            redis.delete(key)
    for key in redis.scan_iter("celery-task-meta-*"):
        redis.delete(key)


@pytest.fixture
def slow(monkeypatch):
    """A photo whose job sleeps SLOW seconds in the worker thread (the solo worker reads
    AURUM_CHAOS at each job)."""
    data = unique_photo(7100 + int(time.time() * 1000) % 500)
    monkeypatch.setenv("AURUM_CHAOS", json.dumps({"sleep": {hashlib.sha256(data).hexdigest(): SLOW}}))
    return data


def leftovers(redis, job_ids: list[str]) -> list[str]:
    """Every key that is not service-wide, plus any service-wide key naming one of the jobs
    other than its tombstone (which holds no data)."""
    left = []
    for raw in redis.scan_iter("*"):
        key = raw.decode()
        if key in ("score", "fallback") or key.startswith(("_kombu.", "unacked")):
            continue  # Celery's queues and bindings
        if key.startswith(SERVICE_WIDE):
            if any(j in key for j in job_ids) and not key.startswith("aurum:deleted:"):
                left.append(key)
            continue
        left.append(key)
    return sorted(left)


def settle(client) -> None:
    """Wait until the single worker thread has run everything queued before now: a job sent
    after them ends after them."""
    job = upload(client, unique_photo(7000), wait="30").get_json()
    assert job["status"] == "succeeded"
    client.delete(f"/api/ml/jobs/{job['job_id']}")


def wait_status(client, job_id: str, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/api/ml/jobs/{job_id}").get_json()["status"] != wanted:
        assert time.monotonic() < deadline, f"the job never became {wanted}"
        time.sleep(0.02)


def test_a_finished_job_leaves_nothing(alice, redis, clean) -> None:
    doc = upload(alice, unique_photo(7001), wait="30", return_embedding="true").get_json()
    assert doc["status"] == "succeeded" and leftovers(redis, [doc["job_id"]])  # result, cache entry...
    assert alice.delete(f"/api/ml/jobs/{doc['job_id']}").status_code == 204
    assert leftovers(redis, [doc["job_id"]]) == []


def test_a_batch_leaves_no_item_in_the_cache(alice, bob, redis, clean) -> None:
    files = {"images": [(io.BytesIO(unique_photo(7002)), "a.png"), (io.BytesIO(unique_photo(7003)), "b.png")]}
    doc = alice.post("/api/ml/score/batch?wait=30", data=files, content_type="multipart/form-data").get_json()
    assert doc["status"] == "succeeded" and list(redis.scan_iter("aurum:cache:*"))
    assert alice.delete(f"/api/ml/jobs/{doc['job_id']}").status_code == 204
    assert leftovers(redis, [doc["job_id"]]) == []
    again = upload(alice, unique_photo(7002), wait="30", return_embedding="true").get_json()
    assert again["result"]["cached"] is False  # the item's cached result (embedding too) is gone


def test_a_cache_hit_and_its_source_leave_nothing(alice, redis, clean) -> None:
    first = upload(alice, unique_photo(7004), wait="30").get_json()
    hit = upload(alice, unique_photo(7004), wait="30").get_json()
    assert hit["result"]["cached"] is True
    for doc in (hit, first):
        assert alice.delete(f"/api/ml/jobs/{doc['job_id']}").status_code == 204
    assert leftovers(redis, [first["job_id"], hit["job_id"]]) == []


def test_a_job_deleted_while_it_runs_stores_nothing_afterwards(alice, redis, clean, slow) -> None:
    job = upload(alice, slow).get_json()["job_id"]
    wait_status(alice, job, "running")
    assert alice.delete(f"/api/ml/jobs/{job}").status_code == 204
    settle(alice)  # the slow job has ended by now, and stored its result and cache entry
    assert leftovers(redis, [job]) == []
    assert alice.get(f"/api/ml/jobs/{job}").status_code == 404
    assert upload(alice, slow, wait="30").get_json()["result"]["cached"] is False


def test_a_queued_job_deleted_is_dropped_by_the_worker(alice, redis, clean, slow) -> None:
    busy = upload(alice, slow).get_json()["job_id"]  # holds the single worker thread
    wait_status(alice, busy, "running")
    queued = upload(alice, unique_photo(7005)).get_json()["job_id"]
    assert alice.delete(f"/api/ml/jobs/{queued}").status_code == 204
    settle(alice)
    alice.delete(f"/api/ml/jobs/{busy}")
    assert leftovers(redis, [queued, busy]) == []  # no REVOKED or IMAGE_EXPIRED state, no counter


def test_a_follower_of_a_deleted_job_runs_on_its_own(alice, bob, redis, clean, slow) -> None:
    leader = upload(alice, slow).get_json()["job_id"]
    wait_status(alice, leader, "running")
    follower = upload(alice, slow).get_json()["job_id"]
    assert alice.delete(f"/api/ml/jobs/{leader}").status_code == 204
    doc = wait_done(alice, f"/api/ml/jobs/{follower}?wait=30", timeout=90)
    assert doc["status"] == "succeeded" and len(doc["result"]["faces"]) == 1
    other = upload(bob, slow, wait="30").get_json()  # another key never follows or hits alice's
    assert other["status"] == "succeeded" and other["result"]["cached"] is False
    for client, job in ((alice, follower), (bob, other["job_id"])):
        assert client.delete(f"/api/ml/jobs/{job}").status_code == 204
    assert leftovers(redis, [leader, follower, other["job_id"]]) == []


def test_the_cache_is_scoped_per_api_key(alice, bob, clean) -> None:
    data = unique_photo(7006)
    assert upload(alice, data, wait="30").get_json()["result"]["cached"] is False
    assert upload(bob, data, wait="30").get_json()["result"]["cached"] is False  # bob learns nothing
    assert upload(alice, data, wait="30").get_json()["result"]["cached"] is True
