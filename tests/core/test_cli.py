"""The ``aurum`` command as a user runs it: a subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.photos import PHOTOS

ROOT = Path(__file__).resolve().parents[2]


def aurum(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurum", *args], capture_output=True, text=True, timeout=120)


def test_score_prints_a_summary() -> None:
    out = aurum("score", str(PHOTOS / "astronaut.png"))
    assert out.returncode == 0, out.stderr
    assert "1 face(s)" in out.stdout and "score" in out.stdout and "quality passed" in out.stdout


def test_score_json_one_line_per_image_errors_included(tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    missing = tmp_path / "missing.jpg"
    out = aurum("score", "--json", "--embedding", str(PHOTOS / "astronaut.png"), str(bad),
                str(PHOTOS / "coffee.png"), str(missing))
    assert out.returncode == 1
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 4
    assert len(lines[0]["faces"]) == 1 and len(lines[0]["faces"][0]["embedding"]) == 128
    assert "landmarks" not in lines[0]["faces"][0]
    assert lines[1]["error"]["code"] == "UNSUPPORTED_FORMAT"
    assert lines[2]["error"]["code"] == "NO_FACE"
    assert lines[3]["error"]["code"] == "INVALID_INPUT"
    assert "Traceback" not in out.stderr


def test_bad_files_give_one_line_each_and_no_traceback(tmp_path) -> None:
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((PHOTOS / "rocket.jpg").read_bytes()[:3000])
    out = aurum("score", str(truncated), str(PHOTOS / "chelsea.png"))
    assert out.returncode == 1
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and "CORRUPT_IMAGE" in errors[0] and "NO_FACE" in errors[1]
    assert "Traceback" not in out.stderr


def test_draw_writes_the_annotated_photo(tmp_path) -> None:
    target = tmp_path / "out.png"
    out = aurum("score", "--draw", str(target), str(PHOTOS / "astronaut.png"))
    assert out.returncode == 0, out.stderr
    drawn = np.asarray(Image.open(target).convert("RGB")).astype(int)
    original = np.asarray(Image.open(PHOTOS / "astronaut.png").convert("RGB")).astype(int)
    assert drawn.shape == original.shape
    changed = np.abs(drawn - original).sum(axis=2) > 60
    assert changed[60:190, 170:280].mean() > 0.05   # marks on the face
    assert changed[300:, :].mean() < 0.01           # and not elsewhere


def test_invalid_option_is_a_clear_error() -> None:
    out = aurum("score", "--max-faces", "0", str(PHOTOS / "astronaut.png"))
    assert out.returncode == 2 and "INVALID_OPTION" in out.stderr and "Traceback" not in out.stderr


def test_models_list_and_verify() -> None:
    listed = aurum("models", "list", "--json")
    assert listed.returncode == 0
    names = {row["name"] for row in json.loads(listed.stdout)}
    assert {"yunet", "facemesh", "sface", "geometric_scorer", "face_geometry"} <= names
    verified = aurum("models", "verify")
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.count("ok ") == len(names)


def test_config_documents_every_setting() -> None:
    out = aurum("config")
    assert out.returncode == 0
    assert "AURUM_MAX_IMAGE_BYTES=10485760" in out.stdout and "AURUM_DETECTOR" in out.stdout


@pytest.mark.parametrize("env", [{"AURUM_DETECTOR": "foo"}, {"AURUM_MAX_FACES": "abc"}, {"AURUM_AUTH": "maybe"}])
def test_a_bad_setting_is_one_clear_line_everywhere(env: dict) -> None:
    """The CLI, the worker and the API refuse a bad value at start with one line naming the
    variable, never a traceback."""
    import os

    name = next(iter(env))
    full = {**os.environ, **env}
    commands = [[sys.executable, "-m", "aurum", "config"],
                [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo"],
                [sys.executable, "-c", "import api; api.create_app()"]]
    for command in commands:
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=full, cwd=ROOT)
        assert out.returncode != 0, command
        assert name in out.stderr and "Traceback" not in out.stderr, (command, out.stderr)


def test_an_unreachable_redis_is_named_without_its_password() -> None:
    from tests.helpers.redis_server import free_port

    env = {**os.environ, "AURUM_REDIS_URL": f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"}
    out = subprocess.run([sys.executable, "-m", "aurum", "keys", "list"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 2 and "unreachable" in out.stderr
    assert "hunter2-secret" not in out.stderr + out.stdout and ":***@127.0.0.1" in out.stderr
