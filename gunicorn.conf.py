"""gunicorn settings read from the working directory: Prometheus multiprocess mode for the web
workers (so /metrics adds up every worker process), and cleanup of a dead worker's files."""

import os
import tempfile

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aurum-web-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
