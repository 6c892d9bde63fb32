"""Pipeline benchmark: per-stage medians and images/s, against raw ONNX Runtime in the same run.

    python3 bench/pipeline.py [--images 48] [--rounds 3] [--json bench/results/pipeline.json]

For each profile (fast: no embedding; full: with the embedding; phone: no embedding, on phone-size
photos) it measures, on unique JPEGs (variations of the test photos, so nothing is cached):

- raw: only the ``session.run`` calls the pipeline makes for one image (detector, FaceMesh,
  scorer, and SFace in the full profile), on inputs prepared beforehand;
- pipeline, 1 process: ``Pipeline.score(bytes)`` end to end (decode to result dict);
- pipeline, 2 processes: two worker processes, one ONNX Runtime thread each;
- pipeline, models replayed: the same run with every ``session.run`` answered from a recording
  of the same call, i.e. the pipeline's own work alone (decode, pre/post-processing, glue);

and prints the ratio pipeline / raw (our pre/post-processing overhead). Figures are medians
over rounds; the machine is shared and noisy, so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aurum.config import Settings  # noqa: E402
from aurum.embed import align, five_points  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402
from aurum.scoring.features import feature_vector  # noqa: E402


def _faces(count: int, seed: int):
    """The two real face photos in turn (every other pair mirrored), with a seeded generator."""
    base = [Image.open(ROOT / "tests/photos" / n).convert("RGB") for n in ("astronaut.png", "camera.png")]
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = base[i % 2]
        yield i, (img.transpose(Image.FLIP_LEFT_RIGHT) if i % 4 >= 2 else img), rng


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def selfies(count: int) -> list[bytes]:
    """Unique 640 x 640-ish JPEG selfies made from the two real face photos."""
    out = []
    for _, img, rng in _faces(count, seed=7):
        side = int(rng.integers(560, 720))
        img = ImageEnhance.Brightness(img.resize((side, side), Image.BILINEAR)).enhance(float(rng.uniform(0.85, 1.15)))
        out.append(_jpeg(img, int(rng.integers(80, 95))))
    return out


def phone_photos(count: int) -> list[bytes]:
    """Unique portrait JPEGs at phone-camera sizes: 1080 x 1440, 1512 x 2016 and 3024 x 4032.

    Upscaled from the 512 px test photos, so smoother than a real camera's (which decode slower)."""
    out = []
    for i, img, rng in _faces(count, seed=11):
        width = (1080, 1512, 3024)[i % 3]
        canvas = Image.new("RGB", (width, width * 4 // 3), (128, 128, 128))
        canvas.paste(img.resize((width, width), Image.BICUBIC), (0, width // 6))
        out.append(_jpeg(canvas, int(rng.integers(85, 95))))
    return out


def raw_model_ms(pipeline: Pipeline, images: list[bytes], embedding: bool, rounds: int) -> float:
    """Median ms per image of the session.run calls alone, inputs prepared in advance."""
    from aurum.geometry import letterbox
    from aurum.image import decode_image

    store, det = pipeline.store, pipeline.detector
    prepared = []
    for data in images:
        result = pipeline.score(data, ScoreOptions(return_embedding=embedding))
        img = decode_image(data, pipeline.settings)
        dets = det.full.detect([img.rgb], pipeline.settings.detection_threshold)[0][:1]
        crops, _ = pipeline.facemesh.crops(img.rgb, dets)
        feats = np.array([feature_vector(result["faces"][0]["score"]["features"])], dtype=np.float32)
        aligned = align(img.rgb, five_points(dets[0].keypoints))
        # the detector stages the pipeline runs for this photo: the first, and the full one if handed on
        group = [img.rgb, img.rgb[:, ::-1].copy()] if pipeline.settings.mirror_symmetric else [img.rgb]
        before = det.full_runs
        det.detect([group], pipeline.settings.detection_threshold, precise=embedding)
        stages = ([det.full] if det.first is None or embedding else
                  [det.first] + ([det.full] if det.full_runs > before else []))
        prepared.append((img, crops, feats, aligned, stages))

    def detector_feed(img, stage):
        if stage.name.split("@")[0] == "yunet":  # a canonical name@version
            h, w = img.rgb.shape[:2]
            ratio = min(1.0, stage.input_size / max(h, w))
            nw, nh = round(w * ratio), round(h * ratio)
            pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
            return {store.session(stage.name).get_inputs()[0].name: np.zeros((1, 3, ph, pw), np.float32)}
        square, _ = letterbox(img.rgb, stage.size)
        return {"image": (square.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)}

    # FaceMesh as the pipeline calls it (aurum.pipeline): one call per pass, the crop and its
    # mirror together in every pass with AURUM_MIRROR_SYMMETRIC, otherwise in the last only
    s = pipeline.settings

    def mesh_feeds(crops):
        one = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255
        pair = {"image": np.concatenate([one, one[:, :, :, ::-1]])}
        total = s.mesh_placement + s.mesh_passes
        return [pair if s.mirror_symmetric or k == total - 1 else {"image": one} for k in range(total)]

    feeds = [([detector_feed(img, stage) for stage in stages], mesh_feeds(crops),
              {"features": feats},
              {store.session("sface").get_inputs()[0].name:
               np.ascontiguousarray(aligned[None, :, :, ::-1].astype(np.float32).transpose(0, 3, 1, 2))})
             for img, crops, feats, aligned, stages in prepared]
    sessions = (store.session(det.name), store.session("facemesh"), store.session(pipeline.scorer.name),
                store.session("sface"))
    per_round = []
    for _ in range(rounds):
        times = []
        for f_det, f_mesh, f_score, f_emb in feeds:
            start = time.perf_counter()
            for _ in range(2 if s.mirror_symmetric else 1):  # the photo, and its mirror
                for feed in f_det:  # each detector stage the photo goes through
                    sessions[0].run(None, feed)
            for feed in f_mesh:
                sessions[1].run(None, feed)
            sessions[2].run(None, f_score)
            if embedding:
                sessions[3].run(None, f_emb)
            times.append((time.perf_counter() - start) * 1000)
        per_round.append(statistics.median(times))
    return min(per_round)


def pipeline_run(pipeline: Pipeline, images: list[bytes], embedding: bool, rounds: int) -> dict:
    options = ScoreOptions(return_embedding=embedding)
    best = None
    for _ in range(rounds):
        totals, stages = [], {}
        start = time.perf_counter()
        for data in images:
            t0 = time.perf_counter()
            result = pipeline.score(data, options)
            totals.append((time.perf_counter() - t0) * 1000)
            for k, v in result["timings_ms"].items():
                stages.setdefault(k, []).append(v)
        wall = time.perf_counter() - start
        row = {"median_ms": statistics.median(totals), "images_per_s": len(images) / wall,
               "stages_ms": {k: round(statistics.median(v), 3) for k, v in stages.items()}}
        if best is None or row["median_ms"] < best["median_ms"]:
            best = row
    return best


def replayed_ms(pipeline: Pipeline, images: list[bytes], embedding: bool, rounds: int) -> dict:
    """``pipeline_run`` with the models' outputs replayed instead of computed.

    One recording run first; the pipeline is deterministic, so the k-th call of a session in a
    round gets the k-th recorded outputs (no lookup cost). Outputs are not mutated downstream."""
    sessions = [pipeline.store.session(name) for name in pipeline.model_names(embedding)]
    calls: dict[int, list] = {id(s): [] for s in sessions}
    cursor: dict[int, int] = {}

    def recording(session):
        real = session.run

        def run(*args, **kwargs):
            outputs = real(*args, **kwargs)
            calls[id(session)].append(outputs)
            return outputs
        return run

    def replaying(session):
        def run(*args, **kwargs):
            i = cursor[id(session)]
            cursor[id(session)] = i + 1
            return calls[id(session)][i]
        return run

    options = ScoreOptions(return_embedding=embedding)
    try:
        for session in sessions:
            session.run = recording(session)
        for data in images:
            pipeline.score(data, options)
        for session in sessions:
            session.run = replaying(session)
        best = None
        for _ in range(rounds):
            cursor.update({id(s): 0 for s in sessions})
            row = pipeline_run(pipeline, images, embedding, 1)
            if best is None or row["median_ms"] < best["median_ms"]:
                best = row
        return best
    finally:
        for session in sessions:
            del session.run  # back to the class's method


def _worker(args: tuple[list[bytes], bool, int]) -> float:
    images, embedding, repeat = args
    pipeline = Pipeline(Settings.from_env(ort_threads=1))
    pipeline.load(embedding=embedding)
    options = ScoreOptions(return_embedding=embedding)
    pipeline.score(images[0], options)
    start = time.perf_counter()
    for _ in range(repeat):
        for data in images:
            pipeline.score(data, options)
    return time.perf_counter() - start


def two_processes(images: list[bytes], embedding: bool, rounds: int) -> float:
    halves = [images[0::2], images[1::2]]
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        walls = pool.map(_worker, [(h, embedding, rounds) for h in halves])
    return len(images) * rounds / max(walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phone-images", type=int, default=12)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    images = selfies(args.images)
    phones = phone_photos(args.phone_images)
    pipeline = Pipeline(Settings.from_env(ort_threads=1))
    pipeline.load()
    report = {"detector": pipeline.detector.name, "images": len(images), "phone_images": len(phones), "cpu_count": os.cpu_count(), "profiles": {}}
    print(f"detector {pipeline.detector.name}, {len(images)} unique JPEG selfies (560-720 px) and "
          f"{len(phones)} phone-size photos (1080-3024 px wide), 1 ONNX Runtime thread per process, "
          f"median of {args.rounds} rounds\n")
    for profile, embedding, photos in (("fast", False, images), ("full", True, images), ("phone", False, phones)):
        raw = raw_model_ms(pipeline, photos, embedding, args.rounds)
        one = pipeline_run(pipeline, photos, embedding, args.rounds)
        two = two_processes(photos, embedding, args.rounds)
        alone = replayed_ms(pipeline, photos, embedding, args.rounds)
        row = {"raw_model_ms": round(raw, 3), "raw_images_per_s": round(1000 / raw, 1),
               "pipeline_ms": round(one["median_ms"], 3), "pipeline_images_per_s_1proc": round(one["images_per_s"], 1),
               "pipeline_images_per_s_2proc": round(two, 1),
               "ratio_pipeline_to_raw": round(raw / one["median_ms"], 3), "stages_ms": one["stages_ms"],
               "pipeline_models_replayed_ms": round(alone["median_ms"], 3),
               "models_replayed_stages_ms": alone["stages_ms"]}
        report["profiles"][profile] = row
        print(f"[{profile}{' + embedding' if embedding else ''}{' (phone-size photos)' if photos is phones else ''}]")
        print(f"  raw ONNX Runtime (models only)   {raw:7.2f} ms/image  {1000 / raw:7.1f} images/s")
        print(f"  pipeline, 1 process              {one['median_ms']:7.2f} ms/image  {one['images_per_s']:7.1f} images/s")
        print(f"  pipeline, 2 processes                              {two:7.1f} images/s")
        print(f"  pipeline, models replayed        {alone['median_ms']:7.2f} ms/image  (the pipeline's own work)")
        print(f"  ratio pipeline / raw throughput  {raw / one['median_ms']:.2f}")
        print("  stages (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in one["stages_ms"].items()))
        print("  stages, models replayed: " + ", ".join(f"{k} {v:.2f}" for k, v in alone["stages_ms"].items()))
        print()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
