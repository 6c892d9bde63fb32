"""The API's HTTP server: ``python -m api.serve`` (the Procfile's ``web``) runs ``create_app()``
under granian (a Rust HTTP server; WSGI, several worker processes, a pool of Python threads in
each).

Why granian and not gunicorn: its event loop is Rust, so a connection that is idle or trickles
its headers or body costs Python nothing until its request is read (the body still streams to
the app: a 413 comes before an oversized body is read), and a request costs ~0.25 ms of API CPU
against gunicorn + gevent's ~0.38 (``GET /health`` on the Procfile stack, wrk, this machine);
the figures are in the README ("Slow clients", "Where the time goes").

``--threads`` is the most requests a worker runs at once: a ``?wait=`` request holds one while
it blocks on its job's stream (a socket read, which releases the GIL), so it is sized for
waiters, not for CPU; threads start on demand and stop when idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def server(argv: list[str] | None = None):
    """The granian server the arguments and this process's settings describe (not started)."""
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=128, help="most requests at once per worker")
    args = parser.parse_args(argv)
    from api.app import checked

    try:
        settings, _ = checked()  # here, once: a bad value is one clear line, not a worker boot loop
    except ValueError as exc:
        raise SystemExit(f"aurum: invalid setting: {exc}") from None
    from granian import Granian
    from granian.constants import Interfaces

    tls = {"ssl_cert": Path(settings.tls_cert), "ssl_key": Path(settings.tls_key)} if settings.tls_cert else {}
    return Granian("api:create_app", factory=True, interface=Interfaces.WSGI, address=args.bind, port=args.port,
                   workers=args.workers, blocking_threads=args.threads, respawn_failed_workers=True,
                   log_level="warning", **tls)


def main(argv: list[str] | None = None) -> int:
    # /metrics adds up every worker process: prometheus_client's multiprocess mode, which it
    # chooses when it is imported, and the ``api`` package above this module imports it (the
    # workers are forked from here). So without a directory, make one and start again with it.
    # No live gauges are kept per worker, so a dead worker's files need no cleanup.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aurum-web-metrics-")
        args = sys.argv[1:] if argv is None else argv
        os.execv(sys.executable, [sys.executable, "-m", "api.serve", *args])
    server(argv).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
