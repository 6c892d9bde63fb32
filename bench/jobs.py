"""Queue benchmark: Celery settings measured end to end on real jobs, against the in-process
pipeline in the same run.

    python3 bench/jobs.py [--jobs 240] [--json bench/results/jobs.json]

For each configuration (serializer json/msgpack, prefetch 1/4) it starts its own redis-server
and a prefork worker (2 children), submits ``--jobs`` unique selfies at once (throughput) and
then 40 one at a time (latency p50/p95), and prints jobs/s next to the in-process pipeline's
2-process throughput (the ceiling). Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import selfies, two_processes  # noqa: E402
from tests.helpers.redis_server import RedisServer  # noqa: E402

CONFIGS = [("json", 1), ("msgpack", 1), ("json", 4)]


def run_config(serializer: str, prefetch: int, images: list[bytes], workdir: Path) -> dict:
    server = RedisServer(workdir).start()
    url = f"{server.url}/0"
    env = {**os.environ, "AURUM_REDIS_URL": url, "AURUM_SERIALIZER": serializer, "AURUM_PREFETCH": str(prefetch)}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
                               "--concurrency", "2", "--queues", "score,fallback", "--loglevel", "WARNING",
                               "--without-gossip", "--without-mingle"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # this process submits through the same configuration
    code = f"""
import json, os, statistics, sys, time
sys.path.insert(0, {str(ROOT)!r})
os.environ.update({json.dumps({"AURUM_REDIS_URL": url, "AURUM_SERIALIZER": serializer})})
from workers.app import app
from workers import runtime
from workers.tasks import score_image
images = [bytes.fromhex(line) for line in open({str(workdir.parent / 'images.hex')!r})]
deadline = time.monotonic() + 90
while not app.control.ping(timeout=0.5) and time.monotonic() < deadline:
    pass
for _ in range(2):  # warm-up: both children
    [r.get(timeout=60) for r in [score_image.delay(runtime.images().put(images[0])) for _ in range(4)]]
keys = [runtime.images().put(d) for d in images]
start = time.perf_counter()
results = [score_image.delay(k) for k in keys]
for r in results:
    r.get(timeout=120)
throughput = len(keys) / (time.perf_counter() - start)
latencies = []
for d in images[:40]:
    t = time.perf_counter()
    score_image.delay(runtime.images().put(d)).get(timeout=60)
    latencies.append((time.perf_counter() - t) * 1000)
latencies.sort()
print(json.dumps({{"jobs_per_s": throughput, "p50_ms": statistics.median(latencies),
                  "p95_ms": latencies[int(len(latencies) * 0.95) - 1]}}))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        worker.terminate()
        worker.wait(30)
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=240)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    images = selfies(args.jobs)
    ceiling = two_processes(images[:48], embedding=False, rounds=2)
    print(f"in-process pipeline, 2 processes (the ceiling): {ceiling:.1f} images/s\n")
    print(f"{'serializer':<10} {'prefetch':>8} {'jobs/s':>8} {'x ceiling':>10} {'p50 ms':>8} {'p95 ms':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "images.hex").write_text("\n".join(d.hex() for d in images))
        for serializer, prefetch in CONFIGS:
            work = Path(tmp) / f"{serializer}-{prefetch}"
            work.mkdir()
            row = {"serializer": serializer, "prefetch": prefetch, **run_config(serializer, prefetch, images, work)}
            row["ratio_to_ceiling"] = row["jobs_per_s"] / ceiling
            rows.append(row)
            print(f"{serializer:<10} {prefetch:>8} {row['jobs_per_s']:>8.1f} {row['ratio_to_ceiling']:>10.2f} "
                  f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"ceiling_images_per_s": ceiling, "configs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
