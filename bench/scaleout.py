"""Does adding a worker host add capacity? Throughput of one worker host against two, each one
pool child with one ONNX Runtime thread pinned to a core of its own (a host of one core), in one
run on bench/cluster.py's hosts: Redis on one, two API instances behind HAProxy, the workers on
theirs. Rounds alternate one host and two; each round is a burst of batch jobs (8 photos each,
every photo new to the cache) sent by a few clients through HAProxy, timed from the first
submission to the last result.

    python3 -m bench.scaleout [--rounds 3] [--images 240]     # -> bench/results/scaleout.json
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8


def photo(seed: int) -> bytes:
    """The repository's portrait with a few pixels changed: new to the cache, the same face."""
    rgb = np.asarray(Image.open(ROOT / "tests/photos/astronaut.png").convert("RGB")).copy()
    rgb[-1, :8] = np.random.default_rng(seed).integers(0, 255, (8, 3))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def burst(cluster: Cluster, images: int, seed: int, clients: int = 4) -> float:
    """Images per second for ``images`` new photos in batch jobs, end to end."""
    batches = [[photo(seed + i * BATCH + k) for k in range(BATCH)] for i in range(images // BATCH)]

    def run(batch: list[bytes]) -> None:
        files = [("images", (f"p{k}.jpg", data, "image/jpeg")) for k, data in enumerate(batch)]
        for _ in range(5):  # ?wait=: the answer comes when the batch is done (no polling)
            response = cluster.http.post(cluster.base + "/api/ml/score/batch", files=files, params={"wait": 30},
                                         timeout=60)
            if response.status_code in (200, 202):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"submission refused: {response.status_code} {response.text[:200]}")
        doc = response.json()
        deadline = time.monotonic() + 600
        while doc.get("status") not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            doc = cluster.http.get(cluster.base + f"/api/ml/jobs/{doc['job_id']}", timeout=60).json()
        if doc.get("status") != "succeeded":
            raise RuntimeError(f"a batch did not succeed: {str(doc)[:300]}")
        assert all("faces" in item for item in doc["result"]["items"]), doc

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, batches))
    return len(batches) * BATCH / (time.monotonic() - start)


def measure(cluster: Cluster, rounds: int, images: int, log=print) -> dict:
    figures: dict[str, list[float]] = {"1": [], "2": []}
    seed = 0
    burst(cluster, BATCH * 4, 10_000_000)  # warm-up: connections, first runs of each child
    for r in range(rounds):
        for hosts in (["w1"], ["w1", "w2"]) if r % 2 == 0 else (["w1", "w2"], ["w1"]):
            if "w2" in hosts and "w2" not in cluster.procs:
                cluster.start_worker("w2")
            elif "w2" not in hosts and "w2" in cluster.procs:
                cluster.stop_worker("w2")
            cluster.wait_beating(set(hosts))
            rate = burst(cluster, images, seed)
            seed += images
            figures[str(len(hosts))].append(rate)
            log(f"round {r + 1}: {len(hosts)} worker host(s): {rate:.1f} images/s")
    one, two = statistics.median(figures["1"]), statistics.median(figures["2"])
    return {"pinned": cluster.worker_cores, "images_per_round": images, "batch": BATCH, "rounds": rounds,
            "images_per_s": {k: [round(v, 2) for v in vals] for k, vals in figures.items()},
            "median_images_per_s": {"1": round(one, 2), "2": round(two, 2)}, "speedup": round(two / one, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--pin", action="store_true", help="pin each worker host to a core of its own (taskset)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/scaleout.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aurum-scaleout-") as tmp:
        with Cluster(Path(tmp), apis=2, workers=2, worker_cores=args.pin) as cluster:
            cluster.wait_beating({"w1", "w2"})
            report = measure(cluster, args.rounds, args.images)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
