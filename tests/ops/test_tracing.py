"""One trace per job, API to worker: the Procfile stack with OTEL_EXPORTER_OTLP_ENDPOINT at a
receiver the test runs; the spans of one scoring request share one trace id, cover the HTTP
request, the publish, the worker's run and every pipeline stage, carry the ids, and hold
nothing computed from the photo."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from tests.helpers.otlp import OtlpReceiver
from tests.helpers.photos import photo_bytes
from tests.helpers.stack import Stack

STAGES = {"aurum.decode", "aurum.detect", "aurum.landmarks", "aurum.embedding", "aurum.score", "aurum.quality"}


def test_one_trace_runs_from_the_request_through_the_queue_into_every_stage(tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    try:
        with Stack(tmp_path / "stack", extra_env=env) as stack:
            response = stack.http.post(stack.base + "/api/ml/score", params={"wait": 20},
                                       headers={"X-Request-ID": "trace-test-request-1"},
                                       files={"image": ("a.png", io.BytesIO(photo_bytes("astronaut.png")))},
                                       data={"return_embedding": "true", "return_landmarks": "true"}, timeout=60)
            assert response.status_code == 200, response.text
            job = response.json()["job_id"]
            deadline = time.monotonic() + 60
            trace: list = []
            while time.monotonic() < deadline:
                roots = [s for s in receiver.spans if s.attributes.get("aurum.job_id") == job and s.service == "aurum-api"]
                trace = receiver.trace(roots[0].trace_id) if roots else []
                if STAGES <= {s.name for s in trace} and any(s.service == "aurum-worker" for s in trace):
                    break
                time.sleep(0.5)
            names = {s.name for s in trace}
            assert STAGES <= names, f"stages missing from the trace: {sorted(STAGES - names)}; got {sorted(names)}"
            services = {s.service for s in trace}
            assert services == {"aurum-api", "aurum-worker"}
            request_span = next(s for s in trace if s.service == "aurum-api" and s.attributes.get("aurum.job_id") == job)
            assert request_span.attributes["aurum.request_id"] == "trace-test-request-1"
            assert any(n.startswith("apply_async/") for n in names), "no publish span"  # Celery's instrumentation
            run = next(s for s in trace if s.name.startswith("run/aurum.score"))
            assert run.attributes["aurum.job_id"] == job and run.attributes["aurum.queue_seconds"] >= 0
            stage_parents = {s.parent_id for s in trace if s.name in STAGES}
            assert stage_parents == {run.span_id}, "the stages are not children of the job's run"
            # nothing computed from the photo: no result, landmarks, embedding or image in any span
            result = response.json()["result"]
            secrets = {json.dumps(result["faces"][0]["embedding"][:4])[1:-1]}  # four numbers in a row
            for span in receiver.spans:
                for key, value in span.attributes.items():
                    text = json.dumps(value)
                    assert len(text) < 400, (span.name, key)
                    assert not any(s in text for s in secrets), (span.name, key)
                    assert "embedding" not in text and "landmarks" not in text, (span.name, key)
            redis_spans = [s for s in receiver.spans if s.attributes.get("db.system") == "redis"]
            assert redis_spans and all(" ?" in s.attributes.get("db.statement", "X ?") or
                                       len(s.attributes.get("db.statement", "").split()) == 1 for s in redis_spans)
    finally:
        receiver.stop()
