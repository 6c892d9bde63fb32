"""A real ``redis-server`` of our own: free port, temporary directory, stopped afterwards."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.helpers import processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free ports, below the kernel's ephemeral range: the
    pool children bind base + index later, and a port in the ephemeral range can be taken in
    between by any outgoing connection (seen: a worker child's metrics port)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class RedisServer:
    """``tls``: a :class:`tests.helpers.tls.Certificates`: TLS only (``--port 0``, ``--tls-port``;
    Debian's redis-server has TLS built in), so every connection a client makes is encrypted."""

    def __init__(self, workdir: Path, appendonly: bool = False, fsync: str = "everysec", tls=None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = workdir
        self.tls = tls
        ports = ["--port", str(self.port)] if tls is None else [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]
        self.args = [binary, *ports, "--bind", "127.0.0.1", "--dir", str(workdir),
                     "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", fsync,
                     "--daemonize", "no",
                     "--logfile", str(workdir / "redis.log")]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Without a database number (tests append one): use :meth:`url_for` for a TLS server."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    def url_for(self, db: int) -> str:
        query = f"?ssl_cert_reqs=required&ssl_ca_certs={self.tls.ca}" if self.tls else ""
        return f"{self.url}/{db}{query}"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url_for(0), socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash: only what the AOF has fsynced survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        processes.stop(self.proc)
