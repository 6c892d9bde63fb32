"""A live Aurum for tests: our own redis-server, gunicorn and a celery worker started from the
Procfile's commands, and an API key made with `aurum keys create`. Loopback only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from .redis_server import RedisServer, free_port
from .test_deploy import procfile

ROOT = Path(__file__).resolve().parent.parent
RESULT_TTL = 4


class Stack:
    def __init__(self, workdir: Path, appendonly: bool = False, result_ttl: int = 3600,
                 extra_env: dict[str, str] | None = None) -> None:
        self.redis = RedisServer(workdir, appendonly=appendonly).start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = Path(sys.executable).parent
        metrics_port = free_port()
        self.worker_metrics = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(2)]  # per child
        self.env = {**os.environ, "AURUM_REDIS_URL": f"{self.redis.url}/0", "AURUM_RESULT_TTL": str(result_ttl),
                    "AURUM_WORKER_METRICS_PORT": str(metrics_port), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.update(extra_env or {})
        self.workdir = workdir
        created = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "e2e"], env=self.env,
                                 capture_output=True, text=True, timeout=30, check=True)
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = created.stdout.strip()
        commands = procfile({"PORT": str(self.port), "AURUM_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2"})
        self.logs = [open(workdir / f"{name}.log", "w") for name in ("web", "worker")]
        self.procs = [subprocess.Popen(commands[name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                      for name, log in zip(("web", "worker"), self.logs)]

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), "a process exited"
            try:
                if self.http.get(self.base + "/ready", timeout=3).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError("the stack did not become ready")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        self.redis.stop()
