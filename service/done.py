"""Job-finished announcements, so that a ``?wait=`` request blocks on Redis instead of polling.

A worker appends an entry to a short Redis stream per job after each run of the job ends (its
result, or its failure, is already stored then: Celery's ``task_postrun`` comes after the store).
Waiters ``XREAD BLOCK`` from the last entry they saw: an announcement made before they started
waiting is still there, and every waiter of a job (coalesced followers too) sees it. A run that
ends without a final state (a retry, a hand-over to the fallback) also announces; the waiter
reads the status, finds the job still queued and waits for the next entry.
"""

from __future__ import annotations

from functools import lru_cache

import redis

from . import keyspace

TTL = 120  # seconds; waiters arrive within ?wait= (at most AURUM_MAX_WAIT) of each other


# Not for a job deleted meanwhile (its tombstone set): checked in the same step as the XADD, so
# that a DELETE's removal of the stream cannot fall between the check and the write.
_ANNOUNCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', 8, '*', 'd', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def announce(client: redis.Redis, job_id: str) -> None:
    """Announce that a run of the job ended (its outcome is stored)."""
    _announce(client)(keys=[keyspace.done(job_id), keyspace.deleted(job_id)], args=[TTL])


@lru_cache(maxsize=8)
def _announce(client: redis.Redis):
    """The script, registered once per client (every job's end runs it)."""
    return client.register_script(_ANNOUNCE)


def wait(client: redis.Redis, job_id: str, after: str, timeout: float) -> str:
    """Block up to ``timeout`` seconds for an entry after ``after`` ("0": any); the id of the
    newest entry seen, or ``after`` when none came."""
    block = int(timeout * 1000)
    if block <= 0:
        return after
    reply = client.xread({keyspace.done(job_id): after}, count=8, block=block)
    if not reply:
        return after
    _, entries = reply[0]
    newest = entries[-1][0]
    return newest.decode() if isinstance(newest, bytes) else newest
