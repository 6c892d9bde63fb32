"""Where the time goes end to end: py-spy samples every process of a live stack (the API server
workers, the celery worker's main process and children, from the Procfile) while a closed loop
of clients submits unique selfies with ``?wait=``.

    python3 bench/profile_stack.py [--seconds 15] [--clients 16] [--out bench/results/profile]

Writes one collapsed-stack file per process group (``api``, ``worker-main``, ``worker-child``)
and prints, for each, the functions with the most samples (own time and time below them), in
our code and in the libraries; idle threads are not sampled, so the shares are of CPU time.
Needs py-spy (``pip install py-spy``) and ptrace rights; drives the load with wrk when it is
installed, else with httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from service.sealing import new_key  # noqa: E402
from load import Bench, tree, wrk  # noqa: E402
from pipeline import selfies  # noqa: E402

os.environ.setdefault("AURUM_ENCRYPTION_KEYS", new_key("bench"))
from tests.helpers.stack import Stack  # noqa: E402


def summarise(path: Path, top: int) -> str:
    """Top frames by inclusive and by own samples, from a py-spy collapsed-stack file."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]  # the first is the process
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{path.stem}: {total} samples"]
    lines += ["  own:"] + [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["  inclusive:"] + [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default="bench/results/profile")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the stack")
    parser.add_argument("--gil", action="store_true",
                        help="sample only threads holding the GIL: Python's CPU, not waits (gevent's hub looks busy otherwise)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = selfies(1500)
    extra = {"AURUM_RATE_LIMIT": "1000000/minute;100000/second", "AURUM_BATCH_IMAGE_LIMIT": "1000000/minute",
             "AURUM_LOG_LEVEL": "WARNING", "AURUM_CACHE_TTL": "0",
             **dict(kv.split("=", 1) for kv in args.env)}
    with tempfile.TemporaryDirectory() as tmp:
        with Stack(Path(tmp), extra_env=extra) as stack:
            bench = Bench(stack, images)
            asyncio.run(bench.closed_loop(8, 2.0))  # warm-up
            web, worker = stack.procs
            groups = {"api": tree(web.pid)[1:], "worker-main": [worker.pid], "worker-child": tree(worker.pid)[1:]}
            spies = []
            for name, pids in groups.items():
                for pid in pids:
                    target = out / f"{name}-{pid}.txt"
                    spies.append((name, target, subprocess.Popen(
                        ["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                         "--rate", "100", "--format", "raw", "--output", str(target)] + (["--gil"] if args.gil else []),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            # wrk when installed (its CPU cost beside the service is ~0.1 ms a request), else httpx
            row = wrk(bench, images[:300], args.seconds, args.clients) or asyncio.run(
                bench.closed_loop(args.clients, args.seconds))
            for _, _, spy in spies:
                spy.wait(60)
            print(f"{row['images_per_s']}/s, p50 {row['p50_ms']} ms, CPU ms/image {row['cpu_ms_per_image']}")
    merged: dict[str, list[str]] = collections.defaultdict(list)
    for name, target, _ in spies:
        if target.exists():
            merged[name] += target.read_text().splitlines()
            target.unlink()
    for name, lines in merged.items():
        path = out / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        print(summarise(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
