"""Per-key rate limits on Redis, one round trip a request: one budget per key across every /api/
endpoint (fixed windows: the key's own rate when it has one, e.g. "600/minute;30/second"), and,
for batches, a separate budget of images submitted, checked in the same call.

Every window of a request is checked and counted by one Lua script (:data:`SCRIPT`): a request
that would take any window over its amount is refused (429 ``RATE_LIMITED`` with Retry-After)
and counts against none, so a client that keeps retrying too early does not push its own window
further out. Flask-Limiter, before, made four round trips a request (two counts, then a read and
a TTL for the headers): 24 % of a submission's time in the API process.

The rate strings are ``limits``' grammar (the key store validates a key's rate with it too).
Redis unreachable: the limit is skipped rather than the request failed here; the request itself
then needs Redis and gets its clear 503.

An API key is looked up in the same call: api/auth.py leaves the key's id in ``g.key_id``, and
the script reads the key's record, refuses an unknown or revoked one (counting nothing) and
returns it; the key's rate is remembered per process, so the windows to count are known before
the record is read (a key whose rate differs from the remembered one is counted again, once, with
its own). Two round trips a request became one (bench/profile_api.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import redis
from flask import Flask, Response, current_app, g, request
from cachetools import LRUCache
from limits import parse_many

from service import keyspace

from service.keys import ApiKey

from .auth import InvalidApiKey, authorize, client_id
from .errors import RateLimited

# KEYS: an API key's record (when ARGV[1] is not ""), then one counter per window. ARGV[1]: ""
# (no key to check) or "=" and the rate assumed for the key ("=" alone: the default); then each
# window's amount, seconds and cost, in threes. Returns the verdict (0 counted, 1 refused, 2 no
# such active key, 3 the key's rate is not the one assumed), the key's record (or false), then
# each window's count and milliseconds left.
SCRIPT = """
local first, record = 0, false
if ARGV[1] ~= '' then
  first = 1
  record = redis.call('GET', KEYS[1])
  if not record then return {2, false} end
  local key = cjson.decode(record)
  if key.revoked then return {2, false} end
  local rate = key.rate
  if type(rate) ~= 'string' then rate = '' end
  if '=' .. rate ~= ARGV[1] then return {3, record} end
end
local refused = 0
local out = {0, record}
local n = #KEYS - first
for i = 1, n do
  local key = KEYS[first + i]
  local amount, seconds, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local used = tonumber(redis.call('GET', key) or '0')
  local left = redis.call('PTTL', key)
  if left < 0 then left = seconds * 1000 end
  if used + cost > amount then refused = 1 end
  out[1 + 2 * i] = used
  out[2 + 2 * i] = left
end
if refused == 0 then
  for i = 1, n do
    local key = KEYS[first + i]
    local cost = tonumber(ARGV[3 * i + 1])
    local c = redis.call('INCRBY', key, cost)
    if c == cost then redis.call('PEXPIRE', key, tonumber(ARGV[3 * i]) * 1000) end
    out[1 + 2 * i] = c
  end
end
out[1] = refused
return out
"""

BATCH_ENDPOINT = "ml.score_batch"


@dataclass(frozen=True)
class Window:
    amount: int
    seconds: int


@lru_cache(maxsize=256)
def windows(rate: str) -> tuple[Window, ...]:
    """"600/minute;30/second" -> its windows (``limits``' grammar; ValueError if it is not one)."""
    return tuple(Window(item.amount, item.get_expiry()) for item in parse_many(rate))


@dataclass(frozen=True)
class Verdict:
    refused: bool
    limit: int        # the tightest window: its amount, what is left of it and when it resets
    remaining: int
    reset_at: float
    retry_after: int  # seconds until every window that refused has reset (0 when counted)


Budget = tuple[str, str, str, int]  # scope, identity, rate, cost


class Limiter:
    def __init__(self, client: redis.Redis) -> None:
        self.script = client.register_script(SCRIPT)
        self._rates: LRUCache = LRUCache(maxsize=4096)  # key id -> its rate ("" the default), as last read
        self._lock = threading.Lock()  # cachetools caches are not thread-safe

    def hit(self, budgets: list[Budget]) -> Verdict:
        """Check and count ``budgets`` (scope, identity, rate, cost), every window at once."""
        return self._run(budgets, None)[1]

    def hit_key(self, key_id: str, budgets_for: Callable[[str | None], list[Budget]]
                ) -> tuple[ApiKey | None, Verdict | None]:
        """The active API key ``key_id`` (None: unknown or revoked, nothing counted) and the
        verdict on ``budgets_for(its rate)`` (None when there are no budgets), in one call."""
        with self._lock:
            rate = self._rates.get(key_id, "")
        for _ in range(2):  # a second try only when this process had not seen the key's rate (fixed at creation)
            record, verdict = self._run(budgets_for(rate or None), (keyspace.api_key(key_id), rate))
            if record is None:
                return None, None
            key = ApiKey(**json.loads(record))
            if verdict is not None or key.rate == (rate or None):
                return key, verdict
            rate = key.rate or ""
            with self._lock:
                self._rates[key_id] = rate
        raise redis.RedisError("the key's rate changed between two tries")

    def _run(self, budgets: list[Budget], key: tuple[str, str] | None) -> tuple[bytes | None, Verdict | None]:
        keys: list[str] = [key[0]] if key else []
        args: list[int | str] = ["=" + key[1] if key else ""]
        spans: list[tuple[Window, int]] = []
        for scope, identity, rate, cost in budgets:
            for w in windows(rate):
                keys.append(f"{keyspace.LIMITS}:{scope}:{identity}:{w.amount}/{w.seconds}")
                args += [w.amount, w.seconds, cost]
                spans.append((w, cost))
        now = time.time()
        out = self.script(keys=keys, args=args)
        code, record = int(out[0]), out[1] or None
        if code in (2, 3) or not spans:  # no such key / another rate: nothing was counted
            return record, None
        rows = [(w, cost, int(out[2 + 2 * i]), int(out[3 + 2 * i])) for i, (w, cost) in enumerate(spans)]
        tightest = min(rows, key=lambda r: r[0].amount - r[2])
        refused = code == 1
        over = [r for r in rows if r[2] + r[1] > r[0].amount] if refused else []
        return record, Verdict(refused=refused, limit=tightest[0].amount,
                               remaining=max(0, tightest[0].amount - tightest[2]), reset_at=now + tightest[3] / 1000,
                               retry_after=max((max(1, math.ceil(r[3] / 1000)) for r in over), default=0))


def _exempt() -> bool:
    """Health, metrics, docs, the page and CORS preflights spend no key's budget."""
    return not request.path.startswith("/api/") or request.method == "OPTIONS"


def key_rate() -> str:
    client = g.get("client")
    if client is not None and client.rate:
        return client.rate
    return current_app.extensions["aurum.settings"].rate_limit


def batch_image_count() -> int:
    """The cost of a batch request against the image budget: its number of images."""
    if request.is_json:
        body = request.get_json(silent=True)
        images = body.get("images") if isinstance(body, dict) else None
        return len(images) if isinstance(images, list) and images else 1
    return max(1, len(request.files.getlist("images")))


def check() -> None:
    """Before each /api/ request (after authentication): look up the API key api/auth.py left
    for us, count the request against its key's budget, and a batch's images against the image
    budget; 429 when either is spent."""
    if _exempt():
        return
    settings = current_app.extensions["aurum.settings"]
    limiter: Limiter = current_app.extensions["aurum.limiter"]
    key_id = g.pop("key_id", None)
    batch = request.endpoint == BATCH_ENDPOINT
    if key_id is not None:
        # Redis unreachable here is the request's 503: the key cannot be checked without it.
        # A batch's key is checked first, and its images counted after: the body is not read
        # (to count them) for a request whose key is not valid.
        key, verdict = limiter.hit_key(key_id, lambda rate: [] if batch else [("key", key_id, rate or settings.rate_limit, 1)])
        if key is None:
            raise InvalidApiKey()
        g.client = key
        authorize()
        if not batch:
            _apply(verdict)
            return
    budgets = [("key", client_id(), key_rate(), 1)]
    if batch:
        budgets.append(("batch-images", client_id(), settings.batch_image_limit, batch_image_count()))
    try:
        verdict = limiter.hit(budgets)
    except redis.RedisError:
        return  # unlimited while Redis is away; the request's own use of Redis answers 503
    _apply(verdict)


def _apply(verdict: Verdict | None) -> None:
    g.rate_verdict = verdict
    if verdict is not None and verdict.refused:
        raise RateLimited(retry_after=verdict.retry_after)


def headers(response: Response) -> Response:
    """X-RateLimit-Limit / -Remaining / -Reset (epoch seconds) of the tightest window."""
    verdict = g.get("rate_verdict")
    if verdict is not None:
        response.headers["X-RateLimit-Limit"] = str(verdict.limit)
        response.headers["X-RateLimit-Remaining"] = str(verdict.remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(verdict.reset_at))
    return response


def init_app(app: Flask, client: redis.Redis) -> None:
    app.extensions["aurum.limiter"] = Limiter(client)
    app.before_request(check)
    app.after_request(headers)
