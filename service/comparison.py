"""What each model version does with the traffic, kept in Redis: windowed summaries per version,
shadow pairs, the comparison report that gates a promotion, and drift against a reference.

**Windows.** Every computed result adds to its versions' summaries for the current window
(AURUM_MODEL_WINDOW seconds): scores in 10-point bins, quality verdicts (one per face: passed, or
the first check it failed; and every reason given, for the report), faces per image (0, 1, 2, 3+)
and latency bins. Counts only: nothing names an image, a
job or a key. They expire after AURUM_MODEL_STATS_TTL.

**Shadow pairs.** With a candidate in shadow mode, each face's (live, candidate) scores are
appended to the version pair's list of the current window, anonymous; a window's list expires
AURUM_RESULT_TTL after the window ends.

**Drift.** The live version's recent windows (the current and the previous one) against its
reference (set by ``aurum models reference``, or at promotion from the windows the candidate
filled in shadow and canary), per measure: the population stability index
``PSI = sum (p_i - q_i) ln(p_i / q_i)`` (half a count added to every bin) and a chi-square test of
homogeneity on the same counts (corrected for the faces of one photo not being independent:
divided by the faces per image). A measure drifts when PSI >= AURUM_DRIFT_PSI (0.25: the usual
"significant shift") **and** the test's p-value < AURUM_DRIFT_P (0.001): PSI says the shift is
large, the test that it is not sampling noise of a small window (PSI of two samples of one
distribution is about (bins - 1)(1/n + 1/m): 0.3 for 30 faces). Nothing is judged below
AURUM_DRIFT_MIN_FACES faces.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Iterable

import redis

from . import keyspace

SCORE_BINS = 10  # 10 points each
LATENCY_MS = (10, 20, 50, 100, 200, 500, 1000, 2000)  # upper bounds; one more bin above
PAIRS_KEPT = 10_000
MEASURES = ("score", "quality", "faces")


def window_of(now: float, length: int) -> int:
    return int(now // length) * length


# --- recording (workers) -------------------------------------------------------------------------
def summarise(result: dict[str, Any], ms: float, scores: list[float | None] | None = None) -> dict[str, int]:
    """One result's counts. ``scores``: per face, instead of the result's own (a shadow's)."""
    faces = result.get("faces", [])
    counts: dict[str, int] = {"images": 1, "faces": len(faces), f"n:{min(len(faces), 3)}": 1,
                              f"ms:{_latency_bin(ms)}": 1}
    for i, face in enumerate(faces):
        value = (face.get("score") or {}).get("value") if scores is None else scores[i]
        if value is not None:
            key = f"s:{min(int(value // (100 / SCORE_BINS)), SCORE_BINS - 1)}"
            counts[key] = counts.get(key, 0) + 1
        quality = face.get("quality") or {}
        reasons = [] if quality.get("passed") else quality.get("reasons") or ["failed"]
        verdict = f"q:{reasons[0] if reasons else 'passed'}"  # one per face (the first check failed)
        counts[verdict] = counts.get(verdict, 0) + 1
        for reason in reasons:  # every reason, for the report
            counts[f"r:{reason}"] = counts.get(f"r:{reason}", 0) + 1
    return counts


def record(pipe: redis.client.Pipeline, ref: str, counts: dict[str, int], window: int, ttl: int,
           now: float | None = None) -> None:
    """Add ``counts`` to ``ref``'s current window, on ``pipe`` (the caller executes it)."""
    key = keyspace.stats(ref, window_of(now or time.time(), window))
    for field, n in counts.items():
        pipe.hincrby(key, field, n)
    pipe.expire(key, ttl)


def record_pairs(pipe: redis.client.Pipeline, live: str, candidate: str, pairs: Iterable[tuple[float, float]],
                 ms: tuple[float, float], window: int, ttl: int, now: float | None = None) -> None:
    """Shadow pairs (live score, candidate score) with the two versions' milliseconds, in the
    current window's list: a pair is gone ``ttl`` seconds after its window ended, whatever
    came after it."""
    entries = [json.dumps([round(a, 2), round(b, 2), round(ms[0], 2), round(ms[1], 2)]) for a, b in pairs]
    if entries:
        start = window_of(now or time.time(), window)
        key = keyspace.pairs(live, candidate, start)
        pipe.lpush(key, *entries).ltrim(key, 0, PAIRS_KEPT - 1).expireat(key, int(start + window + ttl))


def _latency_bin(ms: float) -> int:
    return next((i for i, bound in enumerate(LATENCY_MS) if ms <= bound), len(LATENCY_MS))


# --- reading ---------------------------------------------------------------------------------------
def windows(client: redis.Redis, ref: str, since: float, window: int, now: float | None = None) -> dict[str, int]:
    """The sum of ``ref``'s windows from ``since`` to now."""
    now = now or time.time()
    starts = range(window_of(since, window), window_of(now, window) + 1, window)
    with client.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hgetall(keyspace.stats(ref, start))
        return _sum(pipe.execute())


def _sum(hashes: Iterable[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for h in hashes:
        for k, v in h.items():
            k = k.decode() if isinstance(k, bytes) else k
            total[k] = total.get(k, 0) + int(v)
    return total


def set_reference(client: redis.Redis, ref: str, counts: dict[str, int]) -> None:
    key = keyspace.reference(ref)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=counts)
        pipe.execute()


def reference(client: redis.Redis, ref: str) -> dict[str, int]:
    return _sum([client.hgetall(keyspace.reference(ref))])


def pairs(client: redis.Redis, live: str, candidate: str, window: int, ttl: int,
          now: float | None = None) -> list[list[float]]:
    """The shadow pairs still kept (the windows of the last ``ttl`` seconds), newest first, at
    most PAIRS_KEPT."""
    now = now or time.time()
    with client.pipeline(transaction=False) as pipe:
        for start in range(window_of(now, window), window_of(now - ttl - window, window) - 1, -window):
            pipe.lrange(keyspace.pairs(live, candidate, start), 0, -1)
        rows = [json.loads(raw) for chunk in pipe.execute() for raw in chunk]
    return rows[:PAIRS_KEPT]


# --- statistics ------------------------------------------------------------------------------------
def distribution(counts: dict[str, int], measure: str) -> dict[str, int]:
    prefix = {"score": "s:", "quality": "q:", "faces": "n:"}[measure]
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}


def psi(expected: dict[str, int], actual: dict[str, int]) -> float:
    """Population stability index of ``actual`` against ``expected`` (half a count in every bin)."""
    bins = sorted(set(expected) | set(actual))
    if not bins:
        return 0.0
    n_e = sum(expected.values()) + 0.5 * len(bins)
    n_a = sum(actual.values()) + 0.5 * len(bins)
    total = 0.0
    for b in bins:
        p, q = (actual.get(b, 0) + 0.5) / n_a, (expected.get(b, 0) + 0.5) / n_e
        total += (p - q) * math.log(p / q)
    return total


def chi_square_p(expected: dict[str, int], actual: dict[str, int], design_effect: float = 1.0) -> float:
    """p-value of a chi-square test that two count vectors come from one distribution. Bins
    with fewer than 5 counts in both are pooled; the chi-square tail is Wilson-Hilferty's.

    ``design_effect``: the statistic is divided by it (Rao and Scott's first-order correction):
    the faces of one photo are not independent draws (a group photo brings six small faces at
    once), so counting faces as if they were overstates the evidence; faces per image bounds it."""
    bins = sorted(set(expected) | set(actual))
    rows: list[tuple[int, int]] = []
    pooled = [0, 0]
    for b in bins:
        e, a = expected.get(b, 0), actual.get(b, 0)
        if e + a >= 5:
            rows.append((e, a))
        else:
            pooled[0] += e
            pooled[1] += a
    if sum(pooled):
        rows.append((pooled[0], pooled[1]))
    n_e, n_a = sum(r[0] for r in rows), sum(r[1] for r in rows)
    if len(rows) < 2 or not n_e or not n_a:
        return 1.0
    n = n_e + n_a
    stat = 0.0
    for e, a in rows:
        col = e + a
        for observed, total in ((e, n_e), (a, n_a)):
            fitted = col * total / n
            stat += (observed - fitted) ** 2 / fitted
    stat /= max(1.0, design_effect)
    k = len(rows) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def ks(expected: dict[str, int], actual: dict[str, int]) -> float:
    """Kolmogorov-Smirnov distance of two binned score distributions (ordered bins)."""
    n_e, n_a = sum(expected.values()), sum(actual.values())
    if not n_e or not n_a:
        return 0.0
    c_e = c_a = d = 0.0
    for b in sorted(set(expected) | set(actual), key=int):
        c_e += expected.get(b, 0) / n_e
        c_a += actual.get(b, 0) / n_a
        d = max(d, abs(c_e - c_a))
    return d


def drift(ref_counts: dict[str, int], current: dict[str, int], psi_threshold: float, p_threshold: float,
          min_faces: int) -> dict[str, Any]:
    """Each measure's PSI, p-value and verdict, and whether any drifts."""
    out: dict[str, Any] = {"faces": current.get("faces", 0), "reference_faces": ref_counts.get("faces", 0),
                           "judged": min(current.get("faces", 0), ref_counts.get("faces", 0)) >= min_faces,
                           "measures": {}}
    images = ref_counts.get("images", 0) + current.get("images", 0)
    per_image = (ref_counts.get("faces", 0) + current.get("faces", 0)) / images if images else 1.0
    for measure in MEASURES:
        e, a = distribution(ref_counts, measure), distribution(current, measure)
        row = {"psi": round(psi(e, a), 4), "p": chi_square_p(e, a, 1.0 if measure == "faces" else per_image)}
        if measure == "score":
            row["ks"] = round(ks(e, a), 4)
        row["drifted"] = out["judged"] and row["psi"] >= psi_threshold and row["p"] < p_threshold
        out["measures"][measure] = row
    out["drifted"] = any(m["drifted"] for m in out["measures"].values())
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def _finite(value: float) -> float | None:
    """Rounded, or None where it is undefined (fewer than 3 pairs, or every score alike): JSON has no NaN."""
    return round(value, 4) if math.isfinite(value) else None


def compare(pair_rows: list[list[float]], gates: dict[str, float]) -> dict[str, Any]:
    """The report on a candidate's shadow pairs, and whether it passes the gates: enough pairs,
    rank correlation with the live version, mean shift, and its extra time per image."""
    live = [r[0] for r in pair_rows]
    cand = [r[1] for r in pair_rows]
    diffs = [b - a for a, b in zip(live, cand)]
    n = len(pair_rows)
    report: dict[str, Any] = {"pairs": n}
    if n:
        report.update({
            "mean_difference": round(sum(diffs) / n, 3),
            "mean_abs_difference": round(sum(abs(d) for d in diffs) / n, 3),
            "max_abs_difference": round(max(abs(d) for d in diffs), 3),
            "rank_correlation": _finite(spearman(live, cand)),
            "live_ms": round(sorted(r[2] for r in pair_rows)[n // 2], 2),
            "shadow_ms": round(sorted(r[3] for r in pair_rows)[n // 2], 2),
        })
    checks = {
        "pairs": n >= gates["min_pairs"],
        "rank_correlation": report.get("rank_correlation") is not None
                            and report["rank_correlation"] >= gates["min_rank_correlation"],
        "mean_difference": n > 0 and abs(report["mean_difference"]) <= gates["max_mean_difference"],
    }
    report["gates"] = {**gates, "checks": checks}
    report["passed"] = all(checks.values())
    return report
