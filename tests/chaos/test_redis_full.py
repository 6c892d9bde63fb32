"""Redis full (maxmemory reached, noeviction: every write is refused with OOM) while the workers
are busy and jobs are queued: the worker process rides it out (no exit, no restart by the
supervisor) and every job that got a 202 ends once Redis has room again."""

from __future__ import annotations

import time

import pytest
import redis

from tests.helpers.photos import unique_photo
from tests.helpers.stack import Stack
from .common import record, settle, sha, submit

BUSY = [unique_photo(8800 + i) for i in range(2)]  # one per pool child, each 4 s (AURUM_CHAOS)
FULL_SECONDS = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import json

    chaos = json.dumps({"sleep": {sha(p): 4 for p in BUSY}})
    with Stack(tmp_path_factory.mktemp("redis-full"),
               extra_env={"AURUM_CHAOS": chaos, "AURUM_REQUEUE_AFTER": "10",
                          "AURUM_TASK_SOFT_TIME_LIMIT": "6", "AURUM_TASK_TIME_LIMIT": "8"}) as s:
        yield s


def test_the_worker_rides_out_a_full_redis(stack) -> None:
    r = redis.Redis.from_url(stack.redis.url_for(0))
    pid = stack.worker.pid
    accepted = [submit(stack, p).json()["job_id"] for p in BUSY]
    time.sleep(1.0)  # both children are inside their 4 s jobs
    accepted += [submit(stack, unique_photo(8900 + i)).json()["job_id"] for i in range(4)]  # these wait
    r.config_set("maxmemory", 1)  # below what Redis uses: every write that needs memory fails
    try:
        time.sleep(FULL_SECONDS)  # the busy jobs end (storing their outcome fails), queued ones are fetched
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("aurum:test:probe", b"x")
    finally:
        r.config_set("maxmemory", 0)
    done = settle(stack, accepted, deadline_s=120)
    record("redis-full", {"accepted": len(accepted), "ended": len(done), "worker_restarts": stack.worker_restarts,
                          "statuses": sorted(d["status"] for d in done.values()),
                          "errors": sorted(d["error"]["code"] + ": " + d["error"]["message"][:120] for d in done.values() if d["status"] == "failed")})
    assert stack.worker_restarts == 0 and stack.worker.pid == pid and stack.worker.poll() is None
    assert sorted(done) == sorted(accepted)  # every accepted job ended: a result or a clear failure
    # a job whose outcome Redis refused to store is a clear, typed failure, never INTERNAL_ERROR
    assert all(d["status"] == "succeeded" or d["error"]["code"] == "SERVICE_UNAVAILABLE" for d in done.values())
