"""The ``aurum`` command line: score photos, inspect and verify models, train a scorer."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__, errors
from .config import Settings


def _pipeline(args: argparse.Namespace):
    from .pipeline import Pipeline

    return Pipeline(args.settings)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of this command: the core's for scoring, the job service's as well for the
    commands that talk to Redis and for ``config`` (when the service package is installed)."""
    overrides = {"models_dir": args.models_dir} if args.models_dir else {}
    if args.command in SERVICE_COMMANDS or getattr(args, "action", None) in LIFECYCLE_ACTIONS:
        try:
            from service.config import ServiceSettings
        except ImportError:  # the core alone: its own settings
            if args.command != "config":
                raise
        else:
            return ServiceSettings.from_env(**overrides)
    return Settings.from_env(**overrides)


SERVICE_COMMANDS = {"keys", "cache", "config"}
LIFECYCLE_ACTIONS = {"status", "route", "promote", "rollback", "compare", "drift", "reference", "audit"}


def _summary(path: str, result: dict[str, Any]) -> str:
    img = result["image"]
    lines = [f"{path}: {img['width']}x{img['height']} {img['format']}, {len(result['faces'])} face(s), "
             f"{result['timings_ms']['total']:.1f} ms"]
    for i, face in enumerate(result["faces"]):
        x, y, w, h = face["box"]
        q, p = face["quality"], face["pose"]
        verdict = "passed" if q["passed"] else "failed: " + ", ".join(q["reasons"])
        sc = face["score"]
        value = ("withheld (" + ", ".join(sc.get("withheld") or ["no value"]) + ")" if sc["value"] is None
                 else f"{sc['value']:.1f}" + (f" (confidence {sc['confidence']:.2f})" if "confidence" in sc else ""))
        lines.append(
            f"  face {i}{' (primary)' if i == result['primary_face'] else ''}: score {value}"
            f"  box [{x:.0f}, {y:.0f}, {w:.0f}, {h:.0f}]  detected {face['confidence']:.2f}"
            f"  yaw {p['yaw']:+.0f} pitch {p['pitch']:+.0f} roll {p['roll']:+.0f}  quality {verdict}")
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    from .schemas import load_options

    try:
        options = load_options({"max_faces": args.max_faces, "return_embedding": args.embedding,
                                "return_landmarks": args.landmarks or bool(args.draw),
                                "always_score": args.always_score})
        pipeline = _pipeline(args)
        pipeline.load(embedding=args.embedding)
    except errors.AurumError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    failures = 0
    for path in args.images:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            err: errors.AurumError = errors.InvalidInput(f"Cannot read {path}: {exc.strerror}.")
        else:
            try:
                result = pipeline.score(data, options)
            except errors.AurumError as exc:
                err = exc
            else:
                if args.draw:
                    from .draw import draw_result

                    out = _draw_path(args.draw, path, len(args.images))
                    draw_result(data, result, out, pipeline.settings)
                if not args.landmarks:
                    for face in result["faces"]:
                        face.pop("landmarks", None)
                print(json.dumps({"path": path, **result}) if args.json else _summary(path, result))
                continue
        failures += 1
        if args.json:
            print(json.dumps({"path": path, **err.to_dict()}))
        else:
            print(f"{path}: error {err.code}: {err.message}", file=sys.stderr)
    return 1 if failures else 0


def _draw_path(draw: str, image_path: str, count: int) -> Path:
    out = Path(draw)
    if count == 1:
        return out
    return out.with_name(f"{out.stem}-{Path(image_path).stem}{out.suffix or '.png'}")


def cmd_models(args: argparse.Namespace) -> int:
    from .store import ModelStore

    settings = args.settings
    try:
        store = ModelStore(settings.models_dir, device=settings.device, threads=settings.ort_threads)
    except errors.AurumError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    if args.action in LIFECYCLE_ACTIONS:
        return cmd_lifecycle(args)
    if args.action == "list":
        rows = store.describe()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                made = (r["created"] or {}).get("by", "")
                print(f"{r['name']:<18} {r['task'] or '':<10} {r['version']:<24} {'default' if r['default'] else '':<8}"
                      f"{r['file']:<34} {r['sha256'][:12]}  {r['licence']}  {made}")
        return 0
    report = store.verify()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report:
            if r["ok"]:
                extra = f"load {r['load_ms']} ms, warm-up {r['warm_up_ms']} ms on {r['provider']}" if "load_ms" in r else "data ok"
                print(f"ok    {r['name']:<18} {r['version']:<22} {extra}")
            else:
                print(f"FAIL  {r['name']:<18} {r['error']['code']}: {r['error']['message']}")
    return 0 if all(r["ok"] for r in report) else 1


def cmd_lifecycle(args: argparse.Namespace) -> int:
    """``aurum models status|route|promote|rollback|compare|drift|reference|audit``: the routing
    policy and the comparisons in Redis (service/lifecycle.py)."""
    import getpass

    import redis

    from service import connections, lifecycle, routing

    if args.action in ("route", "promote", "rollback", "compare", "reference") and not args.target:
        print(f"error: models {args.action} needs a {'role' if args.action in ('route', 'rollback', 'compare') else 'version'}",
              file=sys.stderr)
        return 2
    settings = args.settings
    client = connections.client(settings, timeout=5)
    who = f"cli:{getpass.getuser()}"
    try:
        if args.action == "status":
            out: Any = lifecycle.status(client, settings)
        elif args.action == "route":
            role, candidate = args.target, args.candidate
            mode = "off" if args.off else args.mode
            policy = lifecycle.route(client, settings, who, role, candidate, mode, args.share / 100, args.sticky,
                                     args.keys.split(",") if args.keys else None, args.force)
            out = policy.to_dict()
        elif args.action == "promote":
            out = lifecycle.promote(client, settings, who, args.target, args.force).to_dict()
        elif args.action == "rollback":
            out = lifecycle.rollback(client, who, args.target).to_dict()
        elif args.action == "compare":
            out = lifecycle.compare(client, lifecycle.Catalogue.of(client, settings), settings, args.target,
                                    args.candidate)
        elif args.action == "drift":
            out = lifecycle.drifts(client, settings, args.target, args.last)
        elif args.action == "reference":
            out = lifecycle.set_reference(client, settings, args.target, args.last)
        else:
            out = routing.audit(client, args.count)
    except lifecycle.GateFailed as exc:
        print(json.dumps(exc.report, indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (routing.RoutingError, errors.AurumError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: Redis: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from .scoring.train import train_from_csv
    except ImportError as exc:
        print(f"error: training needs the [train] extra (pip install -e '.[train]'): {exc}", file=sys.stderr)
        return 2
    settings = args.settings
    try:
        report = train_from_csv(args.ratings, settings, name=args.name, with_embedding=args.embedding,
                                folds=args.folds, out_dir=args.out)
    except (errors.AurumError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import redis

    from service import connections
    from service.keys import KeyStore

    settings = args.settings
    store = KeyStore(connections.client(settings, timeout=2))
    try:
        if args.action == "create":
            if not args.name:
                print("error: --name is required", file=sys.stderr)
                return 2
            token, key = store.create(args.name, args.rate, args.role)
            print(token)
            print(f"created key {key.name!r} ({key.hint}...); store it now: it is not shown again",
                  file=sys.stderr)
        elif args.action == "list":
            rows = [k.to_dict() for k in store.list()]
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                state = "revoked" if r["revoked"] else "active"
                print(f"{r['name']:<24} {r['hint']}...  {state:<8} {r['role']:<7} rate {r['rate'] or 'default'}")
        else:
            if not args.name:
                print("error: give the key's name (or its hint) to revoke", file=sys.stderr)
                return 2
            revoked = store.revoke(args.name)
            if not revoked:
                print(f"error: no active key matches {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {len(revoked)} key(s): " + ", ".join(k.name for k in revoked))
    except redis.RedisError as exc:
        print(f"error: Redis at {connections.describe(settings)} is unreachable: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import redis

    from service import connections
    from service.cache import ResultCache

    settings = args.settings
    client = connections.client(settings, timeout=2)
    try:
        removed = ResultCache(client, settings.sealer, settings.cache_ttl).clear()
    except redis.RedisError as exc:
        print(f"error: Redis at {connections.describe(settings)} is unreachable: {exc}", file=sys.stderr)
        return 2
    print(f"removed {removed} cached result(s)")
    return 0


def _client(args: argparse.Namespace):
    from .client import AurumClient

    return AurumClient(args.url, api_key=args.key or os.environ.get("AURUM_API_KEY"), fallback=args.fallback,
                       retries=args.retries)


def cmd_submit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .client import ServiceError

    client = _client(args)
    options = {"max_faces": args.max_faces, "return_embedding": args.embedding or None,
               "always_score": args.always_score or None}
    options = {k: v for k, v in options.items() if v is not None}
    failures = 0
    if args.batch and len(args.images) > 1:
        bar = tqdm(total=len(args.images), unit="img", desc="batch", file=sys.stderr, disable=args.no_progress)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            outcomes = client.score_batch(args.images, wait=args.wait or 120, progress=progress, **options)
        except (ServiceError, OSError) as exc:
            bar.close()
            print(f"error: {getattr(exc, 'code', type(exc).__name__)}: {exc}", file=sys.stderr)
            return 1
        bar.close()
        for path, outcome in zip(args.images, outcomes):
            doc = {"path": path, **(outcome.raw if hasattr(outcome, "raw") else {"error": {"code": outcome.code,
                                                                                         "message": outcome.message}})}
            failures += "error" in doc
            print(json.dumps(doc))
        return 1 if failures else 0
    for path in tqdm(args.images, unit="img", file=sys.stderr, disable=args.no_progress or len(args.images) == 1):
        try:
            if args.wait:
                result = client.score(path, wait=args.wait, **options)
                print(json.dumps({"path": path, "job_id": result.job_id, **result.raw}))
            else:
                print(json.dumps({"path": path, "job_id": client.submit(path, **options)}))
        except (ServiceError, errors.AurumError, OSError) as exc:
            failures += 1
            code = getattr(exc, "code", type(exc).__name__)
            print(json.dumps({"path": path, "error": {"code": code, "message": str(exc)}}))
    return 1 if failures else 0


def cmd_status(args: argparse.Namespace) -> int:
    from .client import ServiceError

    try:
        print(json.dumps(_client(args).get(args.job_id)))
    except ServiceError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from service.sealing import new_key

    print(new_key(args.id))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    current = args.settings
    for f in dataclasses.fields(current):
        print(f"{f.metadata['env']}={getattr(current, f.name)!r}\n    {f.metadata['doc']} (default {f.default!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aurum", description="Face detection, quality and scoring.")
    parser.add_argument("--version", action="version", version=f"aurum {__version__}")
    parser.add_argument("--models-dir", help="models folder (default: AURUM_MODELS_DIR or ./models)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score one or more photos")
    p.add_argument("images", nargs="+", metavar="IMG")
    p.add_argument("--json", action="store_true", help="one JSON object per line, per image")
    p.add_argument("--draw", metavar="OUT.png", help="write the photo with boxes, landmarks and scores")
    p.add_argument("--embedding", action="store_true", help="include the 128-d face embedding")
    p.add_argument("--landmarks", action="store_true", help="include the 468 landmarks in the output")
    p.add_argument("--max-faces", type=int, default=None, metavar="N")
    p.add_argument("--always-score", action="store_true",
                   help="give a score even for a face that cannot be judged (blurred, occluded, turned away)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("models", help="the models: list and verify the manifest's versions; route, compare, "
                                      "promote and roll back versions at run time (Redis)",
                       description="list | verify: the manifest. status: the routing policy. "
                                   "route ROLE CANDIDATE --mode shadow|canary|ab [--share PCT] [--sticky key|image] "
                                   "[--keys ID,...] | route ROLE --off. compare ROLE [CANDIDATE]: the shadow report. "
                                   "promote NAME@VERSION. rollback ROLE. drift [NAME@VERSION]. "
                                   "reference NAME@VERSION [--last SECONDS]. audit.")
    p.add_argument("action", choices=["list", "verify", *sorted(LIFECYCLE_ACTIONS)])
    p.add_argument("target", nargs="?", help="a role (detector, scorer) or a version (name@version)")
    p.add_argument("candidate", nargs="?", help="route, compare: the candidate version (name@version)")
    p.add_argument("--mode", choices=["shadow", "canary", "ab"], default="shadow")
    p.add_argument("--off", action="store_true", help="route: no candidate")
    p.add_argument("--share", type=float, default=5.0, metavar="PCT", help="canary, ab: the candidate's share, %%")
    p.add_argument("--sticky", choices=["key", "image"], default="key", help="ab: what a draw sticks to")
    p.add_argument("--keys", help="route: API key ids (16 hex) always given the candidate")
    p.add_argument("--force", action="store_true", help="route, promote: past a failing comparison report")
    p.add_argument("--last", type=float, default=None, metavar="SECONDS",
                   help="reference (default 3600), drift (default: the current and previous window): the windows summed")
    p.add_argument("--count", type=int, default=20, help="audit: how many changes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train-scorer", help="fit a scorer on rated photos (CSV: image path, rating)")
    p.add_argument("ratings", metavar="RATINGS.csv")
    p.add_argument("--name", default="trained_scorer", help="manifest name of the new scorer")
    p.add_argument("--embedding", action="store_true", help="use the SFace embedding as well")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default=None, help="models folder to write into (default: the models folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("keys", help="create, list or revoke API keys (stored as hashes in Redis)")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("name", nargs="?", help="revoke: the key's name or hint")
    p.add_argument("--name", dest="name", help="create: a name for the key")
    p.add_argument("--rate", help='create: its own limits, e.g. "600/minute;30/second"')
    p.add_argument("--role", default="client", choices=["client", "admin"],
                   help="create: client (its own jobs, the default) or admin (the /api/admin endpoints)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("cache", help="manage the result cache")
    p.add_argument("action", choices=["clear"])
    p.set_defaults(func=cmd_cache)

    def service_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("AURUM_URL", "http://127.0.0.1:8000"),
                       help="service address (default: AURUM_URL or http://127.0.0.1:8000)")
        p.add_argument("--key", help="API key (default: AURUM_API_KEY)")
        p.add_argument("--retries", type=int, default=4)
        p.add_argument("--fallback", action="store_true",
                       help="score locally (real models, marked degraded) when the service is down")

    p = sub.add_parser("submit", help="send photos to the service")
    p.add_argument("images", nargs="+", metavar="IMG")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait for the results")
    p.add_argument("--batch", action="store_true", help="send all images as one batch job")
    p.add_argument("--embedding", action="store_true")
    p.add_argument("--max-faces", type=int, default=None, metavar="N")
    p.add_argument("--always-score", action="store_true", help="a score even for faces that cannot be judged")
    p.add_argument("--no-progress", action="store_true")
    service_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's status and result")
    p.add_argument("job_id")
    service_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("keygen", help="print a new AURUM_ENCRYPTION_KEYS entry (id:base64key)")
    p.add_argument("--id", help="key id (default: random)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("config", help="print every setting, its value and its documentation")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # built once and handed to the command; a bad setting: one clear line, not a traceback
        args.settings = _settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
