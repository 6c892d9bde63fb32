"""Aurum on several hosts (bench/hosts.py's network namespaces): Redis on one, an API instance
(the Procfile's API server) on each API host, a Celery worker (the Procfile's) on each worker host,
and Debian's HAProxy on the machine itself, in front of the APIs with deploy/haproxy/haproxy.cfg.
Clients (the tests, the benchmarks) talk to HAProxy; every process reaches Redis at its host's
address. Used by tests/ha/test_hosts.py and bench/scaleout.py.

    with Cluster(workdir, apis=2, workers=2) as c:
        c.start_worker("w2"); c.topology.cut("api1"); c.topology.kill("w1"); ...
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.helpers import processes
from tests.helpers.deploy import procfile

from .hosts import Topology

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
REDIS_PORT, SENTINEL_PORT, API_PORT = 6379, 26379, 8000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, workdir: Path, apis: int = 2, workers: int = 2, env: dict[str, str] | None = None,
                 worker_cores: bool = True, prefix: str | None = None, sentinel: bool = False) -> None:
        """``worker_cores``: each worker host is pinned to a core of its own (w1 to core 0, w2 to
        core 1...), one pool child with one ONNX Runtime thread: a host of one core.
        ``sentinel``: three Redis hosts (redis1 the primary, two replicas), a Sentinel on each;
        every process finds the primary through them (AURUM_REDIS_SENTINELS) and the API waits
        for a replica before it answers 202 (AURUM_REDIS_WAIT_REPLICAS=1)."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.api_hosts = [f"api{i + 1}" for i in range(apis)]
        self.worker_hosts = [f"w{i + 1}" for i in range(workers)]
        self.redis_hosts = ["redis1", "redis2", "redis3"] if sentinel else ["redis"]
        self.topology = Topology([*self.redis_hosts, *self.api_hosts, *self.worker_hosts],
                                 **({"prefix": prefix} if prefix else {})).up()
        addr = self.topology.addresses
        bin_dir = Path(sys.executable).parent
        redis_env = ({"AURUM_REDIS_SENTINELS": ",".join(f"{addr[h]}:{SENTINEL_PORT}" for h in self.redis_hosts),
                      "AURUM_REDIS_MASTER": "aurum", "AURUM_REDIS_WAIT_REPLICAS": "1"} if sentinel
                     else {"AURUM_REDIS_URL": f"redis://{addr['redis']}:{REDIS_PORT}/0"})
        self.env = {**os.environ, **redis_env,
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "AURUM_RATE_LIMIT": "1000000/minute;100000/second",
                    "AURUM_BATCH_IMAGE_LIMIT": "1000000/minute", "AURUM_WORKER_CONCURRENCY": "1", "AURUM_ORT_THREADS": "1",
                    "AURUM_BIND": "0.0.0.0", "PORT": str(API_PORT), "WEB_CONCURRENCY": "2", **(env or {})}
        if not self.env.get("AURUM_ENCRYPTION_KEYS"):  # sealed at rest, as in production: a key for this run
            self.env["AURUM_ENCRYPTION_KEYS"] = subprocess.run(
                [sys.executable, "-m", "aurum", "keygen"], capture_output=True, text=True, check=True,
                timeout=60).stdout.strip()
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if not sentinel:
            self.env.pop("AURUM_REDIS_SENTINELS", None)
        self.worker_cores = worker_cores
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.haproxy: subprocess.Popen | None = None
        try:
            for host in self.redis_hosts:
                self.start_redis(host)
            token = subprocess.run([sys.executable, "-m", "aurum", "keys", "create", "--name", "cluster"], env=self.env,
                                   capture_output=True, text=True, timeout=60, check=True).stdout.strip()
            self.http = requests.Session()
            self.http.headers["X-API-Key"] = token
            for host in self.api_hosts:
                self.start_api(host)
            self._start_haproxy()
            for host in self.worker_hosts:
                self.start_worker(host)
        except BaseException:
            self.stop()
            raise

    # --- processes ----------------------------------------------------------------------------
    def _log(self, name: str):
        log = open(self.workdir / f"{name}.log", "a")
        self.logs.append(log)
        return log

    def start_redis(self, host: str) -> None:
        """The host's redis-server (and its Sentinel): the first Redis host starts as the primary,
        the others as its replicas; a host started again after a failover is made a replica of
        the new primary by the Sentinels."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        data = self.workdir / host
        data.mkdir(exist_ok=True)
        addr = self.topology.addresses
        args = [binary, "--port", str(REDIS_PORT), "--bind", addr[host], "--dir", str(data), "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "no",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if host != self.redis_hosts[0] and not (data / "started").exists():
            args += ["--replicaof", addr[self.redis_hosts[0]], str(REDIS_PORT)]
        (data / "started").touch()
        self.procs[host] = self.topology.popen(host, args, stdout=self._log(host), stderr=subprocess.STDOUT)
        self._wait_tcp(addr[host], REDIS_PORT, f"redis on {host}")
        if len(self.redis_hosts) > 1:
            conf = data / "sentinel.conf"
            if not conf.exists():
                conf.write_text(
                    f"port {SENTINEL_PORT}\nbind {addr[host]}\ndir {data}\nprotected-mode no\n"
                    f"sentinel monitor aurum {addr[self.redis_hosts[0]]} {REDIS_PORT} 2\n"
                    "sentinel down-after-milliseconds aurum 1000\nsentinel failover-timeout aurum 3000\n"
                    "sentinel parallel-syncs aurum 1\n")
            sentinel = shutil.which("redis-sentinel") or binary
            self.procs[f"{host}-sentinel"] = self.topology.popen(
                host, [sentinel, str(conf), *([] if sentinel.endswith("sentinel") else ["--sentinel"])],
                stdout=self._log(f"{host}-sentinel"), stderr=subprocess.STDOUT)
            self._wait_tcp(addr[host], SENTINEL_PORT, f"sentinel on {host}")

    def primary(self) -> str | None:
        """The Redis host the Sentinels name as the primary now."""
        import redis

        by_address = {a: h for h, a in self.topology.addresses.items()}
        for host in self.redis_hosts:
            try:
                client = redis.Redis(host=self.topology.addresses[host], port=SENTINEL_PORT, socket_timeout=2)
                address, _ = client.sentinel_get_master_addr_by_name("aurum")
                client.close()
                return by_address.get(address.decode() if isinstance(address, bytes) else address)
            except (redis.RedisError, TypeError):
                continue
        return None

    def start_api(self, host: str) -> None:
        self.procs[host] = self.topology.popen(host, procfile(self.env)["web"], cwd=ROOT, env=self.env,
                                               stdout=self._log(host), stderr=subprocess.STDOUT)

    def start_worker(self, host: str) -> None:
        argv = procfile(self.env)["worker"] + ["--hostname", f"{host}@%h"]
        if self.worker_cores:
            core = self.worker_hosts.index(host) % (os.cpu_count() or 1)
            argv = ["taskset", "-c", str(core), *argv]
        self.procs[host] = self.topology.popen(host, argv, cwd=ROOT, env=self.env, stdout=self._log(host),
                                               stderr=subprocess.STDOUT)

    def stop_worker(self, host: str) -> None:
        """SIGTERM, as an operator: the worker finishes what it holds."""
        proc = self.procs.pop(host, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                self.topology.kill(host)

    def _start_haproxy(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.lb_port, self.stats_port = _free_port(), _free_port()
        self.base = f"http://127.0.0.1:{self.lb_port}"
        addr = self.topology.addresses
        env = {**os.environ, "AURUM_LB_BIND": f"127.0.0.1:{self.lb_port}",
               "AURUM_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
               "AURUM_API_1": f"{addr[self.api_hosts[0]]}:{API_PORT}",
               "AURUM_API_2": f"{addr[self.api_hosts[-1]]}:{API_PORT}",
               "AURUM_LB_ERRORS": str(HAPROXY_CONFIG.parent / "errors"), "AURUM_LB_HEADER_TIMEOUT": "10s"}
        self.haproxy = subprocess.Popen([binary, "-db", "-f", str(HAPROXY_CONFIG)], env=env,
                                        stdout=self._log("haproxy"), stderr=subprocess.STDOUT)

    @staticmethod
    def _wait_tcp(host: str, port: int, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{what} did not start on {host}:{port}")

    def api_url(self, host: str) -> str:
        return f"http://{self.topology.addresses[host]}:{API_PORT}"

    def redis(self):
        """A client of the primary (through the Sentinels when there are some)."""
        from service import connections
        from service.config import ServiceSettings

        return connections.client(ServiceSettings.from_env(self.env), timeout=5)

    def beating(self) -> set[str]:
        """The worker hosts with a child beating, models loaded (service/heartbeats.py)."""
        from service import heartbeats

        client = self.redis()
        try:
            return {member.split("@", 1)[0] for member in heartbeats.live(client)}
        finally:
            client.close()

    def wait_beating(self, hosts: set[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.beating() != hosts:
            if time.monotonic() > deadline:
                raise AssertionError(f"beating: {self.beating()}, expected {hosts}")
            time.sleep(0.3)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get(self.base + "/ready", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError("the cluster did not become ready (see the logs in " + str(self.workdir) + ")")

    def __enter__(self) -> "Cluster":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        processes.stop(self.haproxy, timeout=10)
        for host, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.terminate()
        for host, proc in list(self.procs.items()):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.topology.down()
        for log in self.logs:
            log.close()
