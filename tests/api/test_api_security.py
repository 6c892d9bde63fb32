"""Keys, ownership, rate limits, CORS and security headers, against our own redis-server."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from service.config import ServiceSettings

from tests.helpers.photos import photo_bytes
from tests.helpers.api import keyed_client, upload


@pytest.fixture(scope="module")
def app(worker):
    from api import create_app

    return create_app(ServiceSettings.from_env(rate_limit="1000/minute", batch_image_limit="5/minute",
                                        cors_origins="https://app.example.com, https://admin.example.com"))


def test_missing_malformed_unknown_and_revoked_keys(app) -> None:
    anonymous = app.test_client()
    response = upload(anonymous, photo_bytes("astronaut.png"))
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHENTICATED"
    for bad in ("not-a-key", "ak_" + "x" * 43, "ak_" + "y" * 500):
        response = anonymous.post("/api/ml/score", headers={"X-API-Key": bad},
                                  data={"image": (io.BytesIO(photo_bytes("astronaut.png")), "a")})
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "INVALID_API_KEY"
    store = app.extensions["aurum.keys"]
    token, key = store.create("soon-revoked")
    bearer = {"Authorization": f"Bearer {token}"}
    assert anonymous.get("/api/ml/jobs/" + "0" * 32, headers=bearer).status_code == 404  # authenticated
    assert [k.name for k in store.revoke("soon-revoked")] == ["soon-revoked"]
    response = anonymous.get("/api/ml/jobs/" + "0" * 32, headers=bearer)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "INVALID_API_KEY"
    assert anonymous.get("/health").status_code == 200  # probes need no key


def test_keys_are_stored_only_as_hashes(app) -> None:
    store = app.extensions["aurum.keys"]
    token, key = store.create("hash-check")
    dump = b"".join(v for k in store.redis.keys("aurum:key*") if store.redis.type(k) == b"string"
                    for v in [store.redis.get(k)])
    assert token.encode() not in dump and token[7:].encode() not in dump
    assert key.id.encode() in dump


def test_another_keys_job_is_404_not_403(app) -> None:
    alice, bob = keyed_client(app, "alice"), keyed_client(app, "bob")
    job = upload(alice, photo_bytes("astronaut.png"), wait="20").get_json()["job_id"]
    assert alice.get(f"/api/ml/jobs/{job}").status_code == 200
    for response in (bob.get(f"/api/ml/jobs/{job}"), bob.delete(f"/api/ml/jobs/{job}")):
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "JOB_NOT_FOUND"
    assert alice.get(f"/api/ml/jobs/{job}").status_code == 200  # bob's delete did nothing


def test_rate_limit_429_with_retry_after_and_headers(app) -> None:
    limited = keyed_client(app, "limited", rate="3/minute")
    responses = [limited.get("/api/ml/jobs/" + "0" * 32) for _ in range(4)]
    assert [r.status_code for r in responses] == [404, 404, 404, 429]
    last = responses[-1]
    assert last.get_json()["error"]["code"] == "RATE_LIMITED"
    retry_after = int(last.headers["Retry-After"])
    assert 0 < retry_after <= 60
    assert last.headers["X-RateLimit-Limit"] == "3" and last.headers["X-RateLimit-Remaining"] == "0"
    assert responses[0].headers["X-RateLimit-Remaining"] == "2"
    # other keys are not affected
    assert keyed_client(app, "unlimited").get("/api/ml/jobs/" + "0" * 32).status_code == 404


def test_a_refused_request_counts_against_no_window(app) -> None:
    """Every window is checked and counted in one call: a request the burst window refuses
    leaves the minute's count alone, so a client retrying too early does not spend its minute."""
    import time

    c = keyed_client(app, "burst", rate="3/minute;1/2 seconds")
    missing = "/api/ml/jobs/" + "0" * 32
    assert c.get(missing).status_code == 404
    refused = c.get(missing)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 2
    for _ in range(2):  # had the refusal counted, the minute's three would be spent by the second
        deadline = time.monotonic() + 30
        while (response := c.get(missing)).status_code == 429:
            assert time.monotonic() < deadline, "the burst window never reset"
            time.sleep(0.5)
        assert response.status_code == 404
    last = c.get(missing)
    assert last.status_code == 429 and last.headers["X-RateLimit-Limit"] in ("1", "3")


def test_one_budget_per_key_across_endpoints(app) -> None:
    """A key out of budget on status reads cannot submit, delete or list models either; the
    probes are not counted, and Retry-After is only on the 429."""
    limited = keyed_client(app, "one-budget", rate="3/minute")
    assert limited.get("/api/ml/jobs/" + "0" * 32).status_code == 404
    assert limited.delete("/api/ml/jobs/" + "0" * 32).status_code == 404
    assert limited.get("/api/ml/models").status_code == 200
    for response in (upload(limited, photo_bytes("astronaut.png")), limited.delete("/api/ml/jobs/" + "1" * 32),
                     limited.get("/api/ml/models")):
        assert response.status_code == 429 and "Retry-After" in response.headers
    assert limited.get("/health").status_code == 200 and limited.get("/ready").status_code in (200, 503)
    fresh = keyed_client(app, "one-budget-headers", rate="10/minute")
    for response in (fresh.get("/api/ml/jobs/" + "0" * 32), upload(fresh, photo_bytes("astronaut.png")),
                     fresh.get("/api/ml/models")):
        assert response.status_code in (200, 202, 404) and "Retry-After" not in response.headers
        assert "X-RateLimit-Remaining" in response.headers


def test_a_rate_must_parse(app) -> None:
    store = app.extensions["aurum.keys"]
    for bad in ("unlimited please", "", "fast"):
        with pytest.raises(ValueError, match="not a rate limit"):
            store.create(f"bad-rate-{len(bad)}", bad)
    assert store.create("good-rate", "600/minute;30/second")[1].rate == "600/minute;30/second"


def test_json_nested_deep_is_a_400_not_a_500(app) -> None:
    c = keyed_client(app, "deep-json", rate="5/minute")
    deep = "[" * 20000 + "]" * 20000
    for path in ("/api/ml/score", "/api/ml/score/batch"):
        response = c.post(path, data=deep, content_type="application/json")
        assert response.status_code == 400, (path, response.status_code)
        assert response.get_json()["error"]["code"] in ("BAD_REQUEST", "INVALID_INPUT")
    for _ in range(3):  # the two above were counted: the budget still holds
        c.post("/api/ml/score", data=deep, content_type="application/json")
    assert c.post("/api/ml/score", data=deep, content_type="application/json").status_code == 429


def test_an_anonymous_request_reads_no_key_list(app, monkeypatch) -> None:
    """Deciding UNAUTHENTICATED takes one SCARD, not a read of every key ever made."""
    from service.keys import KeyStore

    app.extensions["aurum.keys"].create("exists")
    monkeypatch.setattr(KeyStore, "list", lambda self: pytest.fail("listed every key"))
    response = app.test_client().get("/api/ml/jobs/" + "0" * 32)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHENTICATED"


def test_batch_images_have_their_own_per_minute_budget(app) -> None:
    c = keyed_client(app, "batcher")
    files = lambda n: {"images": [(io.BytesIO(photo_bytes("rocket.jpg")), f"{i}.jpg") for i in range(n)]}  # noqa: E731
    first = c.post("/api/ml/score/batch", data=files(3), content_type="multipart/form-data")
    assert first.status_code == 202
    second = c.post("/api/ml/score/batch", data=files(3), content_type="multipart/form-data")
    assert second.status_code == 429  # 3 + 3 images > 5 per minute
    assert "Retry-After" in second.headers


def test_cors_allow_list(app) -> None:
    c = app.test_client()
    allowed = c.options("/api/ml/score", headers={"Origin": "https://app.example.com",
                                                  "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "X-API-Key"})
    assert allowed.status_code in (200, 204)  # a preflight carries no key: answered before authentication
    assert allowed.headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    assert "x-api-key" in allowed.headers.get("Access-Control-Allow-Headers", "").lower()
    refused = c.options("/api/ml/score", headers={"Origin": "https://evil.example.net",
                                                  "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_security_headers_on_every_answer(app) -> None:
    c = keyed_client(app, "headers")
    for response in (c.get("/health"), c.get("/api/ml/jobs/" + "0" * 32), c.get("/openapi.json"),
                     app.test_client().post("/api/ml/score")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src" in response.headers["Content-Security-Policy"]
    assert c.get("/api/ml/jobs/" + "0" * 32).headers["Cache-Control"] == "no-store"


def test_auth_off_is_explicit(worker) -> None:
    from api import create_app

    assert ServiceSettings.from_env().auth == "on"
    open_app = create_app(ServiceSettings.from_env(auth="off")).test_client()
    assert upload(open_app, photo_bytes("astronaut.png"), wait="20").status_code == 200


def test_keys_cli(redis_server, celery_app) -> None:
    env = {"AURUM_REDIS_URL": f"{redis_server.url}/1"}
    import os

    run = lambda *a: subprocess.run([sys.executable, "-m", "aurum", "keys", *a], capture_output=True,  # noqa: E731
                                    text=True, env={**os.environ, **env}, timeout=30)
    created = run("create", "--name", "cli-key", "--rate", "100/minute")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ak_") and "not shown again" in created.stderr
    listed = json.loads(run("list", "--json").stdout)
    row = next(r for r in listed if r["name"] == "cli-key")
    assert row["rate"] == "100/minute" and not row["revoked"] and token not in json.dumps(listed)
    assert run("create", "--name", "cli-key").returncode == 2  # one active key per name
    assert run("revoke", "cli-key").returncode == 0
    assert run("revoke", "cli-key").returncode == 1
    from service.keys import KeyStore
    import redis

    assert KeyStore(redis.Redis.from_url(env["AURUM_REDIS_URL"])).lookup(token) is None
