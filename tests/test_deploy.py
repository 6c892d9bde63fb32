"""Deployment files: they parse, and compose runs the same worker command as the Procfile."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = shlex.split(command.replace("${AURUM_WORKER_CONCURRENCY:-2}", "2"))
    return entries


def test_compose_worker_runs_the_procfile_command() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["command"] == procfile()["worker"]
    assert "--appendonly" in compose["services"]["redis"]["command"]
    assert "./models:/models:ro" in compose["services"]["worker"]["volumes"]


def test_procfile_worker_points_at_the_celery_app() -> None:
    import workers.tasks  # noqa: F401 - what the worker imports through the app's include list
    from workers.app import app

    assert procfile()["worker"][:3] == ["celery", "-A", "workers.app"]
    assert {"aurum.score_image", "aurum.score_batch"} <= set(app.tasks)
