"""The Procfile's commands, as the tests run them."""

from __future__ import annotations

import re
import shlex

from . import ROOT


def procfile(env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Procfile commands with ${VAR:-default} expanded (from ``env``, else the default)."""
    env = env or {}
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            command = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), command)
            words = shlex.split(command)
            while words and re.match(r"^[A-Z_]+=", words[0]):  # leading VAR=value assignments
                words.pop(0)
            entries[name.strip()] = words
    return entries
