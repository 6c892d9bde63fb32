"""A predictive autoscaler for the worker's pool (``worker_autoscaler``; on with Celery's own
``--autoscale MAX,MIN``, e.g. ``CELERY_WORKER_AUTOSCALE=4,1``).

Celery's default autoscaler grows the pool when more messages are reserved than it has
processes; with one message prefetched per process (acks_late) that never happens, and it looks
only at this worker. This one sizes the pool from what the whole service sees, every
AURUM_AUTOSCALE_INTERVAL seconds:

- the arrival rate: images accepted per second by every API instance (a per-second counter in
  Redis, :func:`service.keyspace.arrivals`), forecast AURUM_AUTOSCALE_HORIZON seconds ahead by
  Holt's linear trend over the last 30 s (and never below the last 5 s's mean);
- the backlog: the queues' length (``aurum_queue_depth``), to be cleared within
  AURUM_AUTOSCALE_DRAIN seconds;
- the service rate: images per busy second of this host's children, from their heartbeats.

    processes (all hosts) = (forecast + backlog / drain) / (service rate x AURUM_AUTOSCALE_UTILISATION)

shared out over the worker hosts beating now, within MIN..MAX. It grows at once and shrinks
only after AURUM_AUTOSCALE_HOLD seconds of wanting fewer (a new child loads its models in a
second or two; flapping costs more). Redis away: the pool stays as it is.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from celery.worker.autoscale import Autoscaler

from service import config, connections, heartbeats, keyspace

log = logging.getLogger(__name__)
WINDOW = 30  # seconds of arrivals the forecast looks at
DEFAULT_RATE = 10.0  # images per busy second of a child, before any child has measured its own


def holt(series: list[float], horizon: float, alpha: float = 0.5, beta: float = 0.3) -> float:
    """Holt's linear trend: the level and trend of ``series`` (one value a second), ``horizon``
    seconds ahead; never below 0."""
    if not series:
        return 0.0
    level, trend = series[0], 0.0
    for value in series[1:]:
        last = level
        level = alpha * value + (1 - alpha) * (level + trend)
        trend = beta * (level - last) + (1 - beta) * trend
    return max(0.0, level + horizon * trend)


def plan(arrivals: list[float], depth: int, rate: float, hosts: int, settings: Any) -> tuple[int, float]:
    """Processes this host should run, and the forecast arrival rate it planned for."""
    recent = sum(arrivals[-5:]) / max(1, len(arrivals[-5:]))
    forecast = max(holt(arrivals, settings.autoscale_horizon), recent)
    need = (forecast + depth / settings.autoscale_drain) / (max(rate, 0.1) * settings.autoscale_utilisation)
    return math.ceil(need / max(1, hosts)), forecast


class Forecasting(Autoscaler):
    def __init__(self, pool, max_concurrency, min_concurrency=0, worker=None, keepalive=None, mutex=None):
        self.settings = config.current()
        super().__init__(pool, max_concurrency, min_concurrency, worker=worker,
                         keepalive=self.settings.autoscale_interval, mutex=mutex)
        self.hostname = getattr(worker, "hostname", None) or ""
        self.client = connections.client(self.settings, timeout=1)
        self._low_since: float | None = None
        self._checked = 0.0
        self._fleet: tuple[float, float, int] = (-heartbeats.INTERVAL, DEFAULT_RATE, 1)  # read at, rate, hosts
        self.last: dict[str, Any] = {}

    def measure(self) -> dict[str, Any]:
        now = int(time.time())
        seconds = list(range(now - WINDOW, now))  # whole seconds only: the current one is still filling
        with self.client.pipeline(transaction=False) as pipe:
            pipe.mget([keyspace.arrivals(t) for t in seconds])
            for queue in ("score",):
                pipe.llen(queue)
            counts, depth = pipe.execute()
        if time.monotonic() - self._fleet[0] >= heartbeats.INTERVAL:
            # the children's records change once a beat: read them once a beat (every host's
            # autoscaler reads them all: at 100 hosts, each second would be MBs a second)
            children = heartbeats.live(self.client)
            mine = [r for m, r in children.items() if m.rsplit(":", 1)[0] == self.hostname]
            done, busy = sum(r.get("done", 0) for r in mine), sum(r.get("busy_s", 0.0) for r in mine)
            self._fleet = (time.monotonic(), done / busy if done >= 5 and busy > 0 else DEFAULT_RATE,
                           len({m.rsplit(":", 1)[0] for m in children}) or 1)
        _, rate, hosts = self._fleet
        return {"arrivals": [float(c or 0) for c in counts], "depth": int(depth), "rate": rate, "hosts": hosts}

    def _maybe_scale(self, req=None):
        now = time.monotonic()
        if now - self._checked < self.settings.autoscale_interval / 2:
            return None  # called on every message too: once per half interval is enough
        self._checked = now
        try:
            seen = self.measure()
        except Exception as exc:  # noqa: BLE001 - Redis away: keep the pool as it is
            log.debug("autoscale: nothing measured: %s", exc)
            return None
        want, forecast = plan(seen["arrivals"], seen["depth"], seen["rate"], seen["hosts"], self.settings)
        want = min(self.max_concurrency, max(self.min_concurrency, want))
        procs = self.processes
        self.last = {**seen, "forecast": round(forecast, 2), "want": want, "processes": procs}
        if want > procs:
            log.info("autoscale: %d -> %d processes (forecast %.1f images/s, %.1f per child-second, "
                     "backlog %d, %d host(s))", procs, want, forecast, seen["rate"], seen["depth"], seen["hosts"])
            self._low_since = None
            self.scale_up(want - procs)
            return True
        if want < procs:
            self._low_since = self._low_since or now
            if now - self._low_since >= self.settings.autoscale_hold:
                log.info("autoscale: %d -> %d processes (forecast %.1f images/s)", procs, want, forecast)
                self._low_since = None
                self._shrink(procs - want)
                return True
            return None
        self._low_since = None
        return None

    # Celery's prefork pool with its event loop hands tasks to children through a semaphore sized
    # at start (the minimum); growing the pool alone left one task running at a time (measured:
    # a second child, and the queue wait still grew at the load one child could not carry).
    def _grow(self, n: int) -> None:
        super()._grow(n)
        semaphore = getattr(self.worker, "semaphore", None)
        if semaphore is not None:
            semaphore.grow(n)

    def _shrink(self, n: int) -> None:
        before = self.processes
        super()._shrink(n)
        semaphore = getattr(self.worker, "semaphore", None)
        if semaphore is not None and self.processes < before:
            semaphore.shrink(before - self.processes)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "plan": {k: v for k, v in self.last.items() if k != "arrivals"}}
