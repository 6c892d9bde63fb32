"""The HTTP API (Flask test client) against a real redis-server and an in-process worker."""

from __future__ import annotations

import base64
import io
import time

import pytest

from service.config import ServiceSettings

from tests.helpers.api import keyed_client, upload, wait_done
from tests.helpers.photos import encode, group_photo, photo_bytes, photo_rgb
from tests.helpers.hostile_corpus import _png_header_dims as _png_with_size
from tests.helpers.redis_server import free_port


@pytest.fixture(scope="module")
def app(worker):
    from api import create_app

    return create_app(ServiceSettings.from_env(max_request_bytes=4 * 1024 * 1024, max_batch=8,
                                        rate_limit="10000/minute", batch_image_limit="10000/minute"))


@pytest.fixture(scope="module")
def client(app):
    return keyed_client(app, "api-tests")


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("timings_ms", "cached")}


def test_submit_poll_and_result_equals_the_in_process_pipeline(client, pipeline) -> None:
    response = upload(client, photo_bytes("astronaut.png"))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and len(body["job_id"]) == 32
    assert response.headers["Location"] == body["status_url"] == f"/api/ml/jobs/{body['job_id']}"
    doc = wait_done(client, body["status_url"])
    assert doc["status"] == "succeeded" and doc["kind"] == "single"
    assert without_timings(doc["result"]) == without_timings(pipeline.score(photo_bytes("astronaut.png")))


def test_json_base64_with_wait_answers_200(client) -> None:
    payload = {"image_base64": "data:image/png;base64," + base64.b64encode(photo_bytes("astronaut.png")).decode(),
               "return_embedding": True, "max_faces": 2}
    response = client.post("/api/ml/score?wait=20", json=payload)
    assert response.status_code == 200
    face = response.get_json()["result"]["faces"][0]
    assert len(face["embedding"]) == 128 and "landmarks" not in face


def test_batch_with_progress_and_per_item_results(client) -> None:
    canvas, _ = group_photo()
    files = [(io.BytesIO(d), f"p{i}") for i, d in enumerate(
        [photo_bytes("astronaut.png"), encode(canvas), photo_bytes("coffee.png")])]
    response = client.post("/api/ml/score/batch", data={"images": files}, content_type="multipart/form-data")
    assert response.status_code == 202
    doc = wait_done(client, response.get_json()["status_url"])
    assert doc["kind"] == "batch" and doc["progress"] == {"done": 3, "total": 3}
    items = doc["result"]["items"]
    assert [len(items[0]["faces"]), len(items[1]["faces"])] == [1, 3]
    assert items[2]["error"]["code"] == "NO_FACE"


def test_batch_json_list(client) -> None:
    images = [base64.b64encode(photo_bytes("astronaut.png")).decode()] * 2
    response = client.post("/api/ml/score/batch?wait=20", json={"images": images})
    assert response.status_code == 200
    assert [len(i["faces"]) for i in response.get_json()["result"]["items"]] == [1, 1]


def test_delete_removes_result_and_images(client, celery_app) -> None:
    from workers import runtime

    response = upload(client, photo_bytes("astronaut.png"), wait="20")
    job_id = response.get_json()["job_id"]
    assert client.get(f"/api/ml/jobs/{job_id}").status_code == 200
    assert client.delete(f"/api/ml/jobs/{job_id}").status_code == 204
    assert client.get(f"/api/ml/jobs/{job_id}").status_code == 404
    assert client.delete(f"/api/ml/jobs/{job_id}").status_code == 404
    assert runtime.images().redis.get(f"celery-task-meta-{job_id}") is None


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "../../etc/passwd"])
def test_unknown_jobs_are_404(client, job_id: str) -> None:
    response = client.get(f"/api/ml/jobs/{job_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in ("JOB_NOT_FOUND", "NOT_FOUND")


# Every bad-input class of the core, through HTTP: rejected at submit where the header tells,
# through the job (and at once with ?wait=) where only decoding or the models can tell.
@pytest.mark.parametrize("data,status,code", [
    (b"", 400, "EMPTY_IMAGE"),
    (b"hello, not an image", 415, "UNSUPPORTED_FORMAT"),
    (encode(photo_rgb("astronaut.png"), "GIF"), 415, "UNSUPPORTED_FORMAT"),
    (b"%PDF-1.4 fake", 415, "UNSUPPORTED_FORMAT"),
    (_png_with_size(100_000, 100_000), 413, "IMAGE_TOO_LARGE"),
    (encode(photo_rgb("astronaut.png")[:16, :16]), 400, "IMAGE_TOO_SMALL"),
    (b"\x89PNG\r\n\x1a\n", 400, "CORRUPT_IMAGE"),
    (photo_bytes("rocket.jpg")[:4000], 400, "CORRUPT_IMAGE"),
    (photo_bytes("coffee.png"), 422, "NO_FACE"),
])
def test_bad_images_get_their_status_and_code(client, data: bytes, status: int, code: str) -> None:
    response = upload(client, data, wait="20")
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code


def test_failed_job_reads_as_failed_with_its_code(client) -> None:
    response = upload(client, photo_bytes("chelsea.png"))
    assert response.status_code == 202
    doc = wait_done(client, response.get_json()["status_url"])
    assert doc["status"] == "failed" and doc["error"]["code"] == "NO_FACE"


def test_quality_gate_through_the_api(client) -> None:
    response = upload(client, photo_bytes("camera.png"), quality_gate="true", wait="20")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "QUALITY_FAILED"


@pytest.mark.parametrize("kwargs,status,code", [
    ({"json": {"image_base64": "!!!not base64!!!"}}, 400, "INVALID_BASE64"),
    ({"json": {"image_base64": 12345}}, 400, "INVALID_BASE64"),
    ({"json": {"image_base64": "aGVsbG8"}}, 400, "INVALID_BASE64"),  # bad padding
    ({"json": ["a", "list"]}, 400, "INVALID_INPUT"),
    ({"json": {"something": "else"}}, 400, "MISSING_IMAGE"),
    ({"data": b"raw bytes", "content_type": "image/jpeg"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ({"data": {"other": (io.BytesIO(b"x"), "x.jpg")}, "content_type": "multipart/form-data"}, 400, "MISSING_IMAGE"),
    ({"data": {"image": [(io.BytesIO(photo_bytes("astronaut.png")), "a.png"),
                         (io.BytesIO(photo_bytes("camera.png")), "b.png")]},
      "content_type": "multipart/form-data"}, 400, "TOO_MANY_IMAGES"),
    ({"json": {"image_base64": base64.b64encode(photo_bytes("astronaut.png")).decode(), "max_faces": 0}},
     400, "INVALID_OPTION"),
    ({"json": {"image_base64": base64.b64encode(photo_bytes("astronaut.png")).decode(),
               "detection_threshold": "high"}}, 400, "INVALID_OPTION"),
])
def test_bad_requests(client, kwargs: dict, status: int, code: str) -> None:
    response = client.post("/api/ml/score", **kwargs)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


def test_wait_out_of_range(client) -> None:
    response = upload(client, photo_bytes("astronaut.png"), wait="31")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_OPTION"


def test_body_over_the_limit_is_413_before_reading(client) -> None:
    response = upload(client, b"\xff\xd8\xff" + bytes(5 * 1024 * 1024))
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "REQUEST_TOO_LARGE"


def test_batch_limits(client) -> None:
    files = [(io.BytesIO(photo_bytes("rocket.jpg")), f"{i}.jpg") for i in range(9)]
    response = client.post("/api/ml/score/batch", data={"images": files}, content_type="multipart/form-data")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "TOO_MANY_IMAGES"
    only_bad = [(io.BytesIO(b"text"), "b.txt"), (io.BytesIO(b""), "c.jpg")]
    response = client.post("/api/ml/score/batch", data={"images": only_bad}, content_type="multipart/form-data")
    assert response.status_code == 415  # nothing to score: the first image's error
    assert response.get_json()["error"]["details"]["index"] == 0


def test_one_bad_file_in_a_batch_fails_alone(client) -> None:
    """Each bad item gets its own error in its place; the others are scored; every item keeps its
    filename."""
    files = [(io.BytesIO(photo_bytes("astronaut.png")), "me.png"), (io.BytesIO(b"text"), "notes.txt"),
             (io.BytesIO(photo_bytes("camera.png")), "camera.png")]
    doc = client.post("/api/ml/score/batch?wait=30", data={"images": files}, content_type="multipart/form-data")
    assert doc.status_code == 200, doc.get_json()
    result = doc.get_json()["result"]
    assert result["total"] == 3 and [item["filename"] for item in result["items"]] == ["me.png", "notes.txt", "camera.png"]
    first, bad, third = result["items"]
    assert len(first["faces"]) == 1 and len(third["faces"]) == 1
    assert bad["error"]["code"] == "UNSUPPORTED_FORMAT" and bad["error"]["details"]["index"] == 1
    assert doc.get_json()["progress"] == {"done": 3, "total": 3}


def test_health_ready_and_models(client) -> None:
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.get_json()
    models = client.get("/api/ml/models").get_json()
    assert models and {m["name"] for m in models[0]["models"]} >= {"yunet", "facemesh", "geometric_scorer"}
    assert all(m["provider"] == "CPUExecutionProvider" and len(m["sha256"]) == 64 for m in models[0]["models"])


def test_openapi_document_and_docs_page(client) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/ml/score", "/api/ml/score/batch", "/api/ml/jobs/{job_id}", "/health", "/ready"} <= set(spec["paths"])
    assert "Result" in spec["components"]["schemas"]
    assert "multipart/form-data" in spec["paths"]["/api/ml/score"]["post"]["requestBody"]["content"]
    page = client.get("/docs")
    assert page.status_code == 200 and b"/docs/assets/swagger-ui-bundle.js" in page.data
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_redis_down_answers_503_within_a_second(worker) -> None:
    from api import create_app

    dead = create_app(ServiceSettings.from_env(redis_url=f"redis://127.0.0.1:{free_port()}/0", auth="off")).test_client()
    start = time.monotonic()
    response = upload(dead, photo_bytes("astronaut.png"))
    assert time.monotonic() - start < 1.0
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert dead.get("/health").status_code == 200
    ready = dead.get("/ready")
    assert ready.status_code == 503 and "REDIS_UNREACHABLE" in ready.get_json()["reasons"]


def lose_first_publish(monkeypatch, jobs, instead=lambda job_id: None) -> list[str]:
    """Fault injection: the first publish does ``instead`` (by default nothing: a lost message);
    later ones publish. Returns the ids published, in order."""
    real_publish, published = jobs._publish, []

    def publish(job_id, record):
        published.append(job_id)
        if len(published) == 1:
            instead(job_id)
        else:
            real_publish(job_id, record)

    monkeypatch.setattr(jobs, "_publish", publish)
    return published


def test_a_lost_message_is_published_again(worker, monkeypatch) -> None:
    """Fault injection: the first publish of a job is lost (as when Redis dies between BRPOP and
    the unacked record); reading the job's status past AURUM_REQUEUE_AFTER publishes it again."""
    from api import create_app

    from tests.helpers.photos import unique_photo

    app = create_app(ServiceSettings.from_env(requeue_after=1))
    c = keyed_client(app, "requeue")
    published = lose_first_publish(monkeypatch, app.extensions["aurum.jobs"])

    job = upload(c, unique_photo(77)).get_json()["job_id"]
    assert c.get(f"/api/ml/jobs/{job}").get_json()["status"] == "queued"
    time.sleep(1.2)
    doc = wait_done(c, f"/api/ml/jobs/{job}")
    assert doc["status"] == "succeeded" and published == [job, job]


def test_a_job_left_running_by_a_lost_outcome_is_published_again(worker, monkeypatch) -> None:
    """Fault injection: the job's first run stores STARTED and then its outcome is lost (a worker
    that lost Redis while storing it; Celery acknowledges the message anyway). Past
    AURUM_REQUEUE_AFTER plus the hard time limit, reading its status publishes it again."""
    from api import create_app

    from tests.helpers.photos import unique_photo

    app = create_app(ServiceSettings.from_env(requeue_after=1, task_time_limit=1, task_soft_time_limit=1))
    c = keyed_client(app, "requeue-started")
    jobs = app.extensions["aurum.jobs"]
    published = lose_first_publish(monkeypatch, jobs, instead=lambda job_id: jobs.backend.store_result(
        job_id, {"pid": 1, "hostname": "lost"}, "STARTED"))
    job = upload(c, unique_photo(78)).get_json()["job_id"]
    assert c.get(f"/api/ml/jobs/{job}").get_json()["status"] == "running"
    time.sleep(2.2)
    doc = wait_done(c, f"/api/ml/jobs/{job}", timeout=60)
    assert doc["status"] == "succeeded" and published == [job, job]


def test_large_uploads_never_spool_to_disk(client, monkeypatch) -> None:
    """Werkzeug writes any multipart file over 500 KB to a temporary file (in clear, for the whole
    request); a face photo is biometric data, so the API keeps uploads in memory."""
    import werkzeug.formparser

    def refuse(*args, **kwargs):
        raise AssertionError("an upload went to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", refuse)
    import numpy as np

    rgb = photo_rgb("astronaut.png")
    noisy = np.clip(rgb.astype(np.int16) + np.random.default_rng(7).integers(-12, 12, rgb.shape), 0, 255)
    data = encode(np.kron(noisy.astype(np.uint8), np.ones((2, 2, 1), np.uint8)))  # 1024 px, noisy: ~750 KB
    assert len(data) > 600 * 1024  # past Werkzeug's 500 KB spooling threshold
    response = upload(client, data)
    assert response.status_code == 202, response.get_json()


def test_every_job_code_has_the_status_of_its_kind() -> None:
    """One registry of codes and kinds (aurum.errors, service.contract) and one map of kinds to
    statuses: a failed job answered through ?wait= gets the same status as the API's own error."""
    from api.errors import STATUS_BY_KIND, status_for
    from aurum import errors
    from service.contract import JOB_CODES, kind_of

    codes = {cls.code for cls in errors.ALL_ERRORS} | set(JOB_CODES)
    assert all(kind_of(code) in STATUS_BY_KIND for code in codes)
    assert status_for("SERVICE_UNAVAILABLE") == 503  # was 500 through ?wait=
    assert status_for("JOB_CANCELLED") == 410 and status_for("IMAGE_EXPIRED") == 410
    assert status_for("TIMEOUT") == 504 and status_for("NO_FACE") == 422 and status_for("POISON_MESSAGE") == 500


def test_a_revoked_job_is_cancelled_and_an_identical_upload_still_runs(client) -> None:
    """A job revoked by an operator (`celery control revoke`; here its stored REVOKED state, set
    before any worker could run it): it reads JOB_CANCELLED, not INTERNAL_ERROR
    TaskRevokedError, and the same photo sent again, which follows the revoked job, still runs."""
    import hashlib
    import secrets

    from service.cache import cache_key

    from tests.helpers.photos import unique_photo

    jobs = client.application.extensions["aurum.jobs"]
    data, owner, options = unique_photo(7400), "revoker", load_options_default().resolve(jobs.settings)
    revoked = secrets.token_hex(16)
    jobs.records.save(revoked, {"kind": "single", "total": 1, "created_at": time.time(), "owner": owner, "images": []})
    jobs.backend.mark_as_revoked(revoked, "revoked by an operator")
    key = cache_key(hashlib.sha256(data).hexdigest(), jobs.identity(), options, scope=owner)
    assert jobs.cache.claim(key, revoked, 60) is None  # it was computing this photo
    assert jobs.status(revoked, owner)["error"]["code"] == "JOB_CANCELLED"
    again, record = jobs.submit([data], options, batch=False, owner=owner)
    assert record["follows"] == revoked
    deadline = time.monotonic() + 60
    while (doc := jobs.status(again, owner))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "the follower of a revoked job never ran"
        time.sleep(0.05)
    assert doc["status"] == "succeeded" and len(doc["result"]["faces"]) == 1


def load_options_default():
    from aurum.schemas import load_options

    return load_options({})


def test_the_api_needs_no_models_to_answer_from_the_cache(worker, tmp_path) -> None:
    """The API reads the result identity the workers report with their heartbeats; it builds no
    pipeline and reads no model manifest (an empty models folder here), yet keys jobs and
    answers an identical upload from the cache."""
    from api import create_app
    from tests.helpers.photos import unique_photo

    app = create_app(ServiceSettings.from_env(models_dir=str(tmp_path), rate_limit="10000/minute"))
    client = keyed_client(app, "no-models")
    identity = app.extensions["aurum.jobs"].identity()
    assert identity is not None and "yunet" in identity["models"]
    data = unique_photo(7700)
    first = upload(client, data, wait="30").get_json()
    assert first["status"] == "succeeded" and first["result"]["cached"] is False
    second = upload(client, data, wait="30").get_json()
    assert second["result"]["cached"] is True
