"""What a job costs each part of the service, measured, for the capacity model (docs/capacity.md):
CPU seconds per job of the API instances, the workers, Redis, HAProxy (and RabbitMQ when it is
the broker), Redis commands and bytes per job, on bench/cluster.py's hosts (a network namespace
each, so every process's CPU is charged to its host).

Each run is a burst of single-image jobs (every photo new to the cache, waited for with
?wait=30 by a few clients) and one of batch jobs of 8; the figures are the deltas of
/proc/<pid>/stat and Redis INFO over the burst, per job and per image. With --rabbitmq the same
runs are made with RabbitMQ as Celery's broker (our own rabbitmq-server node on the machine,
CELERY_BROKER_URL); results, images, the cache and everything else stay in Redis.

    python3 -m bench.capacity [--jobs 200] [--rabbitmq]      # -> bench/results/capacity.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cluster import Cluster
from .scaleout import BATCH, photo

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their waited-for children."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in out for p in tree(int(child))]


def redis_info(cluster: Cluster) -> dict:
    client = cluster.redis()
    try:
        stats, commands, cpu = client.info("stats"), client.info("commandstats"), client.info("cpu")
    finally:
        client.close()
    return {"in": stats["total_net_input_bytes"], "out": stats["total_net_output_bytes"],
            "commands": {k.removeprefix("cmdstat_"): v["calls"] for k, v in commands.items()},
            "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"]}


def components(cluster: Cluster, rabbit: subprocess.Popen | None) -> dict[str, list[int]]:
    parts = {"api": [p for h in cluster.api_hosts for p in cluster.topology.pids(h)],
             "worker": [p for h in cluster.worker_hosts for p in cluster.topology.pids(h)],
             "haproxy": [cluster.haproxy.pid]}
    if rabbit is not None:
        parts["rabbitmq"] = tree(rabbit.pid)
    return parts


def run_burst(cluster: Cluster, jobs: int, batch: bool, seed: int, clients: int = 4) -> float:
    def one(i: int) -> None:
        if batch:
            files = [("images", (f"p{k}.jpg", photo(seed + i * BATCH + k), "image/jpeg")) for k in range(BATCH)]
            url = "/api/ml/score/batch"
        else:
            files = [("image", ("p.jpg", photo(seed + i), "image/jpeg"))]
            url = "/api/ml/score"
        response = cluster.http.post(cluster.base + url, files=files, params={"wait": 30}, timeout=120)
        doc = response.json()
        while doc.get("status") not in ("succeeded", "failed"):
            time.sleep(0.2)
            doc = cluster.http.get(cluster.base + f"/api/ml/jobs/{doc['job_id']}", timeout=120).json()
        assert doc["status"] == "succeeded", doc

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(jobs)))
    return time.monotonic() - start


def measure(cluster: Cluster, jobs: int, batch: bool, seed: int, rabbit: subprocess.Popen | None) -> dict:
    parts = components(cluster, rabbit)
    redis_pids = cluster.topology.pids("redis")
    before_cpu = {k: cpu_seconds(v) for k, v in parts.items()}
    before_redis = redis_info(cluster)
    seconds = run_burst(cluster, jobs, batch, seed)
    after_cpu = {k: cpu_seconds(v) for k, v in components(cluster, rabbit).items()}
    after_redis = redis_info(cluster)
    images = jobs * (BATCH if batch else 1)
    cpu = {k: (after_cpu[k] - before_cpu[k]) for k in before_cpu}
    cpu["redis"] = after_redis["cpu"] - before_redis["cpu"]
    calls = {k: v - before_redis["commands"].get(k, 0) for k, v in after_redis["commands"].items()}
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}
    assert redis_pids, "redis is not running"
    return {
        "kind": "batch of 8" if batch else "single", "jobs": jobs, "images": images, "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "cpu_ms_per_image": {k: round(1000 * v / images, 3) for k, v in cpu.items()},
        "redis_commands_per_image": round(sum(calls.values()) / images, 2),
        "redis_commands_per_image_by_command": {k: round(v / images, 2) for k, v in list(calls.items())[:15]},
        "redis_bytes_in_per_image": round((after_redis["in"] - before_redis["in"]) / images),
        "redis_bytes_out_per_image": round((after_redis["out"] - before_redis["out"]) / images),
    }


def start_rabbitmq(workdir: Path) -> tuple[subprocess.Popen, int]:
    """Our own RabbitMQ node (Debian's rabbitmq-server) on free ports, its data under ``workdir``,
    listening on the bridge's gateway address so that the hosts reach it."""
    binary = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    port, dist = 25672 + os.getpid() % 1000, 35672 + os.getpid() % 1000
    base = workdir / "rabbitmq"
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RABBITMQ_NODENAME": f"aurumbench{os.getpid()}@localhost", "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
           "RABBITMQ_LOG_BASE": str(base / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
           "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"), "RABBITMQ_PID_FILE": str(base / "pid")}
    (base / "plugins").write_text("[].\n")
    # guest may connect from any address here (the hosts are not loopback); nobody else can reach the bridge
    (base / "rabbitmq.conf").write_text("loopback_users = none\n")
    for path in [workdir, base, *base.rglob("*")]:  # Debian's wrapper runs the node as the rabbitmq user
        try:
            shutil.chown(path, "rabbitmq", "rabbitmq")
        except (LookupError, PermissionError):
            pass
    proc = subprocess.Popen([binary], env=env, cwd=base, stdout=open(base / "out.log", "a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("rabbitmq-server did not start (see " + str(base / "log") + ")")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--rabbitmq", action="store_true", help="also with RabbitMQ as the broker")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/capacity.json")
    args = ap.parse_args(argv)
    report: dict = {"cpu_count": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="aurum-capacity-") as tmp:
        brokers: list[tuple[str, dict]] = [("redis", {})]
        rabbit = None
        if args.rabbitmq:
            rabbit, port = start_rabbitmq(Path(tmp))
        try:
            if rabbit is not None:
                brokers.append(("rabbitmq", {"port": port}))
            for name, extra in brokers:
                env = {}
                cluster_dir = Path(tmp) / name
                with Cluster(cluster_dir, apis=2, workers=2, env=env, worker_cores=False,
                             prefix=f"ca{os.getpid() % 10000}{name[0]}") as cluster:
                    if name == "rabbitmq":
                        # restart the API and worker hosts on RabbitMQ, reached at the bridge's gateway
                        cluster.env["CELERY_BROKER_URL"] = f"amqp://guest:guest@{cluster.topology.gateway}:{extra['port']}//"
                        for host in cluster.api_hosts + cluster.worker_hosts:
                            cluster.topology.kill(host)
                            (cluster.start_api if host in cluster.api_hosts else cluster.start_worker)(host)
                        cluster.wait_ready()
                    cluster.wait_beating({"w1", "w2"})
                    run_burst(cluster, 8, False, 9_000_000)  # warm-up
                    for batch in (False, True):
                        jobs = args.jobs // BATCH if batch else args.jobs
                        row = {"broker": name, **measure(cluster, jobs, batch, 1_000_000 * (1 + batch + 2 * len(report["runs"])),
                                                         rabbit if name == "rabbitmq" else None)}
                        print(json.dumps(row))
                        report["runs"].append(row)
        finally:
            if rabbit is not None:
                rabbit.terminate()
                try:
                    rabbit.wait(30)
                except subprocess.TimeoutExpired:
                    rabbit.kill()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
