"""The import graph the layout promises (README, Layout): the API and the workers both import the
job service (service/) and the core (aurum/); the API imports nothing from workers/, the
service nothing from Flask, the API or the workers. (The core's own rule: tests/test_store.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported(package: str) -> dict[str, set[str]]:
    """module path -> top-level names of every package it imports (function-local imports too)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("package,forbidden", [
    ("api", {"workers"}),
    ("service", {"flask", "flask_smorest", "api", "workers"}),
    ("workers", {"flask", "api"}),
])
def test_package_imports(package: str, forbidden: set[str]) -> None:
    modules = imported(package)
    assert len(modules) >= 3
    offending = {module: sorted(names & forbidden) for module, names in modules.items() if names & forbidden}
    assert offending == {}


# Read outside Settings on purpose: the fault-injection hook of the reliability tests (never set
# in a deployment), the client CLI's own defaults, and variables of the libraries underneath.
NOT_SETTINGS = {"AURUM_CHAOS", "AURUM_URL", "AURUM_API_KEY", "PROMETHEUS_MULTIPROC_DIR",
                "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BASIC_AUTH"}


def test_every_variable_is_a_setting_and_in_the_readme() -> None:
    """Every environment variable the code reads is declared once in aurum.config.Settings (so
    `aurum config` prints it and a bad value fails at start), or is one of NOT_SETTINGS; the
    README's configuration table lists exactly the settings."""
    import re

    from aurum.config import Settings

    declared = {env for env, _, _ in Settings.describe()}
    read = set()
    for package in ("aurum", "service", "api", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            read |= set(re.findall(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]+)\"", path.read_text()))
    for path in (ROOT / "celeryconfig.py", ROOT / "gunicorn.conf.py", ROOT / "flowerconfig.py"):
        read |= set(re.findall(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]+)\"", path.read_text()))
    assert read - declared - NOT_SETTINGS == set()
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert declared - table == set() and table - declared <= NOT_SETTINGS
