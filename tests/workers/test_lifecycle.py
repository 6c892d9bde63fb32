"""The shadow in a worker (workers/lifecycle.py) never fails its job: a shadow that would run the
pipeline again is skipped once the job has used its budget, and one that the soft time limit
strikes stops there, leaving the job its result."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis as redis_lib
from celery.exceptions import SoftTimeLimitExceeded

from aurum.pipeline import Pipeline
from aurum.schemas import ScoreOptions
from service import comparison
from workers import lifecycle, metrics, runtime

DETECTOR = "blazeface_full@mediapipe-0.6.0.1"


@pytest.fixture
def rp(redis_server):
    client = redis_lib.Redis.from_url(f"{redis_server.url}/6")
    client.flushdb()
    with client.pipeline(transaction=False) as pipe:
        pipe.client = client
        yield pipe
    client.flushdb()
    client.close()


def failures(role: str) -> float:
    return metrics.SHADOW_FAILURES.labels(role)._value.get()


def job(started: float) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(aurum_started=started))


def test_a_second_run_waits_for_time_left_in_the_job(rp, pipeline: Pipeline, astronaut: bytes) -> None:
    result = pipeline.score(astronaut)
    before = failures("detector")
    task = job(time.time() - 100)  # the job has used 100 s of a 10 s budget
    lifecycle._shadow(task, rp, "detector", DETECTOR, pipeline, [(astronaut, result)], ScoreOptions(), 10)
    assert failures("detector") == before + 1 and not rp.command_stack  # skipped: nothing recorded


def test_the_soft_limit_during_a_shadow_stops_it_not_the_job(rp, pipeline: Pipeline, astronaut: bytes,
                                                             monkeypatch) -> None:
    result = pipeline.score(astronaut)

    def struck(models=None):  # the soft time limit's signal, arriving during the second run
        raise SoftTimeLimitExceeded()
    monkeypatch.setattr(runtime, "pipeline", struck)
    task = job(time.time())
    lifecycle._shadow(task, rp, "detector", DETECTOR, pipeline, [(astronaut, result)] * 2, ScoreOptions(), 60)
    assert task.request.aurum_shadow_stopped and not rp.command_stack


def test_a_scorer_shadow_pairs_every_face_given_a_score(rp, pipeline: Pipeline, astronaut: bytes) -> None:
    result = pipeline.score(astronaut)
    task = job(time.time() - 100)  # out of budget: a scorer shadow needs no second run, so it still runs
    lifecycle._shadow(task, rp, "scorer", pipeline.roles["scorer"], pipeline, [(astronaut, result)], ScoreOptions(), 10)
    rp.execute()
    rows = comparison.pairs(rp.client, pipeline.roles["scorer"], pipeline.roles["scorer"], 300, 3600)
    given = result["faces"][0]["score"]["value"]
    assert len(rows) == 1 and rows[0][0] == given
    assert rows[0][1] == pytest.approx(given, abs=0.011)  # itself, from the rounded features: within 0.01
