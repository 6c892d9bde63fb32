"""Aurum beside its peers, in one run: the same unique selfies through

- the ceiling: the in-process pipeline in two processes (bench/pipeline.py), no HTTP at all;
- Aurum: the Procfile's stack (granian API server, a prefork celery worker, our own
  redis-server), cache off, each request ``POST /api/ml/score?wait=20``;
- direct: the simplest server a user could write, Flask under two gunicorn sync workers calling
  ``Pipeline.score`` in the request (bench/peer_direct.py);
- litserve: LitServe with two CPU inference workers over the same pipeline
  (bench/peer_litserve.py), when a Python with ``litserve`` and ``python-multipart`` is given
  (``--litserve-python``; they are not Aurum's dependencies);

HTTP load by wrk (C, ~0.1 ms of CPU per request; 16 connections, closed loop). The systems are
alternated over ``--rounds``, and before each measurement the machine is checked idle (under
15 % CPU busy for a second, waited for up to 30 s; the busy share seen is reported). Prints
images/s, p50/p99 and the ratios to the ceiling and to the direct peer; JSON and a plot.

    python3 bench/peers.py [--rounds 3] [--seconds 8] [--litserve-python VENV/bin/python]
                           [--json bench/results/peers.json] [--plot bench/results/peers.png]

The load generator shares the two cores with the servers: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402

from load import tree, wrk  # noqa: E402
from pipeline import selfies, two_processes  # noqa: E402
from service.sealing import new_key  # noqa: E402

os.environ.setdefault("AURUM_ENCRYPTION_KEYS", new_key("bench"))
from tests.helpers.redis_server import free_port  # noqa: E402
from tests.helpers.stack import Stack  # noqa: E402

IDLE_BUSY = 0.15


def busy_share(seconds: float = 1.0) -> float:
    """The machine's CPU busy share over ``seconds`` (/proc/stat, all cores)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_idle(limit_s: float = 30.0) -> float:
    deadline = time.monotonic() + limit_s
    while True:
        busy = busy_share()
        if busy < IDLE_BUSY or time.monotonic() > deadline:
            return round(busy, 3)


class Direct:
    """bench/peer_direct.py under gunicorn, two sync workers (or another command serving the same
    route on ``port``)."""

    name = "direct"

    def __init__(self, workdir: Path, command: list[str] | None = None) -> None:
        self.port = free_port()
        self.log = open(workdir / f"{self.name}.log", "a")
        command = command or [
            sys.executable, "-m", "gunicorn", "--chdir", str(ROOT / "bench"), "peer_direct:create_app()",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--worker-class", "sync", "--timeout", "60"]
        self.proc = subprocess.Popen([part.replace("{port}", str(self.port)) for part in command], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""})
        self.stack = SimpleNamespace(base=f"http://127.0.0.1:{self.port}")
        self.headers = {"X-API-Key": "unused"}

    def wait_ready(self, images: list[bytes], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the {self.name} server exited"
            try:
                ok = [requests.post(self.stack.base + "/api/ml/score", files={"image": ("p.jpg", images[0])},
                                    timeout=30).status_code == 200 for _ in range(4)]  # both workers warm
                if all(ok):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the {self.name} server did not come up")

    def pids(self) -> dict[str, list[int]]:
        return {"server": tree(self.proc.pid)}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


class LitServe(Direct):
    name = "litserve"

    def __init__(self, workdir: Path, python: str) -> None:
        super().__init__(workdir, [python, str(ROOT / "bench/peer_litserve.py"), "{port}"])


class Aurum:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.headers = {"X-API-Key": stack.http.headers["X-API-Key"]}

    def pids(self) -> dict[str, list[int]]:
        web, worker = self.stack.procs
        return {"api": tree(web.pid), "broker": [self.stack.redis.proc.pid], "worker_main": [worker.pid],
                "worker_children": tree(worker.pid)[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--litserve-python", default=None,
                        help="a Python with litserve and python-multipart installed (default: skip LitServe)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()

    images = selfies(args.images)
    rows: dict[str, list[dict]] = {"ceiling": [], "aurum": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "stack", extra_env={"AURUM_CACHE_TTL": "0"})
        servers = {"direct": Direct(Path(tmp))}
        if args.litserve_python:
            servers["litserve"] = LitServe(Path(tmp), args.litserve_python)
            rows["litserve"] = []
        try:
            stack.wait_ready()
            servers["aurum"] = Aurum(stack)
            for name, server in servers.items():
                if name != "aurum":
                    server.wait_ready(images)
                wrk(server, images[:8], 2)  # warm every worker
            systems = ["ceiling", "aurum", *(s for s in servers if s != "aurum")]
            for r in range(args.rounds):
                order = systems if r % 2 == 0 else systems[::-1]
                for system in order:
                    busy = wait_idle()
                    if system == "ceiling":
                        start = time.perf_counter()
                        per_s = two_processes(images, embedding=False, rounds=1)
                        row = {"images_per_s": round(per_s, 1), "seconds": round(time.perf_counter() - start, 1)}
                    else:
                        row = wrk(servers[system], images, args.seconds)
                    row["busy_before"] = busy
                    rows[system].append(row)
                    print(f"round {r + 1} {system:8s} {row['images_per_s']:6.1f} images/s"
                          + (f"  p50 {row['p50_ms']:.0f} ms  p99 {row['p99_ms']:.0f} ms" if "p50_ms" in row else "")
                          + f"  (machine busy {busy:.0%} before)", flush=True)
        finally:
            for name, server in servers.items():
                if name != "aurum":
                    server.stop()
            stack.stop()

    def median(system: str, key: str) -> float | None:
        values = [row[key] for row in rows[system] if row.get(key) is not None]
        return round(statistics.median(values), 1) if values else None

    summary = {s: {k: median(s, k) for k in ("images_per_s", "p50_ms", "p99_ms")} for s in rows}
    ceiling, peer = summary["ceiling"]["images_per_s"], summary["direct"]["images_per_s"]
    for s in rows:
        if s != "ceiling":
            summary[s]["vs_ceiling"] = round(summary[s]["images_per_s"] / ceiling, 2)
            summary[s]["cpu_ms_per_image"] = rows[s][-1]["cpu_ms_per_image"]
    summary["aurum"]["vs_direct"] = round(summary["aurum"]["images_per_s"] / peer, 2)
    summary["aurum"]["p99_vs_direct"] = round(summary["aurum"]["p99_ms"] / summary["direct"]["p99_ms"], 2)
    report = {"images": len(images), "rounds": args.rounds, "seconds": args.seconds, "connections": 16,
              "cpu_count": os.cpu_count(), "summary": summary, "rounds_detail": rows}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, Path(args.plot))
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = ["ceiling", "direct", *(["litserve"] if "litserve" in report["summary"] else []), "aurum"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, s in enumerate(systems):
        values = [row["images_per_s"] for row in report["rounds_detail"][s]]
        ax1.scatter([i] * len(values), values, color="0.6", zorder=2)
        ax1.bar(i, report["summary"][s]["images_per_s"], color="tab:orange" if s == "aurum" else "0.7", zorder=1)
    ax1.set_xticks(range(len(systems)), systems)
    ax1.set_ylabel("images/s (median of rounds, dots: each round)")
    for i, s in enumerate(systems[1:], 1):
        p50, p99 = report["summary"][s]["p50_ms"], report["summary"][s]["p99_ms"]
        ax2.bar([i - 0.2, i + 0.2], [p50, p99], width=0.4, color="tab:orange" if s == "aurum" else "0.7")
    ax2.set_xticks(range(1, len(systems)), systems[1:])
    ax2.set_ylabel("latency ms (left p50, right p99)")
    fig.suptitle(f"unique selfies, wrk {report['connections']} connections, {report['rounds']} alternated rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
