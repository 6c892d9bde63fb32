"""Structured JSON logs with the request id and job id of whatever is being done.

The API sets the request id (from ``X-Request-ID`` or a new one), passes it to the job as a
message header, and the worker sets it again around the task, so one id follows a photo from
HTTP to the worker's logs. Nothing logs image bytes or embeddings: the records carry ids,
codes and timings only.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


def configure(level: str | None = None, stream=None) -> None:
    """JSON lines on stderr for the root logger (idempotent); ``level`` is the process's
    ``AURUM_LOG_LEVEL`` setting, passed by whoever built the settings."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_aurum", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._aurum = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(
        "{asctime}{levelname}{name}{message}{request_id}{job_id}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level or "INFO")
