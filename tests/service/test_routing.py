"""The routing policy in a real Redis: decisions (canary, A/B, chosen keys, shadow), atomic and
audited changes, promotion and rollback, what a reader sees after a change; the comparison and
drift statistics."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
import redis as redis_lib

from service import comparison, lifecycle, routing
from service.config import ServiceSettings

from tests.helpers.models import LIVE_SCORER, with_candidate

LIVE = LIVE_SCORER


@pytest.fixture
def r(redis_server):
    client = redis_lib.Redis.from_url(f"{redis_server.url}/5")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    return with_candidate(tmp_path_factory.mktemp("models"))


@pytest.fixture
def settings(candidate):
    return ServiceSettings.from_env(models_dir=str(candidate[0]), promote_min_pairs=50)


def policy(**rule) -> routing.Policy:
    return routing.Policy(rules={"scorer": routing.Rule(live=LIVE, candidate="geometric_scorer@x", **rule)})


def ids(n: int) -> list[str]:
    rng = random.Random(7)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


def test_canary_sends_its_share_of_jobs() -> None:
    p = policy(mode="canary", share=0.05)
    served = [routing.decide(p, job, "owner" * 4, "img")["models"]["scorer"] for job in ids(4000)]
    share = served.count("geometric_scorer@x") / len(served)
    assert abs(share - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 4000)  # within 4 binomial SDs
    assert set(served) == {LIVE, "geometric_scorer@x"}


def test_ab_sticks_to_a_key_or_an_image() -> None:
    by_key = policy(mode="ab", share=0.5, sticky="key")
    for owner in ids(50):
        chosen = {routing.decide(by_key, job, owner, job)["models"]["scorer"] for job in ids(20)}
        assert len(chosen) == 1  # every job of one key: one version
    by_image = policy(mode="ab", share=0.5, sticky="image")
    for image in ids(50):
        assert len({routing.decide(by_image, job, owner, image)["models"]["scorer"]
                    for job, owner in zip(ids(10), ids(10)[::-1])}) == 1
    arms = [routing.decide(by_key, "j", owner, "i")["arms"]["scorer"] for owner in ids(2000)]
    assert 0.45 < arms.count("candidate") / len(arms) < 0.55


def test_chosen_keys_get_the_candidate_and_shadow_returns_live() -> None:
    p = policy(mode="shadow", keys=["a" * 16])
    mine = routing.decide(p, "job", "a" * 64, "img")
    assert mine["models"]["scorer"] == "geometric_scorer@x" and mine["arms"]["scorer"] == "candidate"
    other = routing.decide(p, "job", "b" * 64, "img")
    assert other["models"]["scorer"] == LIVE and other["shadow"] == {"scorer": "geometric_scorer@x"}
    assert routing.decide(routing.Policy(), "job", "b", "img") == {"models": {}, "arms": {}}


def test_changes_are_atomic_audited_and_checked(r, settings, candidate) -> None:
    _, cand = candidate
    threads = [threading.Thread(target=routing.route, args=(r, f"t{i}", "scorer", cand, "shadow")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert routing.load(r).revision == 8  # none lost to a concurrent change
    trail = routing.audit(r)
    assert len(trail) == 8 and {e["by"] for e in trail} == {f"t{i}" for i in range(8)}
    assert trail[0]["after"]["scorer"]["candidate"] == cand and trail[0]["action"].startswith("route scorer shadow")
    for bad in ("geometric_scorer@9.9.9", "yunet", "sface"):  # unknown, or not a scorer
        with pytest.raises(routing.RoutingError):
            lifecycle.route(r, settings, "t", "scorer", bad, "shadow")
    with pytest.raises(routing.RoutingError):
        routing.rollback(r, "t", "scorer")  # nothing promoted yet
    assert routing.load(r).revision == 8


def test_gates_promotion_and_rollback(r, settings, candidate) -> None:
    _, cand = candidate
    lifecycle.route(r, settings, "t", "scorer", cand, "shadow")
    with pytest.raises(lifecycle.GateFailed) as refused:  # no shadow pairs yet
        lifecycle.route(r, settings, "t", "scorer", cand, "canary", 0.05)
    assert refused.value.report["pairs"] == 0 and not refused.value.report["passed"]
    with pytest.raises(lifecycle.GateFailed):
        lifecycle.promote(r, settings, "t", cand)
    rng = random.Random(1)
    with r.pipeline() as pipe:
        rows = [(s, s * 0.9 + 6 + rng.gauss(0, 1)) for s in (rng.uniform(30, 80) for _ in range(60))]
        comparison.record_pairs(pipe, LIVE, cand, rows, (40.0, 40.5), settings.model_window, settings.result_ttl)
        pipe.execute()
    report = lifecycle.compare(r, lifecycle.Catalogue.of(r, settings), settings, "scorer")
    assert report["pairs"] == 60 and report["passed"] and report["rank_correlation"] > 0.95
    assert report["live"] == LIVE and report["candidate"] == cand
    lifecycle.route(r, settings, "t", "scorer", cand, "canary", 0.05)
    p = lifecycle.promote(r, settings, "t", cand)
    assert p.rules["scorer"].live == cand and p.rules["scorer"].candidate is None
    assert lifecycle.status(r, settings)["roles"]["scorer"]["live"] == cand
    p = lifecycle.rollback(r, "t", "scorer")
    assert p.rules["scorer"].live is None  # the workers' default again
    assert lifecycle.status(r, settings)["roles"]["scorer"]["live"] == LIVE
    actions = [e["action"] for e in routing.audit(r)]
    assert actions[:3] == ["rollback scorer", f"promote scorer {cand}", f"route scorer canary {cand}"]


def test_a_reader_sees_a_change_within_its_refresh(r) -> None:
    reader = routing.Router(r, refresh=0.5)
    assert reader.decide("j", "o", "i")["models"] == {}
    routing.promote(r, "t", "scorer", "geometric_scorer@x")
    start = time.monotonic()
    while reader.decide("j", "o", "i")["models"].get("scorer") != "geometric_scorer@x":
        assert time.monotonic() - start < 5
        time.sleep(0.05)
    assert time.monotonic() - start <= 0.5 + 0.3


# --- statistics ------------------------------------------------------------------------------------
def test_psi_and_the_chi_square_test() -> None:
    same = {str(i): 100 for i in range(10)}
    assert comparison.psi(same, same) == pytest.approx(0.0, abs=1e-9)
    assert comparison.chi_square_p(same, same) > 0.5
    shifted = {str(i): (300 if i < 3 else 10) for i in range(10)}
    assert comparison.psi(same, shifted) > 1 and comparison.chi_square_p(same, shifted) < 1e-9
    assert comparison.ks(same, shifted) > 0.5
    # two samples of one distribution: p-values roughly uniform, so p < 0.001 about 1 in 1000
    rng = random.Random(3)
    small = 0
    for _ in range(300):
        a, b = {}, {}
        for counts in (a, b):
            for _ in range(400):
                k = str(min(9, int(rng.betavariate(5, 4) * 10)))
                counts[k] = counts.get(k, 0) + 1
        small += comparison.chi_square_p(a, b) < 0.01
    assert small <= 12  # ~3 expected at 1 %


def test_windows_sum_and_drift_verdict(r) -> None:
    now = 1_000_000.0
    clean = {"faces": 1, "images": 1, "n:1": 1, "q:passed": 1}
    with r.pipeline() as pipe:
        for i in range(300):
            comparison.record(pipe, LIVE, {**clean, f"s:{5 + i % 3}": 1}, 60, 600, now - 100)
        for i in range(300):
            comparison.record(pipe, LIVE, {"faces": 1, "images": 1, "n:1": 1, "q:TOO_DARK": 1, f"s:{2 + i % 2}": 1},
                              60, 600, now)
        pipe.execute()
    before = comparison.windows(r, LIVE, now - 130, 60, now - 100)
    assert before["faces"] == 300 and before["q:passed"] == 300
    after = comparison.windows(r, LIVE, now - 10, 60, now)
    verdict = comparison.drift(before, after, 0.25, 0.001, 200)
    assert verdict["drifted"] and verdict["measures"]["quality"]["drifted"] and verdict["measures"]["score"]["drifted"]
    assert not verdict["measures"]["faces"]["drifted"]
    assert not comparison.drift(before, before, 0.25, 0.001, 200)["drifted"]
    assert not comparison.drift(before, after, 0.25, 0.001, 1000)["judged"]  # too few faces to judge
