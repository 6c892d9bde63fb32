"""The predictive autoscaler (workers/autoscale.py): its plan on known figures, and on a live stack
(the Procfile's worker with CELERY_WORKER_AUTOSCALE=2,1) a 4x step in load: the pool grows from
one child to two and the queue wait is back under a second within 60 s; the load falls back and
the pool shrinks again after its hold."""

from __future__ import annotations

import statistics
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from tests.chaos.common import record
from bench.scaleout import photo
from tests.helpers.photos import unique_photo
from tests.helpers.stack import Stack
from workers.autoscale import holt, plan

SETTINGS = SimpleNamespace(autoscale_horizon=5.0, autoscale_drain=10.0, autoscale_utilisation=0.7)


def test_the_forecast_follows_a_trend_and_the_plan_the_backlog() -> None:
    assert holt([10.0] * 30, 5) == pytest.approx(10.0)
    rising = [float(t) for t in range(30)]  # +1 image/s each second
    assert 30 < holt(rising, 5) < 38  # ahead of the last value, by about the horizon's trend
    assert holt([0.0] * 30, 5) == 0.0
    # 14 images/s at 10 per child-second, 70 % busy: 2 children; with 100 queued, 4 (3.43 rounded up)
    assert plan([14.0] * 30, 0, 10.0, 1, SETTINGS)[0] == 2
    assert plan([14.0] * 30, 100, 10.0, 1, SETTINGS)[0] == 4
    assert plan([14.0] * 30, 0, 10.0, 2, SETTINGS)[0] == 1  # two hosts share it
    assert plan([0.0] * 25 + [20.0] * 5, 0, 10.0, 1, SETTINGS)[0] >= 3  # a step counts at once


class OpenLoop:
    """Submissions at a fixed rate, whatever the answers take (each waits for its result): the
    arrivals a service sees, not a closed loop that slows down with it."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.rate = stack, 0.0
        stack.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=128))
        self.done: list[tuple[float, float, float]] = []  # (sent at, latency, compute seconds)
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seed = 0
        self.photos = [photo(50_000 + i) for i in range(3000)]  # made before: the clients only send

    def _one(self, seed: int) -> None:
        start = time.monotonic()
        try:
            response = self.stack.http.post(self.stack.base + "/api/ml/score", params={"wait": 30},
                                            files={"image": ("p.jpg", self.photos[seed % len(self.photos)])},
                                            timeout=60)
            doc = response.json()
            ok = response.status_code == 200 and doc["status"] == "succeeded"
        except (requests.RequestException, ValueError):
            ok = False
        with self._lock:
            if ok:
                self.done.append((start, time.monotonic() - start, doc["result"]["timings_ms"]["total"] / 1000))
            else:
                self.failed += 1

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.rate <= 0:
                time.sleep(0.05)
                next_at = time.monotonic()
                continue
            self._seed += 1
            threading.Thread(target=self._one, args=(self._seed,), daemon=True).start()
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def waits(self, since: float, until: float) -> list[float]:
        """Queue wait of the jobs sent in [since, until): latency less compute."""
        with self._lock:
            return [lat - comp for sent, lat, comp in self.done if since <= sent < until]


def children(stack: Stack) -> int:
    return len(stack.worker_children())


@pytest.mark.slow
def test_a_4x_load_step_is_followed_by_the_pool(tmp_path) -> None:
    with Stack(tmp_path, extra_env={"CELERY_WORKER_AUTOSCALE": "2,1", "AURUM_ORT_THREADS": "1",
                                    "AURUM_CACHE_TTL": "0", "AURUM_AUTOSCALE_HOLD": "15"}) as stack:
        deadline = time.monotonic() + 60
        while children(stack) != 1:  # the pool starts at its minimum
            assert time.monotonic() < deadline, children(stack)
            time.sleep(0.5)
        # one child's service rate, measured here (one thread each: a core per child)
        probe = [stack.http.post(stack.base + "/api/ml/score", params={"wait": 30},
                                 files={"image": ("p", unique_photo(90_000 + i))}, timeout=60).json()
                 for i in range(10)]
        per_image = statistics.median(d["result"]["timings_ms"]["total"] for d in probe) / 1000
        # 20 % of what one child does alone, then 80 %: more than one child is planned to carry
        # (AURUM_AUTOSCALE_UTILISATION 0.7), within what two can on these two cores
        low = 0.2 / per_image
        load = OpenLoop(stack)
        runner = threading.Thread(target=load.run, daemon=True)
        runner.start()
        pools: list[tuple[float, int]] = []
        try:
            load.rate = low
            t0 = time.monotonic()
            while time.monotonic() - t0 < 35:  # the start looks like a rising trend: let it settle
                pools.append((time.monotonic() - t0, children(stack)))
                time.sleep(1)
            load.rate = 4 * low
            step = time.monotonic()
            while time.monotonic() - step < 60:
                pools.append((time.monotonic() - t0, children(stack)))
                time.sleep(1)
            load.rate = low
            back = time.monotonic()
            while time.monotonic() - back < 35:
                pools.append((time.monotonic() - t0, children(stack)))
                time.sleep(1)
        finally:
            load._stop.set()
            runner.join()
        time.sleep(5)  # the last answers
        before = load.waits(t0 + 5, step)
        windows = [(s, load.waits(step + s, step + s + 5)) for s in range(0, 60, 5)]
        p90 = {s: round(statistics.quantiles(w, n=10)[-1], 3) if len(w) >= 2 else None for s, w in windows}
        grew = next((t - (step - t0) for t, n in pools if t >= step - t0 and n == 2), None)
        settled = next((s for s, v in p90.items() if v is not None and v < 1.0
                        and all(x is not None and x < 1.0 for k, x in p90.items() if k >= s)), None)
        record("autoscale", {"seconds_per_image": round(per_image, 4), "rates": [round(low, 2), round(4 * low, 2)],
                             "pool": pools, "queue_wait_p90_before_step": round(statistics.quantiles(before, n=10)[-1], 3),
                             "queue_wait_p90_by_5s_after_step": p90, "second_child_after_s": grew,
                             "wait_under_1s_from_s": settled, "failed": load.failed,
                             "children_at_end": children(stack)})
        assert load.failed == 0
        before_step = [n for t, n in pools if step - t0 - 4 <= t < step - t0]
        assert before_step and set(before_step) == {1}, pools  # one child carried the low load
        assert grew is not None and grew < 30, pools
        assert settled is not None and settled + 5 <= 60, p90  # queue wait back under 1 s within 60 s
        assert children(stack) == 1, pools  # and it let the second child go once the load fell
