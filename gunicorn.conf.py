"""gunicorn settings read from the working directory: HTTPS when AURUM_TLS_CERT and AURUM_TLS_KEY
are set, Prometheus multiprocess mode for the web workers (so /metrics adds up every worker
process), and cleanup of a dead worker's files."""

import os
import tempfile

from service.config import current

try:
    _settings = current()  # the workers (forked from here) use these same settings
except ValueError as exc:  # one clear line at start, not a traceback
    raise SystemExit(f"aurum: invalid setting: {exc}") from None
if _settings.tls_cert:
    certfile, keyfile = _settings.tls_cert, _settings.tls_key

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aurum-web-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
