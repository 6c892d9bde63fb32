"""Traces (OpenTelemetry), off unless an OTLP endpoint is configured by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the SDK reads the
rest of ``OTEL_*`` itself). One trace runs from the HTTP request (Flask) through the message
(Celery carries the context in its headers) into the worker's job and its pipeline stages.

Spans carry ids and timings only: Redis commands are recorded as ``COMMAND ? ?`` by the Redis
instrumentation, and nothing here sets an attribute from an image, a result, landmarks or an
embedding. Set up after fork (each gunicorn worker, each Celery pool child): the span exporter's
thread does not survive a fork."""

from __future__ import annotations

from typing import Any

_enabled = False


def setup(settings: Any, service: str) -> bool:
    """Install the tracer provider and the Flask-independent instrumentations once per process
    when ``settings`` name an OTLP endpoint; True when tracing is on."""
    global _enabled
    if not (settings.otel_endpoint or settings.otel_traces_endpoint):
        return False
    if _enabled:
        return True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service,
                                                        "aurum.process": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint etc. from OTEL_*
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    RedisInstrumentor().instrument()
    _enabled = True
    return True


def instrument_app(app) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls="health,ready,metrics")


def tracer():
    """The pipeline's tracer (its stages become spans), or None with tracing off."""
    if not _enabled:
        return None
    from opentelemetry import trace

    return trace.get_tracer("aurum.pipeline")


def annotate(**attributes: Any) -> None:
    """Set ids on the current span (the request's, or the job's), when tracing is on."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(f"aurum.{name}", value)


def flush() -> None:
    """Export what is buffered (a process about to exit)."""
    if _enabled:
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush(5000)
