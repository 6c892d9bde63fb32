"""End to end, as deployed: the API server and a celery worker started from the Procfile's commands,
our own redis-server, real photos over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from tests.helpers.photos import encode, group_photo, photo_bytes
from tests.helpers.stack import RESULT_TTL, Stack


@pytest.fixture(scope="module", params=["http", "tls"])
def stack(request, tmp_path_factory):
    """Every test twice: over plain HTTP and Redis, and with HTTPS and Redis over TLS only (a CA
    made for the run, which this process's requests trust too)."""
    tls = request.param == "tls"
    with Stack(tmp_path_factory.mktemp(f"stack-{request.param}"), result_ttl=RESULT_TTL, tls=tls) as s, \
            pytest.MonkeyPatch.context() as patch:
        if tls:
            patch.setenv("REQUESTS_CA_BUNDLE", str(s.certificates.ca))
        yield s


def submit(stack: Stack, data: bytes, **params) -> requests.Response:
    return stack.http.post(stack.base + "/api/ml/score", files={"image": ("photo", data)}, params=params, timeout=40)


def poll(stack: Stack, url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = stack.http.get(stack.base + url, timeout=5).json()
        if doc["status"] in ("succeeded", "failed"):
            return doc
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def core(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("timings_ms", "cached")}


def test_http_result_equals_the_in_process_pipeline(stack, pipeline) -> None:
    response = submit(stack, photo_bytes("astronaut.png"))
    assert response.status_code == 202
    doc = poll(stack, response.json()["status_url"])
    assert core(doc["result"]) == core(pipeline.score(photo_bytes("astronaut.png")))


def test_wait_and_batch_progress(stack) -> None:
    response = submit(stack, photo_bytes("camera.png"), wait=20)
    assert response.status_code == 200 and len(response.json()["result"]["faces"]) == 1
    canvas, _ = group_photo()
    files = [("images", (f"{i}.png", encode(canvas))) for i in range(12)]
    response = stack.http.post(stack.base + "/api/ml/score/batch", files=files, timeout=40)
    assert response.status_code == 202
    doc = poll(stack, response.json()["status_url"])
    assert doc["progress"] == {"done": 12, "total": 12}
    assert all(len(item["faces"]) == 3 for item in doc["result"]["items"])


def test_concurrent_submissions(stack) -> None:
    photos = [photo_bytes("astronaut.png"), photo_bytes("camera.png")] * 12
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda d: submit(stack, d, wait=30), photos))
    assert [r.status_code for r in responses] == [200] * len(photos)
    assert len({r.json()["job_id"] for r in responses}) == len(photos)


def test_no_key_is_401_over_http(stack) -> None:
    response = requests.post(stack.base + "/api/ml/score", files={"image": ("p", photo_bytes("astronaut.png"))},
                             timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_bad_input_over_http(stack) -> None:
    assert submit(stack, b"not an image").json()["error"]["code"] == "UNSUPPORTED_FORMAT"
    response = submit(stack, photo_bytes("coffee.png"), wait=20)
    assert response.status_code == 422 and response.json()["error"]["code"] == "NO_FACE"


def test_delete_and_result_expiry(stack) -> None:
    first = submit(stack, photo_bytes("astronaut.png"), wait=20).json()["job_id"]
    second = submit(stack, photo_bytes("astronaut.png"), wait=20).json()["job_id"]
    assert stack.http.delete(f"{stack.base}/api/ml/jobs/{first}", timeout=5).status_code == 204
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{first}", timeout=5).status_code == 404
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{second}", timeout=5).status_code == 200
    time.sleep(RESULT_TTL + 1)
    assert stack.http.get(f"{stack.base}/api/ml/jobs/{second}", timeout=5).status_code == 404


def scrape(urls: str | list[str]) -> dict[str, float]:
    """Prometheus text from one or several exporters -> {'name{labels}': summed value}."""
    samples: dict[str, float] = {}
    for url in [urls] if isinstance(urls, str) else urls:
        for line in requests.get(url, timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def total(samples: dict[str, float], prefix: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if (k == prefix or k.startswith(prefix + "{")) and all(w in k for w in wanted))


def test_metrics_move_after_real_jobs(stack) -> None:
    before_api, before_worker = scrape(stack.base + "/metrics"), scrape(stack.worker_metrics)
    assert submit(stack, photo_bytes("camera.png")[:-1] + b"\x00", wait=20).status_code in (200, 400)
    canvas, _ = group_photo()
    assert submit(stack, encode(canvas), wait=20).status_code == 200
    api, worker = scrape(stack.base + "/metrics"), scrape(stack.worker_metrics)
    assert total(api, "aurum_http_requests_total", route="/api/ml/score", status="200") > \
        total(before_api, "aurum_http_requests_total", route="/api/ml/score", status="200")
    assert total(api, "aurum_jobs_submitted_total", path="queued") >= 2
    assert "aurum_queue_depth{queue=\"score\"}" in api
    assert total(worker, "aurum_jobs_total", outcome="succeeded") > total(before_worker, "aurum_jobs_total",
                                                                          outcome="succeeded")
    assert total(worker, "aurum_job_queue_seconds_count") > 0 and total(worker, "aurum_job_compute_seconds_count") > 0
    assert total(worker, "aurum_stage_seconds_count", stage="landmarks") > 0
    assert total(worker, "aurum_faces_per_image_sum") >= 3  # the group photo
    assert total(worker, "aurum_model_load_seconds_count") >= 2  # both pool children
    assert total(worker, "aurum_cache_requests_total", side="worker", result="miss") > 0
    assert api["aurum_worker_children_ready"] == 2  # both pool children beat


def test_result_metrics_count_every_face_judged(stack) -> None:
    """What the result alerts watch (deploy/alerts.yml): each face's quality verdict and the
    scores given, on a group photo no earlier test sent (a cached result runs no model)."""
    before = scrape(stack.worker_metrics)
    canvas, _ = group_photo()
    canvas[0, 0] = np.random.default_rng().integers(0, 256, 3)  # a new image: not in the cache
    assert submit(stack, encode(canvas), wait=20).status_code == 200
    after = scrape(stack.worker_metrics)
    judged = total(after, "aurum_faces_total") - total(before, "aurum_faces_total")
    assert judged == 3 == total(after, "aurum_faces_per_image_sum") - total(before, "aurum_faces_per_image_sum")
    scored = total(after, "aurum_face_score_count") - total(before, "aurum_face_score_count")
    passed = total(after, "aurum_faces_total", quality="passed") - total(before, "aurum_faces_total", quality="passed")
    assert 1 <= scored <= 3 and passed <= judged


def test_coalescing_runs_the_models_once_by_the_metric(stack) -> None:
    from tests.helpers.photos import unique_photo

    data = unique_photo(101)
    runs_before = total(scrape(stack.worker_metrics), "aurum_model_runs_total")
    coalesced_before = total(scrape(stack.base + "/metrics"), "aurum_jobs_submitted_total", path="coalesced")
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: submit(stack, data, wait=20), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].json()["result"]["faces"] == responses[1].json()["result"]["faces"]
    runs = total(scrape(stack.worker_metrics), "aurum_model_runs_total") - runs_before
    coalesced = total(scrape(stack.base + "/metrics"), "aurum_jobs_submitted_total", path="coalesced") - coalesced_before
    cached = [r.json()["result"]["cached"] for r in responses]
    assert runs == 1 and sorted(cached) == [False, True] and coalesced + cached.count(True) >= 1


def test_logs_are_json_and_carry_the_request_id_into_the_worker(stack) -> None:
    import base64
    import json as jsonlib

    request_id = "req-e2e-0123456789"
    data = photo_bytes("astronaut.png")
    response = stack.http.post(stack.base + "/api/ml/score", files={"image": ("p", data)},
                               params={"wait": 20}, data={"return_embedding": "true"},
                               headers={"X-Request-ID": request_id}, timeout=30)
    assert response.headers["X-Request-ID"] == request_id
    job_id = response.json()["job_id"]
    embedding = response.json()["result"]["faces"][0]["embedding"]
    time.sleep(0.5)
    records = {}
    for name in ("web", "worker"):
        text = (stack.workdir / f"{name}.log").read_text()
        records[name] = [jsonlib.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records[name], f"no JSON log lines from {name}"
        assert base64.b64encode(data[:300]).decode()[:60] not in text  # no image bytes
        assert str(embedding[0])[:8] not in text and str(embedding[1])[:8] not in text  # no embeddings
    assert any(r.get("request_id") == request_id and r.get("route") == "/api/ml/score" for r in records["web"])
    worker_lines = [r for r in records["worker"] if r.get("request_id") == request_id]
    assert worker_lines and all(r["job_id"] == job_id for r in worker_lines)
    assert any(r.get("message") == "job" and r.get("outcome") == "succeeded" for r in worker_lines)


def test_an_upload_in_flight_opens_no_file_in_the_api(stack) -> None:
    """While a 1.5 MB photo is being uploaded (held after 1.2 MB, past Werkzeug's 500 KB spooling
    threshold), no API process has a new file open: the upload stays in memory. The files each
    API server process had open before (its heartbeat file, libraries) are the baseline."""
    import os
    import socket
    import ssl
    import subprocess

    def open_files() -> dict[int, set[str]]:
        master = stack.procs[0].pid
        pids = [master] + [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                                         text=True).stdout.split()]
        files = {}
        for pid in pids:
            names = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/") or "(deleted)" in target:
                    names.add(f"{fd}:{target}")
            files[pid] = names
        return files

    image = os.urandom(1536 * 1024)  # the format does not matter: spooling happens while the form is read
    boundary = "aurumfdcheck"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /api/ml/score HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {stack.http.headers['X-API-Key']}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    before = open_files()
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    if stack.certificates:
        raw = ssl.create_default_context(cafile=str(stack.certificates.ca)).wrap_socket(raw, server_hostname="127.0.0.1")
    with raw as sock:
        sock.sendall(head + body[:1200 * 1024])
        time.sleep(2.0)  # the server has read what was sent (and would have spooled it by now)
        during = open_files()
        sock.sendall(body[1200 * 1024:])
        reply = sock.recv(65536).split(b"\r\n", 1)[0]
    new = {pid: sorted(during[pid] - before.get(pid, set())) for pid in during}
    assert all(not files for files in new.values()), new
    assert reply.startswith(b"HTTP/1.1 415")  # random bytes: UNSUPPORTED_FORMAT, once the whole body is read


def test_an_admin_key_made_by_the_cli_reaches_the_admin_api_and_a_client_key_does_not(stack) -> None:
    import subprocess
    import sys

    made = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "e2e-admin", "--role", "admin"],
                          env=stack.env, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run([sys.executable, "-m", "aurum", "keys", "list", "--json"], env=stack.env,
                            capture_output=True, text=True, timeout=30, check=True)
    assert {k["name"]: k["role"] for k in json.loads(listed.stdout)}["e2e-admin"] == "admin"
    admin = requests.get(stack.base + "/api/admin/keys", headers={"X-API-Key": made.stdout.strip()}, timeout=15)
    assert admin.status_code == 200 and "e2e" in {k["name"] for k in admin.json()}
    refused = stack.http.get(stack.base + "/api/admin/keys", timeout=15)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"


def test_with_tls_on_nothing_answers_in_plain_text(stack) -> None:
    """The TLS stack's Redis has no plain port and the API serves HTTPS only, so every
    connection the service makes or takes is encrypted (the jobs above ran over them)."""
    import redis

    plain_redis = redis.Redis(port=stack.redis.port, socket_timeout=5, socket_connect_timeout=5)
    plain_http = f"http://127.0.0.1:{stack.port}/health"
    if stack.certificates is None:  # the plain stack: the same probes answer
        assert plain_redis.ping() and requests.get(plain_http, timeout=15).status_code == 200
        return
    with pytest.raises(redis.ConnectionError):
        plain_redis.ping()
    with pytest.raises(requests.ConnectionError):
        requests.get(plain_http, timeout=15)
    assert stack.http.get(stack.base + "/health", timeout=15).status_code == 200


def test_redis_stopped_submit_answers_503_within_a_second(stack) -> None:
    """Last in this module: it stops the stack's Redis."""
    stack.redis.stop()
    start = time.monotonic()
    response = submit(stack, photo_bytes("astronaut.png"))
    assert time.monotonic() - start < 1.0
    assert response.status_code == 503 and response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert stack.http.get(stack.base + "/health", timeout=2).status_code == 200
    assert stack.http.get(stack.base + "/ready", timeout=5).status_code == 503
