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
