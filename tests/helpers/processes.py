"""Stopping the servers the tests start."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen | None, timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; nothing if it is
    not running."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
