"""A models folder with a second version of the geometric scorer registered beside the default:
a real scorer (the same ONNX graph, other weights), for the tests of versions and routing."""

from __future__ import annotations

import shutil
from pathlib import Path

from aurum.config import REPO_ROOT
from aurum.scoring import geometric
from aurum.scoring.features import FEATURES
from aurum.scoring.manifest_entry import creation_record, write_model

LIVE_SCORER = f"{geometric.NAME}@{geometric.VERSION}"  # the default version (models/manifest.json)
CANDIDATE_VERSION = "2.0.1-equal"  # every feature weighted alike


def with_candidate(folder: Path) -> tuple[Path, str]:
    """``folder`` made a models folder (the repository's files linked, the manifest copied) with
    ``geometric_scorer@2.0.1-equal`` registered as a candidate; returns it and the candidate."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in (REPO_ROOT / "models").iterdir():
        target = folder / item.name
        if item.name == "manifest.json":
            shutil.copy(item, target)
        elif not target.exists():
            target.symlink_to(item)
    weights = {name: 1 / len(FEATURES) for name in FEATURES}
    write_model(folder, geometric.NAME, geometric.build_model(weights=weights), {
        "task": "scoring", "version": CANDIDATE_VERSION, "feature_set": list(FEATURES), "needs_embedding": False,
        "inputs": [{"name": "features", "shape": ["N", len(FEATURES)], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": ["N", 1], "dtype": "float32"},
                    {"name": "components", "shape": ["N", len(FEATURES)], "dtype": "float32"}],
        "postprocessing": {"weights": weights}, "licence": "Apache-2.0",
        "licence_file": "licences/AURUM-APACHE-2.0.txt", "card": "cards/geometric_scorer.md",
        "created": creation_record("tests/helpers/models.py", {"weights": "equal"}),
    })
    return folder, f"{geometric.NAME}@{CANDIDATE_VERSION}"
