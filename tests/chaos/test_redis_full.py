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


def explain(stack: Stack, r: redis.Redis, pending: list[str]) -> str:
    """What a job that never ended looked like: its status, its Redis keys, the queues and the
    logs' tails, so that a failure on a loaded CI machine says why."""
    lines = [f"{len(pending)} accepted job(s) never ended"]
    for job_id in pending:
        try:
            doc = stack.http.get(f"{stack.base}/api/ml/jobs/{job_id}", timeout=10).json()
        except Exception as e:  # noqa: BLE001 - a diagnostic: say what happened
            doc = repr(e)
        keys = sorted(k.decode() for k in r.scan_iter(f"*{job_id}*"))
        lines.append(f"{job_id}: {doc} keys={keys}")
    other = [k for k in r.scan_iter("*") if not k.startswith((b"aurum:", b"celery-task-meta-"))]
    lines.append(f"other keys: { {k.decode(): r.type(k).decode() for k in other} } unacked: {r.hgetall('unacked')}")
    for name in ("web", "worker"):
        tail = (stack.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-40:]
        lines.append(f"--- {name}.log (tail)\n" + "\n".join(tail))
    return "\n".join(lines)


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
    # nor did its consumer restart: each restart resets the event loop that carries the pool's
    # results, and one of 6 runs came back wedged (service/broker.py QoS)
    assert "Connection to broker lost" not in (stack.workdir / "worker.log").read_text(errors="replace")
    assert sorted(done) == sorted(accepted), explain(stack, r, [j for j in accepted if j not in done])
    # a job whose outcome Redis refused to store is a clear, typed failure, never INTERNAL_ERROR
    assert all(d["status"] == "succeeded" or d["error"]["code"] == "SERVICE_UNAVAILABLE" for d in done.values())
