"""One error shape, ``{"error": {"code", "message", "details"}}``, and the one place where error
kinds map to HTTP statuses."""

from __future__ import annotations

from typing import Any

import redis
from kombu.exceptions import OperationalError
from flask import Flask, current_app, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from aurum import errors
from service.contract import kind_of

STATUS_BY_KIND = {  # every kind of aurum.errors and service.contract
    "input": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "too_large": 413,
    "unsupported": 415,
    "unprocessable": 422,
    "not_found": 404,
    "conflict": 409,
    "gone": 410,
    "rate_limited": 429,
    "unavailable": 503,
    "timeout": 504,
    "internal": 500,
}
HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE",
              415: "UNSUPPORTED_MEDIA_TYPE", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}


class JobNotFound(errors.AurumError):
    code = "JOB_NOT_FOUND"
    kind = "not_found"
    default_message = "No such job (it may have expired or been deleted)."


class NotADeadLetter(errors.AurumError):
    code = "NOT_A_DEAD_LETTER"
    kind = "conflict"
    default_message = "The job is not a dead letter: only jobs set aside as POISON_MESSAGE are re-queued."


class DeadLetterExpired(errors.AurumError):
    code = "DEAD_LETTER_EXPIRED"
    kind = "gone"
    default_message = "The dead letter's images have expired (AURUM_IMAGE_TTL): it cannot run again."


class InvalidRoute(errors.AurumError):
    code = "INVALID_ROUTE"
    kind = "conflict"
    default_message = "That routing change cannot be made."


class GateFailed(errors.AurumError):
    code = "GATE_FAILED"
    kind = "conflict"
    default_message = "The candidate's comparison report fails its gates; shadow it longer, or force."


class RateLimited(errors.AurumError):
    code = "RATE_LIMITED"
    kind = "rate_limited"
    default_message = "Rate limit exceeded for this key; retry after the number of seconds in Retry-After."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(errors.AurumError):
    code = "SERVICE_UNAVAILABLE"
    kind = "unavailable"
    default_message = "The job queue is unreachable; try again shortly."


class ReplicationLag(errors.AurumError):
    code = "REPLICATION_LAG"
    kind = "unavailable"
    default_message = ("The job could not be copied to a Redis replica in time (AURUM_REDIS_WAIT_REPLICAS): "
                       "it is not accepted; try again shortly.")


def status_for(code: str, kind: str | None = None) -> int:
    """The HTTP status of an error code (its kind's), for a request's error or a job's failure."""
    return STATUS_BY_KIND.get(kind or kind_of(code), 500)


def _drain_body() -> None:
    """Read what is left of an accepted-size request body before answering an error early
    (auth, Redis down): a server that answers and closes while the client is still sending
    makes the client see a reset connection instead of the error. Oversized bodies (413) are
    refused unread, as they must be."""
    if has_request_context() and request.content_length and \
            request.content_length <= (current_app.config.get("MAX_CONTENT_LENGTH") or 0):
        try:
            request.stream.read()
        except Exception:  # the client went away: nothing to save
            pass


def error_response(code: str, message: str, status: int, details: dict[str, Any] | None = None):
    if status != 413:
        _drain_body()
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register(app: Flask) -> None:
    @app.errorhandler(errors.AurumError)
    def aurum_error(exc: errors.AurumError):
        response = error_response(exc.code, exc.message, status_for(exc.code, exc.kind), exc.details)
        response.headers.update(getattr(exc, "headers", {}))  # Retry-After on 429
        return response

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def redis_down(exc: Exception):
        app.logger.warning("redis unavailable: %s", type(exc).__name__)
        err = ServiceUnavailable()
        return error_response(err.code, err.message, 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        code = HTTP_CODES.get(status, f"HTTP_{status}")
        message = exc.description or exc.name
        if status == 413:
            message = f"The request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes."
        response = error_response(code, message, status)
        for name, value in exc.get_headers():  # e.g. Allow on 405, Retry-After on 429
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        import sentry_sdk  # handled here, so Flask's own signal (which Sentry listens to) never fires

        sentry_sdk.capture_exception(exc)
        return error_response("INTERNAL_ERROR", "Internal error.", 500)
