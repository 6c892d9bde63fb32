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
    assert commands["web"][:3] == ["python", "-m", "api.serve"] and callable(create_app)
    from api.serve import server

    assert server(commands["web"][3:]).target == "api:create_app"  # its arguments parse
    assert {"aurum.score_image", "aurum.score_batch", "aurum.score_fallback"} <= set(app.tasks)


def test_honcho_accepts_the_procfile() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "honcho", "check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "web, worker, flower" in out.stderr + out.stdout


def _compose_env() -> dict[str, str]:
    import os

    return {**os.environ, "AURUM_ENCRYPTION_KEYS": "k", "FLOWER_BASIC_AUTH": "u:p", "FLOWER_PROMETHEUS_PASSWORD": "p",
            "GRAFANA_ADMIN_PASSWORD": "g"}


def test_compose_config_validates() -> None:
    """docker-compose (Debian's, which scripts/test installs) checks the file against the
    compose schema, offline; a required secret left unset is refused by name."""
    import shutil
    import subprocess

    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (scripts/test installs Debian's)"
    checked = subprocess.run([binary, "config", "-q"], cwd=ROOT, env=_compose_env(), capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stderr
    env = _compose_env()
    del env["FLOWER_PROMETHEUS_PASSWORD"]
    refused = subprocess.run([binary, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "FLOWER_PROMETHEUS_PASSWORD" in refused.stderr


def test_every_compose_service_has_a_healthcheck_and_its_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "flower", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert ":latest" not in service.get("image", "") and (":" in service.get("image", ":")), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    mounted = {v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert {"./deploy/prometheus.yml", "./deploy/alerts.yml"} <= mounted


def test_the_image_has_what_the_processes_read_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {word for line in dockerfile.splitlines() if line.startswith("COPY") for word in line.split()[1:-1]}
    top_level = {p.name for p in ROOT.glob("*.py")}  # celeryconfig.py, flowerconfig.py
    assert top_level and top_level <= copied, f"not in the image: {sorted(top_level - copied)}"
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}
    assert packages <= copied, f"packages not in the image: {sorted(packages - copied)}"
    assert "requirements.lock" in copied and "-c requirements.lock" in dockerfile
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_the_dashboard_resolves_its_data_source_when_provisioned() -> None:
    """Grafana's file provisioning does not fill an export's ``__inputs``: every ``${VAR}`` the
    dashboard uses must be one of its own template variables (a data-source variable here)."""
    import json
    import re

    text = (ROOT / "deploy/grafana-dashboard.json").read_text()
    variables = {v["name"] for v in json.loads(text)["templating"]["list"]}
    used = set(re.findall(r"\$\{([A-Za-z_]+)\}", text))
    assert "DS_PROMETHEUS" in used and used <= variables, sorted(used - variables)
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/datasources.yml").read_text())["datasources"]
    assert [d["type"] for d in provisioned] == ["prometheus"]


def test_the_web_command_refuses_a_bad_setting_in_one_line() -> None:
    """The server checks the settings before it starts a worker: one line and an exit, not a
    traceback or workers that fail to boot over and over."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AURUM_RATE_LIMIT": "lots"}
    out = subprocess.run([sys.executable, "-m", "api.serve", "--bind", "127.0.0.1", "--port", "9"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "aurum: invalid setting: AURUM_RATE_LIMIT: not a rate limit: 'lots' (for example \"600/minute;30/second\")"]
