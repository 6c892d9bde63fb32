"""Which model versions serve a job: the routing policy, kept in Redis and changed at run time.

For each role (``detector``, ``scorer``: aurum.pipeline.ROLES) the policy names the live version
(none: the workers' default, AURUM_DETECTOR / AURUM_SCORER at the manifest's default version),
and optionally a candidate with a mode:

- ``canary``: a share of jobs, drawn per job;
- ``ab``: a share of API keys (``sticky=key``) or of images (``sticky=image``), always the same
  ones, so that a client (or a photo) sees one version;
- ``shadow``: every job is served by the live version and also scored by the candidate, whose
  result is recorded for comparison (service/comparison.py) and never returned;
- chosen API keys (their 16-hex ids) always get the candidate, whatever the mode.

The API decides a job's route when it accepts it (it knows the key and the image) and sends it
with the job (the ``aurum_route`` header); the cache key includes it. Every change bumps the
policy's revision and is appended to an audit stream (who, what, when). Readers keep the policy
for :data:`REFRESH` seconds, so a change takes effect within that, without a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from . import keyspace

from aurum.pipeline import ROLES  # the pipeline's models a route chooses versions of

MODES = ("off", "canary", "ab", "shadow")
STICKY = ("key", "image")
REFRESH = 1.0      # seconds a reader keeps the policy it read
AUDIT_KEPT = 1000  # the newest policy changes


TASKS = {"detector": "detection", "scorer": "scoring"}  # the manifest task a role's versions have


class RoutingError(ValueError):
    """A policy change that cannot be made (unknown version, nothing to roll back...)."""


def canonical(catalogue: Any, role: str, ref: str) -> str:
    """``ref`` as ``name@version`` once checked against what the workers can serve
    (``catalogue``: service.lifecycle.Catalogue) for a version that can take ``role``."""
    if role not in ROLES:
        raise RoutingError(f"role: one of {', '.join(ROLES)}, not {role!r}")
    key = catalogue.ref(ref)
    if catalogue.task(key) != TASKS[role]:
        raise RoutingError(f"{key} is a {catalogue.task(key)} model, not a {role}")
    return key


@dataclass
class Rule:
    """One role's routing."""
    live: str | None = None                 # name@version; None: the workers' default
    candidate: str | None = None            # name@version
    mode: str = "off"
    share: float = 0.0                      # canary and ab: the candidate's share, 0-1
    sticky: str = "key"                     # ab: what a draw sticks to
    keys: list[str] = field(default_factory=list)  # API key ids always given the candidate
    previous: list[str | None] = field(default_factory=list)  # lives before this one, newest last

    def clear_candidate(self) -> None:
        self.candidate, self.mode, self.share, self.keys = None, "off", 0.0, []

    def check(self) -> None:
        if self.mode not in MODES:
            raise RoutingError(f"mode: one of {', '.join(MODES)}, not {self.mode!r}")
        if self.sticky not in STICKY:
            raise RoutingError(f"sticky: one of {', '.join(STICKY)}, not {self.sticky!r}")
        if not 0.0 <= self.share <= 1.0:
            raise RoutingError(f"share: between 0 and 1, not {self.share}")
        if (self.mode != "off" or self.keys) and not self.candidate:
            raise RoutingError(f"mode {self.mode} needs a candidate")
        if self.candidate and self.candidate == self.live:
            raise RoutingError(f"{self.candidate} is already live")
        if any(not re.fullmatch(r"[0-9a-f]{16}", k) for k in self.keys):
            raise RoutingError("keys: API key ids, 16 hex digits each (aurum keys list)")


@dataclass
class Policy:
    revision: int = 0
    updated_at: float = 0.0
    updated_by: str = ""
    rules: dict[str, Rule] = field(default_factory=dict)

    def rule(self, role: str) -> Rule:
        if role not in ROLES:
            raise RoutingError(f"role: one of {', '.join(ROLES)}, not {role!r}")
        return self.rules.setdefault(role, Rule())

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "updated_at": self.updated_at, "updated_by": self.updated_by,
                "rules": {role: dataclasses.asdict(rule) for role, rule in sorted(self.rules.items())}}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Policy":
        known = {f.name for f in dataclasses.fields(Rule)}  # a field a newer release added: ignored
        return cls(revision=doc.get("revision", 0), updated_at=doc.get("updated_at", 0.0),
                   updated_by=doc.get("updated_by", ""),
                   rules={role: Rule(**{k: v for k, v in rule.items() if k in known})
                          for role, rule in doc.get("rules", {}).items() if role in ROLES})

    def refs(self) -> set[str]:
        """Every version the policy names: what workers load ahead of their first job."""
        return {r for rule in self.rules.values() for r in (rule.live, rule.candidate) if r}


def _bucket(*parts: str) -> float:
    """A uniform draw in [0, 1) fixed by ``parts``."""
    return int(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12], 16) / 16 ** 12


def decide(policy: Policy, job_id: str, owner: str, image_sha256: str) -> dict[str, Any]:
    """A job's route: ``models`` (role -> version, only where the policy chooses one), ``arms``
    (role -> live or candidate) and ``shadow`` (role -> the candidate that also scores it)."""
    models: dict[str, str] = {}
    arms: dict[str, str] = {}
    shadow: dict[str, str] = {}
    for role, rule in sorted(policy.rules.items()):
        served, arm = rule.live, "live"
        if rule.candidate:
            if owner[:16] in rule.keys:
                served, arm = rule.candidate, "candidate"
            elif rule.mode == "canary" and _bucket(role, "job", job_id) < rule.share:
                served, arm = rule.candidate, "candidate"
            elif rule.mode == "ab":
                sticky = owner if rule.sticky == "key" else image_sha256
                if _bucket(role, rule.sticky, sticky) < rule.share:
                    served, arm = rule.candidate, "candidate"
            elif rule.mode == "shadow":
                shadow[role] = rule.candidate
        if served:
            models[role] = served
        arms[role] = arm
    route: dict[str, Any] = {"models": models, "arms": arms}
    if shadow:
        route["shadow"] = shadow
    return route


# --- storage -----------------------------------------------------------------------------------
def load(client: redis.Redis) -> Policy:
    raw = client.get(keyspace.ROUTING)
    return Policy.from_dict(json.loads(raw)) if raw else Policy()


def change(client: redis.Redis, who: str, action: str, edit: Callable[[Policy], None]) -> Policy:
    """Apply ``edit`` to the stored policy atomically (optimistic: WATCH, retried on a concurrent
    change), bump its revision and append the change to the audit stream."""
    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keyspace.ROUTING)
                raw = pipe.get(keyspace.ROUTING)
                policy = Policy.from_dict(json.loads(raw)) if raw else Policy()
                before = policy.to_dict()
                edit(policy)
                for rule in policy.rules.values():
                    rule.check()
                policy.revision += 1
                policy.updated_at, policy.updated_by = time.time(), who
                doc = json.dumps(policy.to_dict(), sort_keys=True)
                pipe.multi()
                pipe.set(keyspace.ROUTING, doc)
                pipe.xadd(keyspace.ROUTING_AUDIT, {"at": policy.updated_at, "by": who, "action": action,
                                                   "revision": policy.revision, "before": json.dumps(before["rules"]),
                                                   "after": json.dumps(policy.to_dict()["rules"])},
                          maxlen=AUDIT_KEPT, approximate=True)
                pipe.execute()
                return policy
            except redis.WatchError:
                continue


def audit(client: redis.Redis, count: int = 50) -> list[dict[str, Any]]:
    """The newest policy changes, newest first."""
    out = []
    for entry_id, fields in client.xrevrange(keyspace.ROUTING_AUDIT, count=count):
        doc = {k.decode(): v.decode() for k, v in fields.items()}
        out.append({"id": entry_id.decode(), "at": float(doc["at"]), "by": doc["by"], "action": doc["action"],
                    "revision": int(doc["revision"]), "before": json.loads(doc["before"]),
                    "after": json.loads(doc["after"])})
    return out


# --- the changes the CLI and the admin API make ----------------------------------------------------
def route(client: redis.Redis, who: str, role: str, candidate: str | None, mode: str, share: float = 0.0,
          sticky: str = "key", keys: list[str] | None = None) -> Policy:
    """Set a role's candidate and mode (``off``, or no candidate, clears it)."""
    def edit(policy: Policy) -> None:
        rule = policy.rule(role)
        if mode == "off" and not keys:
            rule.clear_candidate()
            return
        rule.candidate, rule.mode, rule.share, rule.sticky = candidate, mode, share, sticky
        rule.keys = [k.strip().lower()[:16] for k in keys or []]
    return change(client, who, f"route {role} {mode} {candidate or ''}".strip(), edit)


def promote(client: redis.Redis, who: str, role: str, version: str) -> Policy:
    """Make ``version`` live for every job of ``role``; the version it replaces is remembered
    for :func:`rollback`. A candidate being promoted stops being one."""
    def edit(policy: Policy) -> None:
        rule = policy.rule(role)
        if rule.live == version:
            raise RoutingError(f"{version} is already live")
        rule.previous = (rule.previous + [rule.live])[-10:]
        rule.live = version
        if rule.candidate == version:
            rule.clear_candidate()
    return change(client, who, f"promote {role} {version}", edit)


def rollback(client: redis.Redis, who: str, role: str) -> Policy:
    """Make the version live before the last promotion live again (and stop any candidate)."""
    def edit(policy: Policy) -> None:
        rule = policy.rule(role)
        if not rule.previous:
            raise RoutingError(f"nothing to roll back: {role} has not been promoted")
        rule.live = rule.previous.pop()
        rule.clear_candidate()
    return change(client, who, f"rollback {role}", edit)


class Router:
    """The policy as a process reads it: kept :data:`REFRESH` seconds; while Redis is away, the
    last one read (a route is an optimisation of who serves, never a reason to refuse a job)."""

    def __init__(self, client: redis.Redis, refresh: float = REFRESH) -> None:
        self.client, self.refresh = client, refresh
        self._policy, self._read_at = Policy(), -refresh
        self._lock = threading.Lock()

    def policy(self) -> Policy:
        if time.monotonic() - self._read_at >= self.refresh:
            with self._lock:
                if time.monotonic() - self._read_at >= self.refresh:
                    try:
                        self._policy = load(self.client)
                    except (redis.RedisError, ValueError, TypeError, KeyError, AttributeError):
                        pass  # Redis away, or a policy this release cannot read: the last one read
                    self._read_at = time.monotonic()
        return self._policy

    def decide(self, job_id: str, owner: str, image_sha256: str) -> dict[str, Any]:
        return decide(self.policy(), job_id, owner, image_sha256)
