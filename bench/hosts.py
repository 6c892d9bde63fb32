"""Several "hosts" on one machine: a network namespace each, joined by veth pairs to a private
bridge, so that each has its own address, its own processes and its own link, and can be cut off
(its link set down) or killed whole (every process in it). The machine itself sits on the bridge
too (``.1``), as the clients' host. Only these namespaces' addresses are ever targets.

    python3 -m bench.hosts up redis api1 api2 w1 w2     # prints each host's address
    python3 -m bench.hosts run api1 -- ip addr          # a command inside a host
    python3 -m bench.hosts cut api1 | restore api1 | kill w1
    python3 -m bench.hosts down

Names are made from a prefix (default ``au`` + the process id, or AURUM_HOSTS_PREFIX), so runs
side by side never meet; the state of a CLI-made topology is kept in /run/aurum-hosts-<prefix>.json.
Needs root (``ip netns``, ``ip link``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Topology:
    hosts: list[str]
    prefix: str = field(default_factory=lambda: os.environ.get("AURUM_HOSTS_PREFIX", f"au{os.getpid() % 100000}"))
    subnet: str = ""  # "10.a.b" (a /24); default from the prefix
    addresses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.prefix) > 8:
            raise ValueError("prefix: at most 8 characters (interface names are 15 at most)")
        if not self.subnet:
            n = sum(ord(c) * 31 ** i for i, c in enumerate(self.prefix)) % (250 * 100)
            self.subnet = f"10.{150 + n // 250}.{n % 250}"
        self.addresses = {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(self.hosts)}

    # --- names ------------------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The machine's own address on the bridge: where the clients are."""
        return f"{self.subnet}.1"

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def _veth(self, host: str) -> str:
        return f"{self.prefix}v{self.hosts.index(host)}"  # the bridge's end; the host's end is eth0

    # --- life ---------------------------------------------------------------------------------
    def up(self) -> "Topology":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                ns, veth = self.netns(host), self._veth(host)
                _ip("netns", "add", ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
                _ip("link", "set", f"{veth}p", "netns", ns)
                _ip("-n", ns, "link", "set", f"{veth}p", "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
        except Exception:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Kill every process in every host and remove the hosts and the bridge."""
        for host in self.hosts:
            self.kill(host)
            _ip("netns", "delete", self.netns(host), check=False)
            _ip("link", "delete", self._veth(host), check=False)
        _ip("link", "delete", self.bridge, check=False)

    def __enter__(self) -> "Topology":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- inside a host ------------------------------------------------------------------------
    def command(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def pids(self, host: str) -> list[int]:
        out = _ip("netns", "pids", self.netns(host), check=False).stdout
        return [int(p) for p in out.split()]

    # --- faults -------------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """The host's link goes down: it is cut off, its processes keep running."""
        _ip("link", "set", self._veth(host), "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self._veth(host), "up")

    def kill(self, host: str) -> int:
        """SIGKILL every process in the host, as a host crash; returns how many."""
        pids = self.pids(host)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.pids(host) and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(pids)


def _state(prefix: str) -> Path:
    return Path(f"/run/aurum-hosts-{prefix}.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["up", "down", "cut", "restore", "kill", "run", "show"])
    ap.add_argument("hosts", nargs="*")
    ap.add_argument("--prefix", default=os.environ.get("AURUM_HOSTS_PREFIX", "aurum"))
    argv = sys.argv[1:] if argv is None else argv
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    state = _state(args.prefix)
    if args.action == "up":
        topo = Topology(args.hosts, prefix=args.prefix).up()
        state.write_text(json.dumps({"hosts": topo.hosts, "subnet": topo.subnet}))
        print(json.dumps({"gateway": topo.gateway, **topo.addresses}, indent=2))
        return 0
    if not state.exists():
        print(f"error: no topology {args.prefix!r} is up", file=sys.stderr)
        return 2
    saved = json.loads(state.read_text())
    topo = Topology(saved["hosts"], prefix=args.prefix, subnet=saved["subnet"])
    if args.action == "down":
        topo.down()
        state.unlink()
    elif args.action == "show":
        print(json.dumps({"gateway": topo.gateway, **topo.addresses}, indent=2))
    elif args.action == "run":
        return subprocess.call(topo.command(args.hosts[0], rest))
    else:
        for host in args.hosts:
            getattr(topo, args.action)(host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
