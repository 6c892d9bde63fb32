"""Redis crashes (SIGKILL) in the middle of a run and comes back on its AOF (appendfsync always):
the API answers 503 within a second while it is down, recovers without a restart, and every job
that got a 202 ends."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.helpers.stack import Stack
from tests.helpers.photos import unique_photo
from .common import record, settle, submit


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("outage"), appendonly=True, fsync="always",
               extra_env={"AURUM_REQUEUE_AFTER": "15",  # a message popped as Redis died is published again
                          # a job whose worker lost Redis mid-task comes back after the visibility
                          # timeout (4 x the hard limit): keep it short for a bounded test
                          "AURUM_TASK_SOFT_TIME_LIMIT": "5", "AURUM_TASK_TIME_LIMIT": "8",
                          # no batches here: the visibility timeout stays 4 x the hard limit
                          "AURUM_TASK_IMAGE_SECONDS": "0"}) as s:
        yield s


def test_redis_crash_and_restart(stack) -> None:
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    slowest_503 = 0.0
    stop = threading.Event()
    lock = threading.Lock()

    def client(offset: int) -> None:
        nonlocal slowest_503
        i = 0
        while not stop.is_set():
            start = time.monotonic()
            try:
                response = submit(stack, unique_photo(20_000 + offset * 1000 + i), timeout=5)
                code = response.status_code
            except requests.RequestException:
                code = -1
            elapsed = time.monotonic() - start
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
                if code == 202:
                    accepted.append(response.json()["job_id"])
                elif code == 503:
                    slowest_503 = max(slowest_503, elapsed)
            i += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stack.redis.kill()              # a crash, not a clean shutdown
    time.sleep(3.0)                 # down for three seconds
    stack.redis.start()             # back, with what the AOF kept
    time.sleep(4.0)                 # the API must accept again without being restarted
    stop.set()
    for t in threads:
        t.join()
    accepted_after = statuses.get(202, 0)
    done = settle(stack, accepted, deadline_s=150)
    lost = [j for j in accepted if j not in done]
    lost_states = [stack.http.get(f"{stack.base}/api/ml/jobs/{j}", timeout=5).json().get("status") for j in lost]
    outcomes = {}
    for doc in done.values():
        key = "succeeded" if doc["status"] == "succeeded" else doc["error"]["code"]
        outcomes[key] = outcomes.get(key, 0) + 1
    import re

    requeued = sum(float(m) for m in re.findall(r"^aurum_jobs_requeued_total (\S+)$",
                                                stack.http.get(stack.base + "/metrics", timeout=5).text, re.M))
    record("redis-outage", {"responses": {str(k): v for k, v in sorted(statuses.items())}, "requeued": requeued,
                            "accepted": len(accepted), "lost": len(lost), "lost_states": lost_states, "outcomes": outcomes,
                            "slowest_503_s": round(slowest_503, 3), "worker_restarts": stack.worker_restarts})
    assert statuses.get(503, 0) > 0, "the outage was not seen"
    assert set(statuses) <= {202, 503}, statuses  # no 500, no hang (-1)
    assert slowest_503 < 1.0
    assert accepted_after > 20
    assert lost == [], f"{len(lost)} accepted jobs never ended"
    # A job running when Redis died may end with an explicit TIMEOUT (its worker blocked on Redis
    # past this test's 5 s soft limit) or SERVICE_UNAVAILABLE (Redis gone through its retries, or
    # unable to keep its outcome): a clear failure, not a lost job; only those few.
    clear = {"TIMEOUT", "SERVICE_UNAVAILABLE"}
    assert set(outcomes) <= {"succeeded"} | clear and sum(outcomes.get(c, 0) for c in clear) <= 4, outcomes
