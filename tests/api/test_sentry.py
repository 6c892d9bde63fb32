"""Sentry: errors reach a (local, fake) Sentry endpoint, scrubbed of image data and keys."""

from __future__ import annotations

import base64
import gzip
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.config import ServiceSettings
from service.privacy import REMOVED, scrub_event

from tests.helpers.photos import photo_bytes


class FakeSentry:
    """Records the envelopes an SDK posts to http://key@127.0.0.1:PORT/1."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                recorder.envelopes.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def sentry():
    import sentry_sdk

    fake = FakeSentry()
    yield fake
    sentry_sdk.init(dsn=None)  # Sentry off again for the other tests
    fake.close()


def test_api_error_reaches_sentry_without_image_or_key(sentry, celery_app, monkeypatch) -> None:
    import sentry_sdk

    from api import create_app

    app = create_app(ServiceSettings.from_env(sentry_dsn=sentry.dsn))
    token, _ = app.extensions["aurum.keys"].create(f"sentry-{uuid.uuid4().hex[:6]}")
    marker = f"boom-{uuid.uuid4().hex}"

    def broken_submit(*args, **kwargs):
        raise RuntimeError(marker)

    monkeypatch.setattr(app.extensions["aurum.jobs"], "submit", broken_submit)
    image_b64 = base64.b64encode(photo_bytes("astronaut.png")).decode()
    response = app.test_client().post("/api/ml/score", json={"image_base64": image_b64},
                                      headers={"X-API-Key": token})
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "INTERNAL_ERROR"
    sentry_sdk.flush(timeout=5)
    sent = b"".join(sentry.envelopes)
    assert marker.encode() in sent  # the error was reported
    assert image_b64[1000:1100].encode() not in sent and image_b64[:200].encode() not in sent
    assert token.encode() not in sent


def test_scrubber_removes_images_embeddings_and_credentials() -> None:
    b64 = base64.b64encode(photo_bytes("rocket.jpg")).decode()
    event = {
        "request": {"data": {"image_base64": b64}, "headers": {"X-Api-Key": "ak_secret", "Accept": "json"},
                    "cookies": {"s": "1"}},
        "extra": {"payload": "data:image/jpeg;base64," + b64[:400], "embedding": [0.1] * 128,
                  "note": "kept", "raw": b"\xff\xd8\xff"},
        "exception": {"values": [{"stacktrace": {"frames": [{"vars": {"data": "bytes...", "faces": [0.5] * 200,
                                                                      "n": 3}}]}}]},
    }
    out = scrub_event(event, {})
    assert out["request"]["data"] == REMOVED and out["request"]["cookies"] == REMOVED
    assert out["request"]["headers"]["X-Api-Key"] == REMOVED and out["request"]["headers"]["Accept"] == "json"
    assert out["extra"]["payload"] == REMOVED and out["extra"]["embedding"] == REMOVED
    assert out["extra"]["raw"] == REMOVED and out["extra"]["note"] == "kept"
    frame_vars = out["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars == {"data": REMOVED, "faces": REMOVED, "n": 3}
