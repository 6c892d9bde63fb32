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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from flask import Flask, Response, current_app, g, request
from limits import parse_many

from service import keyspace

from .auth import client_id
from .errors import RateLimited

# KEYS: one counter per window. ARGV: each window's amount, seconds and cost, in threes.
# Returns the verdict (1 refused, 0 counted), then each window's count and milliseconds left.
SCRIPT = """
local refused = 0
local out = {0}
for i, key in ipairs(KEYS) do
  local amount, seconds, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local used = tonumber(redis.call('GET', key) or '0')
  local left = redis.call('PTTL', key)
  if left < 0 then left = seconds * 1000 end
  if used + cost > amount then refused = 1 end
  out[2 * i] = used
  out[2 * i + 1] = left
end
if refused == 0 then
  for i, key in ipairs(KEYS) do
    local cost = tonumber(ARGV[3 * i])
    local n = redis.call('INCRBY', key, cost)
    if n == cost then redis.call('PEXPIRE', key, tonumber(ARGV[3 * i - 1]) * 1000) end
    out[2 * i] = n
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


class Limiter:
    def __init__(self, client: redis.Redis) -> None:
        self.script = client.register_script(SCRIPT)

    def hit(self, budgets: list[tuple[str, str, str, int]]) -> Verdict:
        """Check and count ``budgets`` (scope, identity, rate, cost), every window at once."""
        keys: list[str] = []
        args: list[int] = []
        spans: list[tuple[Window, int]] = []
        for scope, identity, rate, cost in budgets:
            for w in windows(rate):
                keys.append(f"{keyspace.LIMITS}:{scope}:{identity}:{w.amount}/{w.seconds}")
                args += [w.amount, w.seconds, cost]
                spans.append((w, cost))
        now = time.time()
        out = self.script(keys=keys, args=args)
        rows = [(w, cost, int(out[1 + 2 * i]), int(out[2 + 2 * i])) for i, (w, cost) in enumerate(spans)]
        tightest = min(rows, key=lambda r: r[0].amount - r[2])
        refused = bool(out[0])
        over = [r for r in rows if r[2] + r[1] > r[0].amount] if refused else []
        return Verdict(refused=refused, limit=tightest[0].amount,
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
    """Before each /api/ request (after authentication): count it against its key's budget, and a
    batch's images against the image budget; 429 when either is spent."""
    if _exempt():
        return
    settings = current_app.extensions["aurum.settings"]
    budgets = [("key", client_id(), key_rate(), 1)]
    if request.endpoint == BATCH_ENDPOINT:
        budgets.append(("batch-images", client_id(), settings.batch_image_limit, batch_image_count()))
    try:
        verdict = current_app.extensions["aurum.limiter"].hit(budgets)
    except redis.RedisError:
        return  # unlimited while Redis is away; the request's own use of Redis answers 503
    g.rate_verdict = verdict
    if verdict.refused:
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
