"""api/uploads.FormParser: multipart bodies parsed by ``multipart`` give the endpoints exactly what
werkzeug's own parser gives (fields, files, filenames, content types, 413s and empty results),
on bodies as requests, browsers and werkzeug's test client write them and on broken ones."""

from __future__ import annotations

import io

import pytest
from flask import Flask, Request, jsonify, request
from urllib3 import encode_multipart_formdata

from api.uploads import InMemoryRequest


def _app(request_class) -> Flask:
    app = Flask("uploads-test")
    app.request_class = request_class
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024

    @app.post("/")
    def echo():
        return jsonify({"form": request.form.to_dict(flat=False),
                        "files": {name: [(f.filename, f.mimetype, f.read().hex()) for f in items]
                                  for name, items in request.files.lists()}})

    return app


def _requests_body(fields) -> tuple[bytes, str]:
    body, content_type = encode_multipart_formdata(fields)
    return body, content_type


def _bodies():
    photo = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"  # CRLF and dashes inside a file
    yield "requests: file and fields", *_requests_body(
        [("image", ("selfie.jpg", photo, "image/jpeg")), ("max_faces", "3"), ("note", "h\u00e9llo")])
    yield "requests: empty file", *_requests_body([("image", ("empty.jpg", b"", "image/jpeg"))])
    yield "requests: two files one name", *_requests_body(
        [("images", ("a.jpg", b"a", "image/jpeg")), ("images", ("b.png", b"b", "image/png"))])
    yield "unicode filename", *_requests_body([("image", ("\u00e9t\u00e9 \u263a.jpg", photo, "image/jpeg"))])
    yield "very long filename", *_requests_body([("image", ("x" * 6000 + ".jpg", photo, "image/jpeg"))])
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"  # what a browser sends
    browser = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    yield "browser boundary", browser, f"multipart/form-data; boundary={boundary}"
    yield "truncated", browser[:-10], f"multipart/form-data; boundary={boundary}"
    yield "no closing delimiter", browser.replace(f"--{boundary}--".encode(), f"--{boundary}".encode()), \
        f"multipart/form-data; boundary={boundary}"
    yield "not multipart at all", b"hello", f"multipart/form-data; boundary={boundary}"
    yield "no boundary", browser, "multipart/form-data"
    many = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(1200))
    yield "too many parts", many + b"--b--\r\n", "multipart/form-data; boundary=b"
    yield "field too large", b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + b"v" * 600_000 + \
        b"\r\n--b--\r\n", "multipart/form-data; boundary=b"
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(12))
    yield "many part headers", b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n' + \
        headers + b"\r\nxyz\r\n--b--\r\n", "multipart/form-data; boundary=b"


CASES = list(_bodies())


@pytest.mark.parametrize("name,body,content_type", CASES, ids=[c[0] for c in CASES])
def test_the_same_as_werkzeugs_parser(name: str, body: bytes, content_type: str) -> None:
    ours = _app(InMemoryRequest).test_client().post("/", data=body, content_type=content_type)
    theirs = _app(Request).test_client().post("/", data=body, content_type=content_type)
    assert ours.status_code == theirs.status_code, name
    assert ours.get_json() == theirs.get_json(), name


def test_ordinary_uploads_take_the_fast_parser(monkeypatch) -> None:
    """An ordinary upload never reaches werkzeug's parser; an empty file as werkzeug's test
    client writes it (no CRLF before the delimiter) does, and arrives."""
    from werkzeug.formparser import FormDataParser

    client = _app(InMemoryRequest).test_client()
    fell_back = []
    original = FormDataParser._parse_multipart
    monkeypatch.setattr(FormDataParser, "_parse_multipart",
                        lambda self, *a: (fell_back.append(1), original(self, *a))[1])
    doc = client.post("/", data={"image": (io.BytesIO(b""), "c.jpg"), "wait": "5"},
                      content_type="multipart/form-data").get_json()
    assert doc == {"form": {"wait": ["5"]}, "files": {"image": [["c.jpg", "image/jpeg", ""]]}}
    body, content_type = _requests_body([("image", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))])
    assert len(fell_back) == 1
    doc = client.post("/", data=body, content_type=content_type).get_json()
    assert doc["files"] == {"image": [["a.jpg", "image/jpeg", "ffd8ff"]]} and len(fell_back) == 1
