"""Deployment files: they parse, and compose runs the same commands as the Procfile."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers.deploy import procfile

ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_the_procfile_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = procfile()
    for service, entry in (("api", "web"), ("worker", "worker"), ("flower", "flower")):
        assert compose["services"][service]["command"] == commands[entry], service
    assert "--appendonly" in compose["services"]["redis"]["command"]
    assert "./models:/models:ro" in compose["services"]["worker"]["volumes"]


def test_procfile_points_at_the_apps() -> None:
    import workers.tasks  # noqa: F401 - what the worker imports through the app's include list
    from api import create_app
    from workers.app import app

    commands = procfile()
    assert commands["worker"][:3] == ["celery", "-A", "workers.app"]
    assert commands["web"][:2] == ["gunicorn", "api:create_app()"] and callable(create_app)
    assert {"aurum.score_image", "aurum.score_batch", "aurum.score_fallback"} <= set(app.tasks)


def test_honcho_accepts_the_procfile() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "honcho", "check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "web, worker, flower" in out.stderr + out.stdout
