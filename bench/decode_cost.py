"""What one upload can cost before the models: the API's pre-acceptance check (``probe``) and the
worker's decode (``decode_image``), in CPU time and peak Python-visible memory, for every file
of the hostile corpus (decode bombs, scan and chunk floods, huge declared sizes...) and for the
largest honest photos (a 10 MB-class phone JPEG, PNG and WebP at the decode limit).

    python3 bench/decode_cost.py [--json bench/results/decode_cost.json]

Targets (issue 14): the probe under 20 ms for any input; no upload of <= 10 MB over 1 s of CPU
or 300 MB anywhere. Memory is tracemalloc's peak plus the decoded array (NumPy and Pillow
buffers are counted by tracemalloc; libjpeg's working memory is not).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aurum import errors  # noqa: E402
from aurum.config import Settings  # noqa: E402
from aurum.image import decode_image, probe  # noqa: E402
from tests.helpers.hostile_corpus import build_corpus  # noqa: E402


def honest(settings: Settings) -> dict[str, bytes]:
    """The largest photos a user may send: noisy (so they compress badly) at the limits."""
    rng = np.random.default_rng(3)
    out = {}
    phone = (rng.integers(0, 256, (3000, 4000, 3), np.uint8) // 4 + 96).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(phone).save(buf, "JPEG", quality=92)
    out[f"phone JPEG 4000x3000 ({len(buf.getvalue()) // 1024} KB)"] = buf.getvalue()
    side = int((settings.max_decode_pixels * 0.95) ** 0.5)
    smooth = np.asarray(Image.fromarray(phone[:side // 4, :side // 4]).resize((side, side)))
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(smooth).save(buf, fmt, **({"quality": 90} if fmt == "WEBP" else {}))
        if len(buf.getvalue()) <= settings.max_image_bytes:
            out[f"{fmt} {side}x{side} ({len(buf.getvalue()) // 1024} KB)"] = buf.getvalue()
    return out


def measure(fn, data: bytes) -> tuple[float, float, str]:
    tracemalloc.start()
    start = time.process_time()
    outcome = "ok"
    extra = 0
    try:
        result = fn(data)
        rgb = getattr(result, "rgb", None)
        extra = rgb.nbytes if rgb is not None else 0
    except errors.AurumError as exc:
        outcome = exc.code
    cpu = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return cpu * 1000, max(peak, extra) / 2 ** 20, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = Settings.from_env()
    files = {c.name: c.payload for c in build_corpus(64 * 2 ** 20)
             if c.kind in ("multipart", "raw") and isinstance(c.payload, bytes)
             and 0 < len(c.payload) <= settings.max_image_bytes}
    files.update(honest(settings))
    rows = []
    for name, data in files.items():
        p_ms, p_mb, p_out = min((measure(lambda d: probe(d, settings), data) for _ in range(3)), key=lambda r: r[0])
        d_ms, d_mb, d_out = measure(lambda d: decode_image(d, settings, detect_side=settings.detector_size), data)
        rows.append({"file": name, "bytes": len(data), "probe_ms": round(p_ms, 2), "probe_outcome": p_out,
                     "decode_cpu_ms": round(d_ms, 1), "decode_peak_mb": round(d_mb, 1), "decode_outcome": d_out})
    rows.sort(key=lambda r: -r["decode_cpu_ms"])
    for r in rows[:12]:
        print(f"{r['file'][:52]:52s} probe {r['probe_ms']:6.2f} ms  decode {r['decode_cpu_ms']:7.1f} ms "
              f"{r['decode_peak_mb']:6.1f} MB  {r['decode_outcome']}")
    worst = {"files": len(rows), "probe_ms_max": max(r["probe_ms"] for r in rows),
             "decode_cpu_ms_max": max(r["decode_cpu_ms"] for r in rows),
             "decode_peak_mb_max": max(r["decode_peak_mb"] for r in rows)}
    print(json.dumps(worst))
    if args.json:
        Path(args.json).write_text(json.dumps({"worst": worst, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
