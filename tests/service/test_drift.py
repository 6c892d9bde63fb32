"""The drift verdict on real scores (bench/drift.py, a smaller run): two samples of the
development set's photos under ordinary edits rarely drift from each other; the same photos
darkened or blurred do, nearly always."""

from __future__ import annotations

import pytest

from aurum.pipeline import Pipeline
from bench.drift import summaries, trials

from tests.chaos.common import record
from tests.helpers.devset import devset_photos

EDITS = ["flip", "resize 0.75x", "jpeg q50", "rotate +5", "brightness -20%", "gamma 1.5"]


@pytest.mark.slow
def test_unshifted_traffic_rarely_drifts_and_shifted_traffic_does(pipeline: Pipeline) -> None:
    unshifted, shifted = summaries(pipeline, devset_photos(), EDITS, ["darkened x0.35", "blurred 6% of the face"])
    report = trials(unshifted, shifted, 300, psi=0.25, p=0.001)
    record("drift-verdict", report)
    assert report["faces_per_window_median"] >= 50
    assert report["false_alarm_rate"] <= 0.02, report  # ~0.003 by construction (3 measures at p < 0.001)
    assert report["detection_rate"]["darkened x0.35"] >= 0.95, report
    assert report["detection_rate"]["blurred 6% of the face"] >= 0.95, report
