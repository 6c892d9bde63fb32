"""A real Redis Sentinel group of our own on loopback: a primary, replicas and three Sentinels
(Debian's ``redis-sentinel``), each on a free port in a temporary directory, with passwords on the
data nodes and on the Sentinels (the configuration the README documents)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from tests.helpers import processes
from tests.helpers.redis_server import free_port

MASTER = "aurum"
PASSWORD = "data-node-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class Node:
    def __init__(self, workdir: Path, name: str, args: list[str], port: int | None = None) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.port, self.args = name, port or free_port(), args
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Node":
        self.proc = subprocess.Popen([*self.args[:1], *self._args()], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.dir)
        return self

    def _args(self) -> list[str]:
        return self.args[1:]

    def kill(self) -> None:
        """SIGKILL: the process dies as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        processes.stop(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class SentinelGroup:
    """``down_after``: milliseconds without an answer before a Sentinel deems the primary down
    (the failover time is about this plus an election)."""

    def __init__(self, workdir: Path, replicas: int = 1, down_after: int = 1000, failover_timeout: int = 3000,
                 min_replicas_to_write: int = 0) -> None:
        server = shutil.which("redis-server")
        sentinel = shutil.which("redis-sentinel") or server
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server redis-sentinel)")
        self.workdir = workdir
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                  "--requirepass", PASSWORD, "--masterauth", PASSWORD, "--repl-diskless-sync", "yes",
                  "--repl-diskless-sync-delay", "0", "--min-replicas-to-write", str(min_replicas_to_write),
                  "--min-replicas-max-lag", "10"]
        self.data: list[Node] = []
        primary_port = free_port()
        for i in range(1 + replicas):
            port = primary_port if i == 0 else free_port()
            args = [server, "--port", str(port), "--dir", "{dir}", "--logfile", "redis.log", *common]
            if i:
                args += ["--replicaof", "127.0.0.1", str(primary_port)]
            self.data.append(_DataNode(workdir, f"redis{i}", args, port))
        self.sentinels: list[Node] = []
        for i in range(3):
            node = _SentinelNode(workdir, f"sentinel{i}", [sentinel], primary_port, down_after, failover_timeout)
            self.sentinels.append(node)

    # --- addresses, as AURUM_REDIS_* take them ----------------------------------------------
    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self, db: int = 0) -> dict[str, str]:
        return {"AURUM_REDIS_SENTINELS": self.addresses, "AURUM_REDIS_MASTER": MASTER, "AURUM_REDIS_DB": str(db),
                "AURUM_REDIS_PASSWORD": PASSWORD, "AURUM_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}

    def sentinel_client(self) -> Sentinel:
        return Sentinel([("127.0.0.1", s.port) for s in self.sentinels if s.alive],
                        sentinel_kwargs={"password": SENTINEL_PASSWORD, "socket_timeout": 1},
                        socket_timeout=1, socket_connect_timeout=1)

    def primary_port(self) -> int | None:
        """The primary's port as a majority of live Sentinels see it (None while they disagree)."""
        seen = []
        for s in self.sentinels:
            if not s.alive:
                continue
            try:
                client = redis.Redis(port=s.port, password=SENTINEL_PASSWORD, socket_timeout=1)
                seen.append(int(client.sentinel_get_master_addr_by_name(MASTER)[1]))
            except (redis.RedisError, TypeError):
                continue
        for port in set(seen):
            if seen.count(port) >= 2:
                return port
        return None

    def node(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def data_client(self, node: Node, db: int = 0) -> redis.Redis:
        return redis.Redis(port=node.port, password=PASSWORD, db=db, socket_timeout=2, socket_connect_timeout=1)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> "SentinelGroup":
        for node in self.data:
            node.start()
        deadline = time.monotonic() + timeout
        self._wait(lambda: all(self._role(n) == ("master" if i == 0 else "slave") and (
            i == 0 or self._link_up(n)) for i, n in enumerate(self.data)), deadline, "the replicas did not sync")
        for node in self.sentinels:
            node.start()
        self._wait(lambda: self._sentinels_agree(), deadline, "the Sentinels did not find each other and the replicas")
        return self

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            try:
                client = redis.Redis(port=s.port, password=SENTINEL_PASSWORD, socket_timeout=1)
                state = client.sentinel_master(MASTER)
            except redis.RedisError:
                return False
            if state.get("num-other-sentinels", 0) < 2 or state.get("num-slaves", 0) < len(self.data) - 1:
                return False
        return True

    def _role(self, node: Node) -> str | None:
        try:
            return self.data_client(node).info("replication")["role"]
        except redis.RedisError:
            return None

    def _link_up(self, node: Node) -> bool:
        try:
            return self.data_client(node).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def wait_primary(self, not_port: int | None = None, timeout: float = 60) -> int:
        """The primary's port once the Sentinels agree on one (other than ``not_port``: after a
        failover) and it answers as a primary."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port is None or port == not_port or self._role(self.node(port)) != "master":
                return False
            found.append(port)
            return True

        self._wait(promoted, time.monotonic() + timeout, "no new primary was promoted")
        return found[-1]

    def wait_replicated(self, port: int, timeout: float = 60) -> None:
        """Until the primary at ``port`` has a replica online again (after a failover the
        Sentinels point the other replica at it, which may need a full resync): only then can a
        write be confirmed by WAIT, so AURUM_REDIS_WAIT_REPLICAS refuses submissions until then."""
        def online() -> bool:
            try:
                info = self.data_client(self.node(port)).info("replication")
            except redis.RedisError:
                return False
            return any(isinstance(v, dict) and v.get("state") == "online"
                       for k, v in info.items() if k.startswith("slave"))

        self._wait(online, time.monotonic() + timeout, "no replica followed the new primary")

    def restart(self, node: Node, timeout: float = 60) -> None:
        """Start a killed node again; the Sentinels make it a replica of the current primary."""
        node.start()
        self._wait(lambda: self._role(node) == "slave" and self._link_up(node), time.monotonic() + timeout,
                   f"{node.name} did not rejoin as a replica")

    @staticmethod
    def _wait(condition, deadline: float, message: str) -> None:
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise RuntimeError(message)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()


class _DataNode(Node):
    def _args(self) -> list[str]:
        return [a.replace("{dir}", str(self.dir)) for a in self.args[1:]]


class _SentinelNode(Node):
    def __init__(self, workdir: Path, name: str, args: list[str], primary_port: int, down_after: int,
                 failover_timeout: int) -> None:
        super().__init__(workdir, name, args)
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites its file: one per Sentinel
        conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", "logfile sentinel.log",
            f"requirepass {SENTINEL_PASSWORD}",
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2",
            f"sentinel auth-pass {MASTER} {PASSWORD}", f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
            f"sentinel down-after-milliseconds {MASTER} {down_after}",
            f"sentinel failover-timeout {MASTER} {failover_timeout}",
            f"sentinel parallel-syncs {MASTER} 1", ""]))
        self.conf = conf

    def _args(self) -> list[str]:
        extra = ["--sentinel"] if not self.args[0].endswith("redis-sentinel") else []
        return [str(self.conf), *extra]
