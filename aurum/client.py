"""A Python client for the Aurum service, with retries and an honest local fallback.

    client = AurumClient("http://127.0.0.1:8000", api_key="ak_...", fallback=True)
    result = client.score("photo.jpg", wait=10)           # a ScoreResult
    job_id = client.submit(image_bytes, max_faces=3)     # then client.wait(job_id)
    results = client.score_batch(["a.jpg", "b.png"], progress=print)

Every request has a timeout. 429, 503 and connection errors are retried with exponential backoff
and full jitter, honouring ``Retry-After``. With ``fallback=True``, when the service is down or
unreachable the client scores the photo in-process with the same real models and marks the
result ``degraded: true`` with the reason; it never makes up a result. The fallback covers every
call that scores: ``score``, ``score_batch``, ``submit`` (the job is then a local one, its id
starting ``local-``, answered by ``get`` / ``wait`` / ``delete`` from this process) and ``get`` /
``wait`` of a job this client submitted (it keeps the photo in memory, never on disk, until the
job ends, at most :data:`PENDING_KEPT` of them).
"""

from __future__ import annotations

import io
import os
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import requests

from . import errors
from .schemas import ResultSchema, ScoreOptions, load_options

ImageLike = str | os.PathLike | bytes | bytearray | np.ndarray
RETRY_STATUSES = {429, 502, 503, 504}
LOCAL_PREFIX = "local-"
PENDING_KEPT = 256  # photos of submitted jobs kept for the fallback, oldest dropped first


class ServiceError(errors.AurumError):
    """An error the service answered with, or a failed job: ``code`` is the service's code."""

    def __init__(self, code: str, message: str, status: int | None = None, details: dict | None = None) -> None:
        super().__init__(message, **(details or {}))
        self.code = code
        self.status = status


class ServiceUnavailable(ServiceError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__("SERVICE_UNAVAILABLE", message, status)


@dataclass
class ScoreResult:
    """A result document (``aurum.schemas.ResultSchema``), validated, with shortcuts."""

    raw: dict[str, Any]
    job_id: str | None = None
    faces: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        problems = ResultSchema().validate(self.raw)
        if problems:
            raise ServiceError("INVALID_RESULT", f"The service sent a result that does not match the schema: {problems}")
        self.faces = self.raw["faces"]

    @property
    def primary(self) -> dict[str, Any] | None:
        index = self.raw.get("primary_face")
        return self.faces[index] if index is not None and self.faces else None

    @property
    def score(self) -> float | None:
        """The primary face's score; None with no face or when it was withheld (see ``withheld``)."""
        return self.primary["score"]["value"] if self.primary else None

    @property
    def confidence(self) -> float | None:
        return self.primary["score"].get("confidence") if self.primary else None

    @property
    def withheld(self) -> list[str]:
        """Why the primary face's score was withheld (the quality reasons); empty when it was given."""
        return list(self.primary["score"].get("withheld") or []) if self.primary else []

    @property
    def degraded(self) -> bool:
        return bool(self.raw.get("degraded"))

    @property
    def cached(self) -> bool:
        return bool(self.raw.get("cached"))


def image_bytes(image: ImageLike) -> bytes:
    """Paths are read, bytes pass through, numpy arrays (H x W x 3 RGB or H x W grey, uint8) are
    encoded as PNG."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, np.ndarray):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image.astype(np.uint8))).save(buf, "PNG")
        return buf.getvalue()
    return Path(image).read_bytes()


class AurumClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 10.0, fallback: bool = False,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fallback = fallback
        self.http = session or requests.Session()
        if api_key:
            self.http.headers["X-API-Key"] = api_key
        self._local = None
        self._pending: OrderedDict[str, tuple[bytes, dict[str, Any]]] = OrderedDict()  # job id -> photo, options
        self._local_jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # local job id -> its status document

    # --- HTTP with retries ----------------------------------------------------------------------
    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, self.base_url + path, timeout=timeout or self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise ServiceUnavailable(f"{self.base_url} is unreachable: {type(exc).__name__}") from exc
                time.sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            return response
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff * 6)
            except ValueError:
                pass
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** attempt))

    def _json(self, response: requests.Response, ok: Iterable[int] = (200, 202)) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in ok:
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = error.get("code", f"HTTP_{response.status_code}")
        message = error.get("message", response.reason or "request failed")
        if response.status_code in (502, 503, 504):
            raise ServiceUnavailable(message, response.status_code)
        raise ServiceError(code, message, response.status_code, error.get("details"))

    # --- the API ----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/health", timeout=5))

    def ready(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/ready", timeout=10), ok=(200, 503))

    def models(self) -> list[dict[str, Any]]:
        return self._json(self._request("GET", "/api/ml/models"))  # type: ignore[return-value]

    def submit(self, image: ImageLike, fallback: bool | None = None, **options: Any) -> str:
        """A job id; with the fallback on and the service down, a local job's (``local-...``)."""
        load_options(options)  # the same validation the service does, before any upload
        data = image_bytes(image)
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}
        try:
            job_id = self._json(self._request("POST", "/api/ml/score", files={"image": ("image", data)}, data=form))["job_id"]
        except ServiceUnavailable as exc:
            if not self._falls_back(fallback):
                raise
            return self._local_job(data, options, f"service unavailable: {exc.message}")
        if self.fallback:
            self._pending[job_id] = (data, options)
            while len(self._pending) > PENDING_KEPT:
                self._pending.popitem(last=False)
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's status document; a local job's from this process. With the fallback on, a
        job this client submitted is scored here when the service cannot be reached."""
        if job_id.startswith(LOCAL_PREFIX):
            try:
                return self._local_jobs[job_id]
            except KeyError:
                raise ServiceError("JOB_NOT_FOUND", "No such local job (deleted, or made by another client).",
                                   404) from None
        try:
            doc = self._json(self._request("GET", f"/api/ml/jobs/{job_id}"))
        except ServiceUnavailable as exc:
            if job_id not in self._pending or not self.fallback:
                raise
            data, options = self._pending.pop(job_id)
            return self.get(self._local_job(data, options, f"service unavailable: {exc.message}", job_id))
        if doc.get("status") in ("succeeded", "failed"):
            self._pending.pop(job_id, None)
        return doc

    def wait(self, job_id: str, timeout: float = 60.0) -> ScoreResult:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            doc = self.get(job_id)
            job_id = doc.get("job_id", job_id)  # a job scored here by the fallback has a local id
            if doc["status"] == "succeeded":
                return ScoreResult(doc["result"], job_id)
            if doc["status"] == "failed":
                err = doc["error"]
                raise ServiceError(err["code"], err["message"], details=err.get("details"))
            if time.monotonic() >= deadline:
                raise ServiceError("WAIT_TIMEOUT", f"Job {job_id} did not finish within {timeout} s.")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def delete(self, job_id: str) -> None:
        if job_id.startswith(LOCAL_PREFIX):
            self._local_jobs.pop(job_id, None)
            return
        self._pending.pop(job_id, None)
        self._json(self._request("DELETE", f"/api/ml/jobs/{job_id}"), ok=(204,))

    def score(self, image: ImageLike, wait: float = 30.0, fallback: bool | None = None, **options: Any) -> ScoreResult:
        """Submit and wait; falls back to local scoring when allowed and the service is down."""
        data = image_bytes(image)
        try:
            return self.wait(self.submit(data, fallback=False, **options), timeout=wait)
        except ServiceUnavailable as exc:
            if not self._falls_back(fallback):
                raise
            return self.score_locally(data, reason=f"service unavailable: {exc.message}", **options)

    def score_batch(self, images: list[ImageLike], wait: float = 120.0, progress: Callable[[int, int], Any] | None = None,
                    fallback: bool | None = None, **options: Any) -> list[ScoreResult | ServiceError]:
        """One batch job; ``progress(done, total)`` is called as the service reports progress.
        With the fallback on and the service down, every photo is scored here (degraded)."""
        load_options(options)
        datas = [image_bytes(img) for img in images]
        try:
            return self._batch(datas, wait, progress, options)
        except ServiceUnavailable as exc:
            if not self._falls_back(fallback):
                raise
            return self.score_batch_locally(datas, f"service unavailable: {exc.message}", **options)

    def _batch(self, datas: list[bytes], wait: float, progress: Callable[[int, int], Any] | None,
               options: dict[str, Any]) -> list[ScoreResult | ServiceError]:
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}
        files = [("images", (f"image{i}", data)) for i, data in enumerate(datas)]
        job_id = self._json(self._request("POST", "/api/ml/score/batch", files=files, data=form))["job_id"]
        deadline = time.monotonic() + wait
        last = -1
        while True:
            doc = self.get(job_id)
            done = doc.get("progress", {}).get("done", 0)
            if progress is not None and done != last:
                progress(done, len(datas))
                last = done
            if doc["status"] == "succeeded":
                return [ScoreResult(item, job_id) if "faces" in item else
                        ServiceError(item["error"]["code"], item["error"]["message"],
                                     details=item["error"].get("details")) for item in doc["result"]["items"]]
            if doc["status"] == "failed":
                raise ServiceError(doc["error"]["code"], doc["error"]["message"])
            if time.monotonic() >= deadline:
                raise ServiceError("WAIT_TIMEOUT", f"Batch {job_id} did not finish within {wait} s.")
            time.sleep(0.05)

    # --- fallback ---------------------------------------------------------------------------------
    def _falls_back(self, fallback: bool | None) -> bool:
        return self.fallback if fallback is None else fallback

    def _pipeline(self):
        if self._local is None:
            from .pipeline import Pipeline

            self._local = Pipeline()
        return self._local

    def score_locally(self, image: ImageLike, reason: str, **options: Any) -> ScoreResult:
        """The same pipeline and models, in this process; marked degraded with the reason."""
        opts: ScoreOptions = load_options(options)
        result = self._pipeline().score(image_bytes(image), opts)
        return ScoreResult({**result, "degraded": True, "degraded_reason": reason})

    def score_batch_locally(self, images: list[ImageLike], reason: str, **options: Any) -> list[ScoreResult | ServiceError]:
        """Every photo through the local pipeline at once (batched inference); each item a
        degraded result or its own error, in place, as the service's batch gives them."""
        outcomes = self._pipeline().score_many([image_bytes(img) for img in images], load_options(options))
        return [_local_error(o) if isinstance(o, errors.AurumError)
                else ScoreResult({**o, "degraded": True, "degraded_reason": reason}) for o in outcomes]

    def _local_job(self, data: bytes, options: dict[str, Any], reason: str, job_id: str | None = None) -> str:
        """Score now, in this process, and keep the outcome as a finished local job."""
        local_id = LOCAL_PREFIX + (job_id or secrets.token_hex(16))
        doc: dict[str, Any] = {"job_id": local_id, "kind": "single", "created_at": time.time()}
        try:
            doc.update(status="succeeded", result=self.score_locally(data, reason, **options).raw)
        except errors.AurumError as exc:
            doc.update(status="failed", error=exc.to_dict()["error"])
        self._local_jobs[local_id] = doc
        while len(self._local_jobs) > PENDING_KEPT:
            self._local_jobs.popitem(last=False)
        return local_id


def _local_error(exc: errors.AurumError) -> ServiceError:
    body = exc.to_dict()["error"]
    return ServiceError(body["code"], body["message"], details=body.get("details"))
