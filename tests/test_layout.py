"""The import graph the layout promises (README, Layout): the API and the workers both import the
job service (service/) and the core (aurum/); the API imports nothing from workers/, the
service nothing from Flask, the API or the workers. (The core's own rule: tests/core/test_store.py.)"""

from __future__ import annotations

import ast
import dataclasses
import re
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


ENV_READ = re.compile(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]+)\"")


def _sources() -> list[Path]:
    paths = [p for package in ("aurum", "service", "api", "workers") for p in (ROOT / package).rglob("*.py")]
    return paths + [ROOT / "celeryconfig.py", ROOT / "flowerconfig.py"]


def test_every_variable_is_a_setting_and_in_the_readme() -> None:
    """Every environment variable the code reads is declared once in the settings (the core's,
    aurum.config.Settings, and the job service's on top, service.config.ServiceSettings), so
    `aurum config` prints it and a bad value fails at start, or is one of NOT_SETTINGS; only the
    settings read a setting's variable; the README's configuration table lists exactly them."""
    from service.config import ServiceSettings

    declared = {env for env, _, _ in ServiceSettings.describe()}
    read, read_directly = set(), {}
    for path in _sources():
        found = set(ENV_READ.findall(path.read_text()))
        read |= found
        if found & declared:
            read_directly[str(path.relative_to(ROOT))] = sorted(found & declared)
    assert read - declared - NOT_SETTINGS == set()
    assert read_directly == {}  # e.g. sealing reading AURUM_ENCRYPTION_KEYS itself
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert declared - table == set() and table - declared <= NOT_SETTINGS


def test_settings_are_built_once_per_process_and_passed_down() -> None:
    """Settings come from the environment at a process's entry: the CLI (once per command), the
    job service's :func:`service.config.current` (the API's factory, the Celery configuration and
    the workers take that one object), and a bare ``Pipeline()`` for library use. Every other
    module is handed its settings. The core's settings hold no job-service setting."""
    from aurum.config import Settings
    from service import config
    from service.config import ServiceSettings

    sites = sorted(str(p.relative_to(ROOT)) for p in _sources() if "from_env(" in p.read_text())
    assert sites == ["aurum/cli.py", "aurum/config.py", "aurum/pipeline.py", "service/config.py"]
    assert config.current() is config.current()
    core = {f.name for f in dataclasses.fields(Settings)}
    assert core < {f.name for f in dataclasses.fields(ServiceSettings)}
    assert not core & {"redis_url", "encryption_keys", "auth", "sentry_dsn", "cache_ttl", "task_time_limit"}


def test_tests_mirror_the_tree_and_share_helpers_not_test_modules() -> None:
    """tests/core, service, api and workers test aurum/, service/, api/ and workers/; what the
    tests share is in tests/conftest.py (fixtures) or tests/helpers/, never imported from another
    test module (or from conftest)."""
    tests = ROOT / "tests"
    assert {"core", "service", "api", "workers", "chaos", "helpers"} <= {p.name for p in tests.iterdir() if p.is_dir()}
    offending = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.split(".")[-1]
                if last.startswith("test_") or last == "conftest":
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert offending == []
