"""The short atheris run CI does on the image decoder (the long one is in RELIABILITY.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decoder_survives_a_short_fuzzing_run(tmp_path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "fuzz/fuzz_decode.py"), "-runs=30000", "-rss_limit_mb=2048",
                          str(tmp_path / "corpus")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr
