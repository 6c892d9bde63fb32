"""The API through Flask's test client: a client with its own API key, an upload, a wait."""

from __future__ import annotations

import io
import time


def keyed_client(app, name: str, rate: str | None = None, role: str = "client"):
    """A test client that sends a fresh API key, created the way `aurum keys create` does."""
    token, _ = app.extensions["aurum.keys"].create(name, rate, role)
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = token
    return c


def upload(client, data: bytes, **form):
    return client.post("/api/ml/score", data={"image": (io.BytesIO(data), "photo"), **form},
                       content_type="multipart/form-data")


def wait_done(client, url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get(url).get_json()
        if doc["status"] in ("succeeded", "failed"):
            return doc
        time.sleep(0.02)
    raise AssertionError(f"{url} did not finish")
