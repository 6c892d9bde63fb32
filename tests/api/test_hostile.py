"""Every hostile-input class gets its stable code and a 4xx (or, for odd but valid photos, a
normal result); the worker keeps serving afterwards."""

from __future__ import annotations

import io

import pytest

from service.config import ServiceSettings

from tests.helpers.photos import photo_bytes
from tests.helpers.hostile_corpus import Case, build_corpus
from tests.helpers.api import keyed_client

MAX_REQUEST = 2 * 1024 * 1024
CORPUS = build_corpus(MAX_REQUEST)


@pytest.fixture(scope="module")
def client(worker):
    from api import create_app

    return keyed_client(create_app(ServiceSettings.from_env(max_request_bytes=MAX_REQUEST, rate_limit="100000/minute")),
                        "hostile")


def send(client, case: Case):
    if case.kind == "json":
        return client.post("/api/ml/score", json=case.payload, query_string=case.params)
    if case.kind == "raw":
        return client.post("/api/ml/score", data=case.payload, content_type=case.content_type,
                           query_string=case.params)
    data = dict(case.form)
    if case.payload is not None:
        data["image"] = (io.BytesIO(case.payload), case.filename)
    if data.pop("__second__", None):
        data["image"] = [data["image"], (io.BytesIO(case.payload), "second.png")]
    if case.payload is None:
        data["note"] = "no file here"
    return client.post("/api/ml/score", data=data, content_type="multipart/form-data", query_string=case.params)


def test_the_corpus_is_broad() -> None:
    assert len(CORPUS) >= 30 and len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_input(client, case: Case) -> None:
    response = send(client, case)
    body = response.get_json()
    assert response.status_code == case.status, body
    if case.code is None:
        assert len(body["result"]["faces"]) >= 1
    else:
        assert body["error"]["code"] == case.code and body["error"]["message"]


def test_worker_still_serves_after_the_corpus(client, worker) -> None:
    assert worker.control.ping(timeout=1) or worker.control.ping(timeout=1)
    response = client.post("/api/ml/score?wait=20", data={"image": (io.BytesIO(photo_bytes("astronaut.png")), "a")},
                           content_type="multipart/form-data")
    assert response.status_code == 200
