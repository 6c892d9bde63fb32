"""The model lifecycle on a live stack (the API server, a Celery worker of two children, our Redis),
with two versions of the geometric scorer in the manifest: routes changed at run time take
effect within seconds without a restart, shadow scoring never changes what a client receives,
promotion and rollback are gated and audited, a detector is routed like a scorer, and a shifted
input stream raises the drift verdict where an unshifted one does not."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.chaos.common import record
from tests.helpers.devset import devset_photos
from tests.helpers.models import LIVE_SCORER, with_candidate
from tests.helpers.photos import unique_photo
from tests.helpers.stack import Stack

LIVE = LIVE_SCORER
WINDOW = 5  # seconds per statistics window, so that the drift phases fall in windows of their own


BROKEN = "geometric_scorer@2.0.2-broken"  # in the manifest, but its file does not match its sha256


def register_broken(folder) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = dict(next(iter(manifest["registry"]["geometric_scorer"].values())))
    (folder / "broken.onnx").write_bytes(b"not a model")
    entry.update(version=BROKEN.split("@")[1], file="broken.onnx")
    manifest["registry"]["geometric_scorer"][entry["version"]] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder, candidate = with_candidate(tmp_path_factory.mktemp("models"))
    register_broken(folder)
    with Stack(tmp_path_factory.mktemp("lifecycle"), extra_env={
            "AURUM_MODELS_DIR": str(folder), "AURUM_ROUTING_REFRESH": "1", "AURUM_PROMOTE_MIN_PAIRS": "20",
            "AURUM_MODEL_WINDOW": str(WINDOW), "AURUM_DRIFT_MIN_FACES": "20"}) as s:
        s.candidate = candidate
        s.pids = [s.worker.pid, *s.worker_children()]
        yield s


def cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "aurum", *args], env=stack.env, capture_output=True, text=True,
                         timeout=60)
    assert not check or out.returncode == 0, out.stdout + out.stderr
    return out


def session(stack: Stack, name: str, role: str = "client") -> tuple[requests.Session, str]:
    """A client with its own key (its own cache scope): the session and the key's id."""
    token = cli(stack, "keys", "create", "--name", name, "--role", role).stdout.strip()
    http = requests.Session()
    http.headers["X-API-Key"] = token
    return http, hashlib.sha256(token.encode()).hexdigest()[:16]


def score(stack: Stack, http: requests.Session, data: bytes) -> dict:
    response = http.post(stack.base + "/api/ml/score", files={"image": ("p", data)}, params={"wait": 30}, timeout=60)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["status"] == "succeeded", doc
    return doc["result"]


def scorer_of(result: dict) -> str:
    return f"geometric_scorer@{result['models']['geometric_scorer']}"


def until(stack: Stack, http: requests.Session, wanted: str, seed: int, limit: float = 5.0) -> float:
    """Seconds from now until a fresh job is scored by ``wanted`` (each probe a new image)."""
    start = time.monotonic()
    while True:
        seed += 1
        got = scorer_of(score(stack, http, unique_photo(seed)))
        if got == wanted:
            return time.monotonic() - start
        assert time.monotonic() - start < limit + 10, f"still {got} after {time.monotonic() - start:.1f} s"


def devset_images(edit=None) -> list[bytes]:
    out = []
    for path in devset_photos():
        rgb = np.asarray(Image.open(path).convert("RGB"))
        if edit is not None:
            rgb = edit(rgb)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def test_two_versions_served_at_once_and_a_route_change_within_seconds(stack) -> None:
    admin, _ = session(stack, "lifecycle-admin", "admin")
    mine, my_id = session(stack, "canary-key")
    assert scorer_of(score(stack, mine, unique_photo(1))) == LIVE
    cli(stack, "models", "route", "scorer", stack.candidate, "--mode", "shadow", "--keys", my_id, "--force")
    took = until(stack, mine, stack.candidate, 100)
    # the same workers, at the same time: another key is still served by the live version
    assert scorer_of(score(stack, stack.http, unique_photo(200))) == LIVE
    assert scorer_of(score(stack, mine, unique_photo(201))) == stack.candidate
    status = admin.get(stack.base + "/api/admin/models/routing", timeout=10).json()
    assert status["roles"]["scorer"]["keys"] == [my_id] and status["roles"]["scorer"]["live"] == LIVE
    cli(stack, "models", "route", "scorer", "--off")
    back = until(stack, mine, LIVE, 300)
    assert [stack.worker.pid, *stack.worker_children()] == stack.pids  # nothing restarted
    deadline = time.monotonic() + 30  # the children say what they serve, with their next beats
    while not {LIVE, stack.candidate} <= (loaded := {f"{m['name']}@{m['version']}" for child in admin.get(
            stack.base + "/api/admin/models", timeout=10).json() for m in child["models"]}):
        assert time.monotonic() < deadline, loaded
        time.sleep(1)
    record("lifecycle-route-change", {"to_candidate_s": round(took, 2), "back_to_live_s": round(back, 2)})
    assert took < 5 and back < 5


def test_shadow_never_changes_what_a_client_receives(stack) -> None:
    plain, _ = session(stack, "no-shadow")
    shadowed, _ = session(stack, "with-shadow")
    images = devset_images() + devset_images(lambda rgb: np.asarray(
        Image.fromarray(rgb).resize((rgb.shape[1] * 4 // 5, rgb.shape[0] * 4 // 5), Image.LANCZOS)))
    before = [score(stack, plain, data) for data in images]
    paired = json.loads(cli(stack, "models", "compare", "scorer", stack.candidate).stdout)["pairs"]
    cli(stack, "models", "route", "scorer", stack.candidate, "--mode", "shadow")
    time.sleep(1.5)  # AURUM_ROUTING_REFRESH
    during = [score(stack, shadowed, data) for data in images]  # another key: no cache entry to hit

    def client_view(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("timings_ms", "cached")}
    assert [client_view(r) for r in during] == [client_view(r) for r in before]
    assert {scorer_of(r) for r in during} == {LIVE}

    report = json.loads(cli(stack, "models", "compare", "scorer").stdout)
    given = sum(1 for r in during for f in r["faces"] if f["score"]["value"] is not None)
    assert report["pairs"] - paired == given >= 20  # every face given a score, paired
    assert report["live"] == LIVE and report["candidate"] == stack.candidate
    assert report["max_abs_difference"] > 0.5 and -1 <= report["rank_correlation"] <= 1
    metrics = requests.get(stack.worker_metrics[0], timeout=10).text + requests.get(stack.worker_metrics[1], timeout=10).text
    counts = [float(v) for v in re.findall(r'^aurum_shadow_seconds_count\{role="scorer"\} (\S+)', metrics, re.M)]
    sums = [float(v) for v in re.findall(r'^aurum_shadow_seconds_sum\{role="scorer"\} (\S+)', metrics, re.M)]
    assert sum(counts) >= len(images)
    extra_ms = 1000 * sum(sums) / sum(counts)
    live_ms = float(np.median([r["timings_ms"]["total"] for r in during]))
    record("lifecycle-shadow", {"images": len(images), "pairs": report["pairs"], "shadow_extra_ms_per_image": round(extra_ms, 3),
                                "live_ms_per_image_median": round(live_ms, 1), "report": report})
    assert extra_ms < 0.1 * live_ms  # a scorer shadow re-scores the features: no second pipeline run


def test_gated_promotion_and_rollback_audited(stack) -> None:
    admin, _ = session(stack, "lifecycle-admin-2", "admin")
    probe, _ = session(stack, "probe")
    api = stack.base + "/api/admin/models"
    # a candidate without shadow pairs is refused traffic, with the report saying why
    refused = admin.put(f"{api}/routing/detector", json={"candidate": "blazeface_full", "mode": "canary",
                                                          "share": 0.1}, timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "GATE_FAILED"
    assert refused.json()["error"]["details"]["report"]["pairs"] == 0
    bad = admin.put(f"{api}/routing/scorer", json={"candidate": "geometric_scorer@9.9", "mode": "shadow"}, timeout=10)
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "INVALID_ROUTE"

    report = admin.get(f"{api}/compare/scorer", timeout=10).json()
    if not report["passed"]:  # the equal-weight candidate ranks faces otherwise: forced, and audited so
        assert report["pairs"] >= 20, report
    promoted = admin.post(f"{api}/promote", json={"model": stack.candidate, "force": not report["passed"]}, timeout=10)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["rules"]["scorer"]["live"] == stack.candidate
    took = until(stack, probe, stack.candidate, 1000)
    cli(stack, "models", "rollback", "scorer")
    back = until(stack, probe, LIVE, 2000)
    trail = admin.get(f"{api}/audit", timeout=10).json()
    assert trail[0]["action"] == "rollback scorer" and trail[0]["by"].startswith("cli:")
    assert trail[1]["action"] == f"promote scorer {stack.candidate}" and trail[1]["by"] == "admin:lifecycle-admin-2"
    assert trail[1]["before"]["scorer"]["live"] is None and trail[1]["after"]["scorer"]["live"] == stack.candidate
    record("lifecycle-promote-rollback", {"promote_s": round(took, 2), "rollback_s": round(back, 2)})
    assert took < 5 and back < 5


def test_a_version_that_fails_to_load_is_served_by_the_default(stack) -> None:
    probe, probe_id = session(stack, "broken-probe")
    cli(stack, "models", "route", "scorer", BROKEN, "--mode", "shadow", "--keys", probe_id, "--force")
    time.sleep(1.5)
    for seed in range(4000, 4003):
        result = score(stack, probe, unique_photo(seed))
        assert scorer_of(result) == LIVE and not result["degraded"], result  # not the fallback
        assert not result["cached"]
    cli(stack, "models", "route", "scorer", "--off")


def test_bad_lifecycle_requests_get_clear_errors(stack) -> None:
    admin, _ = session(stack, "lifecycle-admin-3", "admin")
    api = stack.base + "/api/admin/models"
    for url in (f"{api}/compare/redis_url", f"{api}/compare/nope", f"{api}/drift?model=nope@1"):
        answer = admin.get(url, timeout=10)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "INVALID_ROUTE", (url, answer.text)
    for count in ("0", "x", "\u00b2", "1e3", "5000"):
        answer = admin.get(f"{api}/audit", params={"count": count}, timeout=10)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "INVALID_OPTION", (count, answer.text)
    cases = [("put", "/routing/scorer", {"candidate": stack.candidate, "mode": "sideways"}),
             ("put", "/routing/scorer", {"candidate": stack.candidate, "mode": "ab", "share": 2}),
             ("put", "/routing/scorer", {"candidate": stack.candidate, "keys": ["not-a-key-id"], "force": True}),
             ("put", "/routing/colour", {"candidate": stack.candidate}),
             ("post", "/promote", {"model": "nope@1"}),
             ("post", "/promote", {"model": "sface"}),
             ("post", "/promote", {}),
             ("post", "/rollback", {"role": "detector"})]
    for method, path, body in cases:
        answer = getattr(admin, method)(api + path, json=body, timeout=10)
        assert answer.status_code in (400, 409), (path, body, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] in ("INVALID_OPTION", "INVALID_ROUTE"), answer.text
    assert admin.put(f"{api}/routing/scorer", data="[", headers={"Content-Type": "application/json"},
                     timeout=10).status_code == 400


def test_an_api_without_a_models_folder_checks_routes_against_the_workers(stack, tmp_path) -> None:
    from api import create_app
    from service.config import ServiceSettings

    app = create_app(ServiceSettings.from_env(redis_url=stack.env["AURUM_REDIS_URL"],
                                              encryption_keys=stack.env["AURUM_ENCRYPTION_KEYS"],
                                              models_dir=str(tmp_path / "none")))
    token = cli(stack, "keys", "create", "--name", "no-models-admin", "--role", "admin").stdout.strip()
    client = app.test_client()
    headers = {"X-API-Key": token}
    status = client.get("/api/admin/models/routing", headers=headers)
    assert status.status_code == 200 and status.get_json()["roles"]["scorer"]["default"] == LIVE
    routed = client.put("/api/admin/models/routing/scorer", json={"candidate": stack.candidate, "mode": "shadow"},
                        headers=headers)
    assert routed.status_code == 200 and routed.get_json()["rules"]["scorer"]["candidate"] == stack.candidate
    assert client.get("/api/admin/models/drift", headers=headers).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'aurum_model_window_faces{{model="{LIVE}"}}' in metrics
    assert client.put("/api/admin/models/routing/scorer", json={"mode": "off"}, headers=headers).status_code == 200


def test_a_detector_is_routed_like_a_scorer(stack) -> None:
    probe, _ = session(stack, "detector-probe")
    cli(stack, "models", "route", "detector", "blazeface_full", "--mode", "canary", "--share", "100", "--force")
    deadline = time.monotonic() + 15
    seed = 3000
    while "blazeface_full" not in (result := score(stack, probe, unique_photo(seed)))["models"]:
        assert time.monotonic() < deadline
        seed += 1
    assert "yunet" not in result["models"] and len(result["faces"]) == 1
    cli(stack, "models", "route", "detector", "--off")


def _drift(stack: Stack, since: float) -> dict:
    out = cli(stack, "models", "drift", LIVE, "--last", str(time.time() - since))
    return json.loads(out.stdout)[0]


def _phase(stack: Stack, http: requests.Session, images: list[bytes]) -> float:
    """Score ``images`` in windows of their own; the phase's start time.

    The phase starts just after a window boundary, a whole window after the previous phase: the
    CLI reads ``--last`` against its own clock a moment later (seconds, on a loaded machine), and
    that later start must still fall in the phase's first window, or its first faces are lost."""
    time.sleep(WINDOW + 0.5)
    boundary = (time.time() // WINDOW + 1) * WINDOW
    time.sleep(max(0.0, boundary + 0.1 - time.time()))
    start = time.time()
    for data in images:
        score(stack, http, data)
    return start


def test_a_shifted_stream_drifts_and_an_unshifted_one_does_not(stack) -> None:
    http, _ = session(stack, "drift")
    start = _phase(stack, http, devset_images())
    reference = json.loads(cli(stack, "models", "reference", LIVE, "--last", str(time.time() - start)).stdout)
    assert reference["faces"] >= 20

    # ordinary edits of the same photos (smaller, re-encoded): the same population
    start = _phase(stack, http, devset_images(lambda rgb: np.asarray(
        Image.fromarray(rgb).resize((rgb.shape[1] * 9 // 10, rgb.shape[0] * 9 // 10), Image.LANCZOS))))
    unshifted = _drift(stack, start)
    # the same photos under-exposed: a camera or a client that changed
    start = _phase(stack, http, devset_images(lambda rgb: (rgb * 0.25).astype(np.uint8)))
    shifted = _drift(stack, start)
    record("lifecycle-drift", {"unshifted": unshifted, "shifted": shifted})
    assert unshifted["judged"] and not unshifted["drifted"], unshifted
    assert shifted["judged"] and shifted["drifted"] and shifted["measures"]["quality"]["drifted"], shifted

    metrics = stack.http.get(stack.base + "/metrics", timeout=10).text
    assert re.search(rf'^aurum_model_drift_psi{{measure="quality",model="{re.escape(LIVE)}"}} \S+', metrics, re.M)
    # the alert's series (deploy/alerts.yml); its value is the verdict on the current windows only
    assert re.search(rf'^aurum_model_drifted{{model="{re.escape(LIVE)}"}} [01]\.0', metrics, re.M), metrics[-2000:]
