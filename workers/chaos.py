"""Fault injection for the reliability tests (tests/chaos, RELIABILITY.md). Off unless
``AURUM_CHAOS`` is set, which no deployment does:

    AURUM_CHAOS='{"crash": ["<sha256 of an image>"], "sleep": {"<sha256>": 60}, "stuck": {"<sha256>": 60}}'

``crash``: the worker process that takes a job with this image kills itself (SIGKILL), as a
decoder segfault would: the poison-message path. ``sleep``: the job hangs that many seconds,
interruptibly: the soft time-limit path. ``stuck``: it hangs deaf to the soft limit's signal, as
a native call that never returns would: only the hard limit (the pool kills the child) ends it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from functools import lru_cache


@lru_cache(maxsize=1)
def _plan(raw: str) -> dict:
    return json.loads(raw) if raw else {}


def inject(data: bytes) -> None:
    plan = _plan(os.environ.get("AURUM_CHAOS", ""))
    if not plan:
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest in plan.get("crash", ()):
        os.kill(os.getpid(), signal.SIGKILL)
    seconds = plan.get("sleep", {}).get(digest)
    if seconds:
        deadline = time.monotonic() + float(seconds)
        while time.monotonic() < deadline:  # interruptible, like real work: the soft limit can stop it
            time.sleep(0.05)
    seconds = plan.get("stuck", {}).get(digest)
    if seconds:
        # the soft limit is SIGUSR1 (billiard); held pending, it is never delivered while stuck
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            time.sleep(float(seconds))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
