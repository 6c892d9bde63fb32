"""A live Aurum for tests: our own redis-server, the API server (granian) and a celery worker started from the
Procfile's commands, and an API key made with `aurum keys create`. Loopback only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.helpers.redis_server import RedisServer, free_port, free_port_range
from tests.helpers.sentinel import SentinelGroup
from tests.helpers.deploy import procfile
from tests.helpers.tls import make as make_certificates

ROOT = Path(__file__).resolve().parents[2]
RESULT_TTL = 4


class Stack:
    def __init__(self, workdir: Path, appendonly: bool = False, result_ttl: int = 3600,
                 extra_env: dict[str, str] | None = None, fsync: str = "everysec", tls: bool = False,
                 sentinel: bool = False) -> None:
        """``tls``: HTTPS from the API and Redis over TLS only, with a CA made here
        (``self.certificates.ca``, which ``self.http`` and the processes' requests trust).
        ``sentinel``: Redis is a primary, two replicas and three Sentinels (``self.sentinel``; then
        ``self.redis`` is None) and every process finds it through AURUM_REDIS_SENTINELS."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.certificates = make_certificates(workdir / "tls") if tls else None
        self.sentinel = SentinelGroup(workdir / "sentinel", replicas=2).start() if sentinel else None
        self.redis = None if sentinel else RedisServer(workdir, appendonly=appendonly, fsync=fsync,
                                                       tls=self.certificates).start()
        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        bin_dir = Path(sys.executable).parent
        metrics_port = free_port_range(2)  # one exporter per pool child
        self.worker_metrics = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(2)]  # per child
        self.env = {**os.environ, "AURUM_RESULT_TTL": str(result_ttl),
                    "AURUM_WORKER_METRICS_PORT": str(metrics_port), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        if self.sentinel:
            self.env.pop("AURUM_REDIS_URL", None)
            self.env.update(self.sentinel.env(0))
        else:
            self.env["AURUM_REDIS_URL"] = self.redis.url_for(0)
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # One budget per key covers status polls too; the harness's key polls fast. Tests that
        # are about limits make keys with their own --rate, or an app with its own settings.
        self.env["AURUM_RATE_LIMIT"] = "100000/minute;10000/second"
        if self.certificates:
            self.env.update(AURUM_TLS_CERT=str(self.certificates.cert), AURUM_TLS_KEY=str(self.certificates.key),
                            REQUESTS_CA_BUNDLE=str(self.certificates.ca))  # the CLI and SDK trust the CA
        self.env.update(extra_env or {})
        self.workdir = workdir
        created = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "e2e"], env=self.env,
                                 capture_output=True, text=True, timeout=30, check=True)
        self.http = requests.Session()
        if self.certificates:  # (requests lets REQUESTS_CA_BUNDLE override a session's verify)
            self.http.verify, self.http.trust_env = str(self.certificates.ca), False
        self.http.headers["X-API-Key"] = created.stdout.strip()
        commands = procfile({"PORT": str(self.port), "AURUM_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2"})
        self.commands = commands
        self.logs = [open(workdir / f"{name}.log", "a") for name in ("web", "worker")]
        self.procs = [subprocess.Popen(commands[name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                      for name, log in zip(("web", "worker"), self.logs)]

        self.worker_restarts = 0
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        """What compose's `restart: unless-stopped` does: a worker that exits is started again
        (Celery's worker can exit on a Redis outage; see RELIABILITY.md)."""
        while not self._stopping.wait(0.5):
            if self.procs[1].poll() is not None and not self._stopping.is_set():
                self.restart_worker()
                self.worker_restarts += 1

    @property
    def worker(self) -> subprocess.Popen:
        return self.procs[1]

    def worker_children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.worker.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def restart_worker(self) -> None:
        """Start the worker again (after it was killed), from the same Procfile command."""
        self.worker.wait()
        self.procs[1] = subprocess.Popen(self.commands["worker"], cwd=ROOT, env=self.env, stdout=self.logs[1],
                                         stderr=subprocess.STDOUT)

    def stop_worker(self) -> None:
        """Stop the worker for good (SIGTERM, as an operator would), not restarted."""
        self._stopping.set()
        self._supervisor.join()
        self.worker.terminate()
        self.worker.wait(60)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), "a process exited"
            try:  # /ready pings the workers: on a loaded machine one answer can take seconds
                if self.http.get(self.base + "/ready", timeout=15).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.3)
        raise AssertionError("the stack did not become ready")

    def __enter__(self) -> "Stack":
        """``with Stack(...) as stack:``: ready on entry (stopped again if it never gets ready),
        stopped on exit."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._supervisor.join()
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        for redis_ in (self.redis, self.sentinel):
            if redis_ is not None:
                redis_.stop()
