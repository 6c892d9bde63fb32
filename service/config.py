"""The job service's settings: the core's (:class:`aurum.config.Settings`) and the API's and
workers' own, read from the environment once per process (:func:`current`) and passed down.

``aurum config`` prints every one of them and the README's table is the same list
(tests/test_layout.py compares them with what the code reads).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from aurum.config import Settings, setting

from .sealing import Sealer, sealer


@dataclass(frozen=True)
class ServiceSettings(Settings):
    """What the API and the workers read, on top of the core's settings."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **Settings.CHOICES, "auth": ("on", "off"), "serializer": ("json", "msgpack")}

    redis_url: str = setting("AURUM_REDIS_URL", "redis://localhost:6379/0",
                             "Redis for broker, results, image store, cache and limits. Over TLS: "
                             "rediss://host:port/0?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem (and "
                             "ssl_certfile, ssl_keyfile for client certificates).")
    redis_sentinels: str = setting("AURUM_REDIS_SENTINELS", "",
                                   "Redis Sentinels, 'host:port,host:port,...': when set, every Redis user (broker, "
                                   "results, images, cache, records, limits, keys, heartbeats) asks them for the "
                                   "primary of AURUM_REDIS_MASTER and follows a failover; AURUM_REDIS_URL is then unused.")
    redis_master: str = setting("AURUM_REDIS_MASTER", "aurum", "The Sentinels' name of the Redis primary.")
    redis_db: int = setting("AURUM_REDIS_DB", 0, "Redis database number behind the Sentinels.")
    redis_password: str = setting("AURUM_REDIS_PASSWORD", "",
                                  "Password of the primary and replicas behind the Sentinels (requirepass).")
    redis_sentinel_password: str = setting("AURUM_REDIS_SENTINEL_PASSWORD", "",
                                           "Password of the Sentinels themselves (their requirepass), if any.")
    redis_wait_replicas: int = setting("AURUM_REDIS_WAIT_REPLICAS", 0,
                                       "Replicas that must hold an accepted job before the API answers 202 (Redis "
                                       "WAIT): 1 with Sentinels, so that a failover loses no accepted job; 0: none.")
    redis_wait_timeout: int = setting("AURUM_REDIS_WAIT_TIMEOUT", 500,
                                      "Milliseconds the API waits for AURUM_REDIS_WAIT_REPLICAS before answering "
                                      "503 REPLICATION_LAG (retryable).")
    tls_cert: str = setting("AURUM_TLS_CERT", "", "PEM certificate (chain) the API serves HTTPS with (gunicorn); "
                                                  "with AURUM_TLS_KEY. Empty: plain HTTP.")
    tls_key: str = setting("AURUM_TLS_KEY", "", "PEM private key of AURUM_TLS_CERT.")
    result_ttl: int = setting("AURUM_RESULT_TTL", 3600, "Seconds a job's result is kept (privacy TTL).")
    image_ttl: int = setting("AURUM_IMAGE_TTL", 600, "Seconds an uploaded image may wait in Redis for a worker.")
    max_batch: int = setting("AURUM_MAX_BATCH", 32, "Most images in one batch request.")
    max_wait: int = setting("AURUM_MAX_WAIT", 30, "Longest ?wait= a request may ask for, seconds.")
    max_request_bytes: int = setting("AURUM_MAX_REQUEST_BYTES", 64 * 1024 * 1024,
                                     "Largest request body, bytes (checked before reading it).")
    max_retries: int = setting("AURUM_MAX_RETRIES", 3, "Retries of a retryable failure before the fallback.")
    max_deliveries: int = setting("AURUM_MAX_DELIVERIES", 3,
                                  "Deliveries of one job (worker deaths) before POISON_MESSAGE.")
    task_soft_time_limit: int = setting("AURUM_TASK_SOFT_TIME_LIMIT", 20, "Seconds before a job is asked to stop.")
    task_time_limit: int = setting("AURUM_TASK_TIME_LIMIT", 30, "Seconds before a job's process is killed.")
    task_image_seconds: float = setting("AURUM_TASK_IMAGE_SECONDS", 1.0,
                                        "Seconds a batch's time limits grow by for each image after the first "
                                        "(every image its own budget; a decode is bounded below a second).")
    requeue_after: int = setting("AURUM_REQUEUE_AFTER", 300,
                                 "Seconds a job may wait, never started, before a status read publishes it again.")
    prefetch: int = setting("AURUM_PREFETCH", 1, "Messages each worker process reserves ahead.")
    cache_ttl: int = setting("AURUM_CACHE_TTL", 3600, "Seconds a cached result is kept (0: no cache).")
    cache_l1_size: int = setting("AURUM_CACHE_L1_SIZE", 1024, "Results kept in each process's in-memory cache.")
    cache_l1_ttl: int = setting("AURUM_CACHE_L1_TTL", 300, "Seconds a process keeps a result in memory.")
    auth: str = setting("AURUM_AUTH", "on", "API keys required (on) or not (off: local development only).")
    jwt_jwks: str = setting("AURUM_JWT_JWKS", "",
                            "Path of a JWKS file of RS256/ES256 public keys: when set, Authorization: Bearer <JWT> "
                            "is accepted besides API keys (needs AURUM_JWT_ISSUER and AURUM_JWT_AUDIENCE).")
    jwt_issuer: str = setting("AURUM_JWT_ISSUER", "", "The iss every JWT must carry.")
    jwt_audience: str = setting("AURUM_JWT_AUDIENCE", "", "The aud every JWT must carry.")
    jwt_leeway: int = setting("AURUM_JWT_LEEWAY", 30, "Clock skew allowed on a JWT's exp, nbf and iat, seconds.")
    otel_endpoint: str = setting("OTEL_EXPORTER_OTLP_ENDPOINT", "",
                                 "OTLP/HTTP endpoint for traces (e.g. http://collector:4318); tracing is off without "
                                 "it (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Other OTEL_* variables reach the SDK.")
    otel_traces_endpoint: str = setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "",
                                        "OTLP/HTTP endpoint for traces only (e.g. http://collector:4318/v1/traces).")
    otel_service_name: str = setting("OTEL_SERVICE_NAME", "",
                                     "Service name on the spans (default: aurum-api, aurum-worker).")
    rate_limit: str = setting("AURUM_RATE_LIMIT", "600/minute;30/second",
                              "Default per-key request limits (a fixed window and a burst window).")
    batch_image_limit: str = setting("AURUM_BATCH_IMAGE_LIMIT", "1200/minute", "Per-key images submitted in batches.")
    cors_origins: str = setting("AURUM_CORS_ORIGINS", "", "Comma-separated origins allowed by CORS (none by default).")
    encryption_keys: str = setting("AURUM_ENCRYPTION_KEYS", "",
                                   "AES-GCM keys sealing what Redis keeps: 'id:base64key,...' (first seals; "
                                   "`aurum keygen`), or 'off' (local development). Required by the service.")
    sentry_dsn: str = setting("SENTRY_DSN", "", "Sentry DSN; error reporting is on when it is set.")
    sentry_environment: str = setting("SENTRY_ENVIRONMENT", "production", "Sentry environment name.")
    serializer: str = setting("AURUM_SERIALIZER", "json", "Celery message and result serializer: json or msgpack.")
    task_events: bool = setting("AURUM_TASK_EVENTS", False,
                                "Celery task events from the start (Flower turns them on itself while it runs; "
                                "they cost ~40 % of a worker's main-process CPU).")
    worker_metrics_port: int = setting("AURUM_WORKER_METRICS_PORT", 0,
                                       "First port of the workers' Prometheus exporters (child i serves port + i; "
                                       "0: none). The Procfile sets 9808.")
    metrics_bind: str = setting("AURUM_METRICS_BIND", "127.0.0.1", "Address the workers' exporters listen on.")
    # --- autoscaling (workers/autoscale.py; on with celery's --autoscale MAX,MIN) --------------
    autoscale_interval: float = setting("AURUM_AUTOSCALE_INTERVAL", 1.0, "Seconds between the autoscaler's decisions.")
    autoscale_hold: float = setting("AURUM_AUTOSCALE_HOLD", 30.0,
                                    "Seconds the autoscaler must want fewer processes before it stops one.")
    autoscale_utilisation: float = setting("AURUM_AUTOSCALE_UTILISATION", 0.7,
                                           "Share of its capacity a worker child is planned to be busy.")
    autoscale_drain: float = setting("AURUM_AUTOSCALE_DRAIN", 10.0,
                                     "Seconds within which the autoscaler plans to clear the queued backlog.")
    autoscale_horizon: float = setting("AURUM_AUTOSCALE_HORIZON", 5.0,
                                       "Seconds ahead the arrival rate is forecast (a new child's start-up).")
    # --- model lifecycle (service/routing.py, service/comparison.py) -------------------------
    routing_refresh: float = setting("AURUM_ROUTING_REFRESH", 1.0,
                                     "Seconds the API and the workers keep the routing policy they read: a route "
                                     "change, promotion or rollback takes effect within it, without a restart.")
    model_window: int = setting("AURUM_MODEL_WINDOW", 300,
                                "Seconds per window of the per-version summaries (scores, verdicts, faces, latency).")
    model_stats_ttl: int = setting("AURUM_MODEL_STATS_TTL", 7 * 24 * 3600,
                                   "Seconds the per-version window summaries (counts only) are kept.")
    drift_psi: float = setting("AURUM_DRIFT_PSI", 0.25,
                               "Drift: least population stability index of a measure against its reference.")
    drift_p: float = setting("AURUM_DRIFT_P", 0.001,
                             "Drift: largest chi-square p-value (the shift must also not be sampling noise).")
    drift_min_faces: int = setting("AURUM_DRIFT_MIN_FACES", 200,
                                   "Drift: fewest faces in both the recent windows and the reference to judge at all.")
    promote_min_pairs: int = setting("AURUM_PROMOTE_MIN_PAIRS", 200,
                                     "Gate: fewest shadow pairs before a candidate goes to canary or is promoted.")
    promote_min_correlation: float = setting("AURUM_PROMOTE_MIN_CORRELATION", 0.8,
                                             "Gate: least rank correlation of a candidate's shadow scores with the live ones.")
    promote_max_shift: float = setting("AURUM_PROMOTE_MAX_SHIFT", 5.0,
                                       "Gate: largest mean score difference, candidate - live, in points.")
    worker_init_timeout: float = setting("AURUM_WORKER_INIT_TIMEOUT", 30.0,
                                         "Seconds a pool child may take to load and warm its models.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("AURUM_TLS_CERT and AURUM_TLS_KEY: set both (HTTPS) or neither (HTTP)")
        if self.redis_url.startswith("rediss://") and "ssl_cert_reqs=" not in self.redis_url:
            # Celery's Redis backend refuses rediss:// without it; say so here, once, for every user
            raise ValueError("AURUM_REDIS_URL: a rediss:// URL needs ssl_cert_reqs=required (and ssl_ca_certs="
                             "/path/ca.pem unless the system's CAs sign the server's certificate)")
        if self.redis_sentinels:
            sentinels(self.redis_sentinels)  # malformed: raises here, with the variable's name
        if self.redis_wait_replicas < 0 or self.redis_wait_timeout <= 0:
            raise ValueError("AURUM_REDIS_WAIT_REPLICAS must be >= 0 and AURUM_REDIS_WAIT_TIMEOUT > 0")
        if not 0 < self.autoscale_utilisation <= 1 or self.autoscale_interval <= 0 or self.autoscale_drain <= 0:
            raise ValueError("AURUM_AUTOSCALE_UTILISATION: above 0 and at most 1; AURUM_AUTOSCALE_INTERVAL and "
                             "AURUM_AUTOSCALE_DRAIN: above 0")
        if self.model_window <= 0 or self.routing_refresh <= 0:
            raise ValueError("AURUM_MODEL_WINDOW and AURUM_ROUTING_REFRESH must be above 0")
        if self.jwt_jwks and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("AURUM_JWT_JWKS: set AURUM_JWT_ISSUER and AURUM_JWT_AUDIENCE with it "
                             "(a token for another service must not be accepted here)")

    @property
    def gates(self) -> dict[str, float]:
        """What the comparison report must show before a canary or a promotion (service/comparison.py)."""
        return {"min_pairs": self.promote_min_pairs, "min_rank_correlation": self.promote_min_correlation,
                "max_mean_difference": self.promote_max_shift}

    @cached_property
    def sealer(self) -> Sealer:
        """What seals and opens everything kept in Redis, from ``AURUM_ENCRYPTION_KEYS``
        (raises :class:`service.sealing.EncryptionNotConfigured` when it is empty)."""
        return sealer(self.encryption_keys)


def sentinels(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs (raises ValueError naming the variable)."""
    pairs = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"AURUM_REDIS_SENTINELS: {part!r} is not host:port")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise ValueError("AURUM_REDIS_SENTINELS: no host:port in it")
    return pairs


_current: ServiceSettings | None = None
_lock = threading.Lock()


def current() -> ServiceSettings:
    """This process's settings, read from the environment the first time they are needed (a
    bad value raises ValueError with the variable's name); every later call returns the same
    object."""
    global _current
    with _lock:
        if _current is None:
            _current = ServiceSettings.from_env()
        return _current


def reset() -> None:
    """Read the environment again at the next :func:`current` (tests that change it)."""
    global _current
    with _lock:
        _current = None
