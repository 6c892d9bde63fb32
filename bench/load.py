"""End-to-end load benchmark: the real service (the API server + a prefork celery worker + our own
redis-server, from the Procfile) under offered load, against the in-process pipeline measured
in the same run.

    python3 bench/load.py [--seconds 8] [--json bench/results/load.json] [--plot bench/results/load.png]

Phases (loopback only, each bounded by --seconds):
- ceiling: the in-process pipeline, 2 processes (bench/pipeline.py), unique selfies;
- single jobs two ways, a stack each: each worker process reserving one message ahead (the
  default) or four; for each, saturation (closed loop, 16 clients) and a lone request's latency
  (one client);
- with the default: single jobs at fixed offered rates (fractions of its peak), open loop;
  batch requests of 1, 8 and 32 images;
- cache hits (the same photo again and again), by httpx and by wrk (``apt-get install wrk``);
- CPU seconds per job split between the API (granian), the broker (redis-server), the worker's
  main process (celery: messages, acks, batching) and its pool children (the models), and
  worker-child RSS.
The load generator shares the two cores with the service: figures are a floor, compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

from service.sealing import new_key  # noqa: E402
from pipeline import selfies, two_processes  # noqa: E402

os.environ.setdefault("AURUM_ENCRYPTION_KEYS", new_key("bench"))
from tests.helpers.stack import Stack  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (FileNotFoundError, IndexError):
            pass
    return total / TICKS


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in out for p in tree(int(child))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "p99_ms": round(q[98], 1)}


class Bench:
    def __init__(self, stack: Stack, images: list[bytes]) -> None:
        self.stack = stack
        self.images = images
        self.next = 0
        self.headers = {"X-API-Key": stack.http.headers["X-API-Key"]}

    def image(self) -> bytes:
        self.next += 1
        return self.images[self.next % len(self.images)]

    def pids(self) -> dict[str, list[int]]:
        web, worker = self.stack.procs
        return {"api": tree(web.pid), "broker": [self.stack.redis.proc.pid], "worker_main": [worker.pid],
                "worker_children": tree(worker.pid)[1:]}

    async def one(self, client: httpx.AsyncClient, data: bytes, path: str = "/api/ml/score", files=None) -> tuple[int, float]:
        start = time.perf_counter()
        try:
            response = await client.post(path, params={"wait": 20}, files=files or {"image": ("p.jpg", data)})
        except httpx.HTTPError as exc:  # counted, not fatal: overload shows up as errors and latency
            return f"error:{type(exc).__name__}", (time.perf_counter() - start) * 1000
        return response.status_code, (time.perf_counter() - start) * 1000

    async def open_loop(self, rate: float, seconds: float) -> dict:
        """Offered load: a request every 1/rate seconds, whatever the answers do."""
        latencies, codes, tasks = [], {}, []
        async with httpx.AsyncClient(base_url=self.stack.base, headers=self.headers, timeout=30,
                                     limits=httpx.Limits(max_connections=256)) as client:
            start = time.perf_counter()
            n = int(rate * seconds)
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self.one(client, self.image())))
            for code, ms in await asyncio.gather(*tasks):
                codes[code] = codes.get(code, 0) + 1
                if code == 200:
                    latencies.append(ms)
            elapsed = time.perf_counter() - start
        return {"offered_per_s": rate, "achieved_per_s": round(len(latencies) / elapsed, 1), "requests": n,
                "codes": codes, **percentiles(latencies)}

    async def closed_loop(self, clients: int, seconds: float, same_image: bytes | None = None,
                          batch: int = 0) -> dict:
        latencies, codes = [], {}
        deadline = time.perf_counter() + seconds

        async def run(client: httpx.AsyncClient) -> None:
            while time.perf_counter() < deadline:
                if batch:
                    files = [("images", (f"{i}.jpg", self.image())) for i in range(batch)]
                    code, ms = await self.one(client, b"", "/api/ml/score/batch", files=files)
                else:
                    code, ms = await self.one(client, same_image or self.image())
                codes[code] = codes.get(code, 0) + 1
                if code == 200:
                    latencies.append(ms)

        before = {k: cpu_seconds(v) for k, v in self.pids().items()}
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.stack.base, headers=self.headers, timeout=60,
                                     limits=httpx.Limits(max_connections=clients)) as client:
            await asyncio.gather(*(run(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
        after = {k: cpu_seconds(v) for k, v in self.pids().items()}
        done = len(latencies) * (batch or 1)
        return {"clients": clients, "batch": batch, "images_per_s": round(done / elapsed, 1),
                "requests_per_s": round(len(latencies) / elapsed, 1), "codes": codes, **percentiles(latencies),
                "cpu_ms_per_image": {k: round((after[k] - before[k]) * 1000 / max(done, 1), 2) for k in after}}


MODES = {  # single-image jobs: how many messages each worker process reserves ahead
    "prefetch 4": {"AURUM_PREFETCH": "4"},
    "prefetch 1 (default)": {},
}


def multipart(image: bytes, boundary: str = "aurumbench") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()


WRK_SCRIPT = """
local bodies, n = {}, 0
for path in io.lines("%(dir)s/list") do
  local f = io.open(path, "rb"); n = n + 1; bodies[n] = f:read("*all"); f:close()
end
local headers = {["Content-Type"] = "multipart/form-data; boundary=aurumbench", ["X-API-Key"] = "%(key)s"}
local i = 0
request = function()
  i = i %% n + 1
  return wrk.format("POST", "/api/ml/score?wait=20", headers, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"non2xx\\": %%d, \\"errors\\": %%d, "
    .. "\\"p50_ms\\": %%f, \\"p95_ms\\": %%f, \\"p99_ms\\": %%f}\\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk(bench: "Bench", images: list[bytes], seconds: float, connections: int = 16) -> dict | None:
    """Closed loop driven by wrk (C: ~0.1 ms of CPU per request, against ~3 ms for httpx, and the
    load generator shares the two cores with the service), cycling through ``images``.
    None when wrk is not installed (``apt-get install wrk``)."""
    if not shutil.which("wrk"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, image in enumerate(images):
            paths.append(Path(tmp) / f"{i}.body")
            paths[-1].write_bytes(multipart(image))
        (Path(tmp) / "list").write_text("\n".join(map(str, paths)) + "\n")
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT % {"dir": tmp, "key": bench.headers["X-API-Key"]})
        before = {k: cpu_seconds(v) for k, v in bench.pids().items()}
        out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(seconds)}s", "--timeout", "30s",
                              "-s", str(script), bench.stack.base], capture_output=True, text=True,
                             timeout=seconds + 120)
        after = {k: cpu_seconds(v) for k, v in bench.pids().items()}
    line = next(line for line in out.stdout.splitlines() if line.startswith("JSON "))
    doc = json.loads(line[5:])
    ok = doc["requests"] - doc["non2xx"]
    return {"client": "wrk", "connections": connections, "requests_per_s": round(doc["requests"] / doc["seconds"], 1),
            "images_per_s": round(ok / doc["seconds"], 1), "non_2xx": doc["non2xx"], "errors": doc["errors"],
            **{k: round(doc[k], 1) for k in ("p50_ms", "p95_ms", "p99_ms")},
            "cpu_ms_per_image": {k: round((after[k] - before[k]) * 1000 / max(ok, 1), 2) for k in after}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rates", default="0.2,0.4,0.5,0.6,0.8,1.0,1.2", help="fractions of the measured peak")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()

    images = selfies(1500)
    ceiling = two_processes(images[:48], embedding=False, rounds=2)
    print(f"in-process pipeline, 2 processes (the ceiling): {ceiling:.1f} images/s")
    report: dict = {"ceiling_images_per_s": round(ceiling, 1), "seconds_per_phase": args.seconds}
    unlimited = {"AURUM_RATE_LIMIT": "1000000/minute;100000/second", "AURUM_BATCH_IMAGE_LIMIT": "1000000/minute",
                 "AURUM_LOG_LEVEL": "WARNING"}
    # cache off: the photos repeat after len(images), and every job must run the models
    nocache = {**unlimited, "AURUM_CACHE_TTL": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        report["modes"] = {}
        for mode, env in MODES.items():
            with Stack(Path(tmp) / f"mode{len(report['modes'])}", extra_env={**nocache, **env}) as stack:
                bench = Bench(stack, images)
                asyncio.run(bench.closed_loop(8, 2.0))  # warm-up
                lone = asyncio.run(bench.closed_loop(1, args.seconds / 2))
                sat = asyncio.run(bench.closed_loop(16, args.seconds))
                sat["ratio_to_in_process"] = round(sat["images_per_s"] / ceiling, 3)
                sat["lone_request_p50_ms"] = lone["p50_ms"]
                sat["lone_request_p99_ms"] = lone["p99_ms"]
                report["modes"][mode] = sat
                print(f"single jobs, {mode}: saturation (httpx) {sat['images_per_s']}/s = "
                      f"{sat['ratio_to_in_process']:.2f}x in-process, p50 {sat['p50_ms']} p99 {sat['p99_ms']} ms, "
                      f"CPU ms/image {sat['cpu_ms_per_image']}; a lone request p50 {lone['p50_ms']} ms")
                fast = wrk(bench, images[:300], args.seconds)
                if fast is not None:
                    fast["ratio_to_in_process"] = round(fast["images_per_s"] / ceiling, 3)
                    sat["wrk"] = fast
                    print(f"single jobs, {mode}: saturation (wrk) {fast['images_per_s']}/s = "
                          f"{fast['ratio_to_in_process']:.2f}x in-process, p50 {fast['p50_ms']} p99 {fast['p99_ms']} ms, "
                          f"non-2xx {fast['non_2xx']}, CPU ms/image {fast['cpu_ms_per_image']}")
                if mode != "prefetch 1 (default)":
                    continue
                report["saturation"] = sat
                # the wrk figure when there is one: its client costs the shared cores least
                report["ratio_end_to_end_to_in_process"] = sat.get("wrk", sat)["ratio_to_in_process"]
                peak = sat["images_per_s"]
                report["offered"] = []
                for fraction in [float(f) for f in args.rates.split(",")]:
                    row = asyncio.run(bench.open_loop(fraction * peak, args.seconds))
                    row["fraction_of_peak"] = fraction
                    report["offered"].append(row)
                    print(f"offered {row['offered_per_s']:6.1f}/s ({fraction:.1f} x peak) -> {row['achieved_per_s']:6.1f}/s"
                          f"  p50 {row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} ms  codes {row['codes']}")
                report["batches"] = []
                for size in (1, 8, 32):
                    row = asyncio.run(bench.closed_loop(2, args.seconds, batch=size))
                    report["batches"].append(row)
                    print(f"batch requests of {size:2d}: {row['images_per_s']}/s images, p50 {row['p50_ms']} ms per "
                          f"request, CPU ms/image {row['cpu_ms_per_image']}")
                report["worker_child_rss_mb"] = [round(rss_mb(p), 1) for p in stack.worker_children()]
                print(f"worker child RSS: {report['worker_child_rss_mb']} MB")
        with Stack(Path(tmp) / "cache", extra_env=unlimited) as cached:  # cache on (the default)
            bench = Bench(cached, images)
            asyncio.run(bench.closed_loop(1, 1.0, same_image=images[0]))  # computed once, then cached
            hit = asyncio.run(bench.closed_loop(16, args.seconds, same_image=images[0]))
            hit["client"] = "httpx"
            report["cache_hits"] = hit
            print(f"cache hits (httpx, 16 clients): {hit['requests_per_s']}/s, p99 {hit['p99_ms']} ms, "
                  f"CPU ms/request {hit['cpu_ms_per_image']}")
            hit = wrk(bench, [images[0]], args.seconds)
            if hit is not None:
                report["cache_hits_wrk"] = hit
                print(f"cache hits (wrk, 16 connections): {hit['requests_per_s']}/s, p50 {hit['p50_ms']} "
                      f"p99 {hit['p99_ms']} ms, non-2xx {hit['non_2xx']}, CPU ms/request {hit['cpu_ms_per_image']}")
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

    rows = report["offered"]
    offered = [r["offered_per_s"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(offered, [r["achieved_per_s"] for r in rows], "o-", label="achieved")
    a.plot(offered, offered, ":", color="grey", label="offered")
    a.axhline(report["ceiling_images_per_s"], color="red", ls="--", label="in-process ceiling")
    for (mode, row), marker in zip(report.get("modes", {}).items(), "sD^"):
        peak = row.get("wrk", row)
        a.axhline(peak["images_per_s"], color="grey", lw=0.8, ls=(0, (1, 3)))
        a.plot([max(offered)], [peak["images_per_s"]], marker, label=f"saturation, {mode}")
    a.set_xlabel("offered load (jobs/s)")
    a.set_ylabel("throughput (jobs/s)")
    a.legend(fontsize=8, loc="lower right")
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        b.plot(offered, [r[key] for r in rows], "o-", label=key.replace("_ms", ""))
    b.axhline(200, color="red", ls="--", label="200 ms")
    b.set_xlabel("offered load (jobs/s)")
    b.set_ylabel("latency with ?wait= (ms)")
    b.set_yscale("log")
    b.legend()
    fig.suptitle("Aurum end to end, 2-core machine (load generator on the same cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
