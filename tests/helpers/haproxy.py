"""Debian's HAProxy, run by the tests on deploy/haproxy/haproxy.cfg (the file compose uses)
with loopback addresses in its variables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.helpers import processes
from tests.helpers.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


class HAProxy:
    def __init__(self, workdir: Path, apis: list[str], header_timeout: str = "10s") -> None:
        """``apis``: the two API instances, ``host:port``."""
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self.port, self.stats_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AURUM_LB_BIND": f"127.0.0.1:{self.port}",
                    "AURUM_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
                    "AURUM_API_1": apis[0], "AURUM_API_2": apis[1],
                    "AURUM_LB_ERRORS": str(CONFIG.parent / "errors"), "AURUM_LB_HEADER_TIMEOUT": header_timeout}
        self.log = open(workdir / "haproxy.log", "a")
        self.args = [binary, "-db", "-f", str(CONFIG)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "HAProxy":
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "haproxy exited (see haproxy.log)"
            try:
                requests.get(f"http://127.0.0.1:{self.stats_port}/metrics", timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("haproxy did not start")

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.stats_port}/metrics", timeout=5).text

    def server_states(self) -> dict[str, bool]:
        """{server: up?} from HAProxy's own Prometheus exporter."""
        states: dict[str, bool] = {}
        for server, state, value in re.findall(
                r'^haproxy_server_status\{proxy="api",server="(\w+)",state="(\w+)"\} (\S+)$', self.metrics(), re.M):
            if float(value) == 1:
                states[server] = state == "UP"
        return states

    def responses(self) -> dict[str, float]:
        """HTTP responses each API server has given through HAProxy."""
        out: dict[str, float] = {}
        for server, value in re.findall(
                r'^haproxy_server_http_responses_total\{proxy="api",server="(\w+)",code="\w+"\} (\S+)$',
                self.metrics(), re.M):
            out[server] = out.get(server, 0.0) + float(value)
        return out

    def wait_states(self, expected: dict[str, bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_states() == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"servers {self.server_states()}, expected {expected}")

    def stop(self) -> None:
        processes.stop(self.proc, timeout=10)
        self.log.close()
