"""Request ids, access logs and Prometheus metrics for the web process.

With several server workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``api/serve.py`` does) and
``/metrics`` aggregates every worker process; queue depth is read from Redis at scrape time.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily

from aurum import logs
from service import heartbeats, tracing

log = logging.getLogger("aurum.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

HTTP_REQUESTS = Counter("aurum_http_requests_total", "HTTP requests by route, method and status",
                        ["route", "method", "status"])
HTTP_SECONDS = Histogram("aurum_http_request_duration_seconds", "HTTP request time by route", ["route"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SUBMISSIONS = Counter("aurum_jobs_submitted_total", "Accepted jobs by kind and path (queued, cached, coalesced)",
                      ["kind", "path"])
REQUEUES = Counter("aurum_jobs_requeued_total", "Jobs published again after waiting, never started, too long")
REPLICATION_LAGS = Counter("aurum_replication_lag_refusals_total",
                           "Submissions refused (503 REPLICATION_LAG) because no replica confirmed them in time")
API_CACHE = Counter("aurum_api_cache_requests_total", "Result-cache lookups made by the API", ["result"])


class QueueDepth:
    """``aurum_queue_depth{queue}``: messages waiting in each Celery queue (Redis list lengths)."""

    def __init__(self, client, queues=("score", "fallback")) -> None:
        self.redis = client
        self.queues = queues

    def collect(self):
        family = GaugeMetricFamily("aurum_queue_depth", "Jobs waiting in each queue", labels=["queue"])
        for queue in self.queues:
            try:
                family.add_metric([queue], self.redis.llen(queue))
            except Exception:  # Redis down: the gauge is absent, /ready says why
                return
        yield family


class LiveChildren:
    """``aurum_worker_children_ready``: worker pool children with their models loaded, from their
    heartbeats (service/heartbeats.py): what /ready counts, and what the no-worker alert watches
    (a scrape of each child's own exporter cannot tell "none" from "not yet scraped")."""

    def __init__(self, client) -> None:
        self.redis = client

    def collect(self):
        try:
            count = len(heartbeats.live(self.redis))
        except Exception:  # Redis down: absent, as with the queue depth
            return
        family = GaugeMetricFamily("aurum_worker_children_ready", "Worker children beating, models loaded")
        family.add_metric([], count)
        yield family


class ModelDrift:
    """Per tracked model version (every role's live version and candidate), read from Redis at
    scrape time (service/comparison.py): ``aurum_model_drift_psi`` and ``aurum_model_drift_p`` per
    measure against its reference, ``aurum_model_drifted`` (1 when a measure passes both
    thresholds), and the faces its recent windows hold. What the drift alert watches."""

    def __init__(self, client, settings) -> None:
        self.redis, self.settings = client, settings

    def collect(self):
        from service import lifecycle

        try:
            reports = lifecycle.drifts(self.redis, self.settings)
        except Exception:  # Redis down, or no manifest here: absent
            return
        psi = GaugeMetricFamily("aurum_model_drift_psi", "Population stability index against the reference",
                                labels=["model", "measure"])
        p = GaugeMetricFamily("aurum_model_drift_p", "Chi-square p-value against the reference",
                              labels=["model", "measure"])
        drifted = GaugeMetricFamily("aurum_model_drifted", "1: a measure shifted past AURUM_DRIFT_PSI and AURUM_DRIFT_P",
                                    labels=["model"])
        faces = GaugeMetricFamily("aurum_model_window_faces", "Faces in the recent windows", labels=["model"])
        for report in reports:
            faces.add_metric([report["model"]], report["faces"])
            if not report["reference_faces"]:
                continue  # no reference yet: nothing to drift from
            drifted.add_metric([report["model"]], int(report["drifted"]))
            for measure, row in report["measures"].items():
                psi.add_metric([report["model"], measure], row["psi"])
                p.add_metric([report["model"], measure], row["p"])
        yield from (psi, p, drifted, faces)


class _ThisProcess:
    """The default registry's metrics, inside the per-app registry (no multiprocess dir)."""

    def collect(self):
        yield from REGISTRY.collect()


def registry(client, settings=None) -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        reg = CollectorRegistry()
        reg.register(_ThisProcess())
    reg.register(QueueDepth(client))
    reg.register(LiveChildren(client))
    if settings is not None:
        reg.register(ModelDrift(client, settings))
    return reg


def register(app: Flask, client, settings=None) -> None:
    scrape = registry(client, settings)

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        logs.request_id.set(g.request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        HTTP_SECONDS.labels(route).observe(elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        tracing.annotate(request_id=g.get("request_id"), job_id=g.get("job_id"))
        if route != "/metrics":
            client_name = getattr(g.get("client"), "name", None)
            log.info("request", extra={"method": request.method, "route": route, "status": response.status_code,
                                       "duration_ms": round(elapsed * 1000, 2), "client": client_name,
                                       "job": g.get("job_id"), "model_route": g.get("route")})
        return response

    @app.route("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(scrape), mimetype=CONTENT_TYPE_LATEST)
