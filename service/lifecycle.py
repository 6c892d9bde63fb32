"""The model lifecycle's operations, shared by ``aurum models ...`` and the admin API:

    train-scorer -> candidate (registered beside the default) -> shadow -> canary -> promote
                                                                     \\-> rollback

Each step that gives a candidate traffic (canary, A/B, chosen keys, promotion) is gated by the
comparison report of its shadow pairs (service/comparison.py: enough pairs, rank correlation,
mean shift; AURUM_PROMOTE_*), unless forced; every change is audited (service/routing.py).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from aurum.store import ModelStore

from . import comparison, routing
from .config import ServiceSettings


class GateFailed(routing.RoutingError):
    """The comparison report does not let the candidate have traffic yet."""

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [name for name, ok in report["gates"]["checks"].items() if not ok]
        super().__init__(f"the comparison report fails its gates ({', '.join(failed)}); "
                         "shadow it longer, or force")
        self.report = report


def manifest(settings: ServiceSettings) -> ModelStore:
    """The manifest (no model is loaded: only its entries are read)."""
    return ModelStore(settings.models_dir, verify_checksums=False)


def live(policy: routing.Policy, store: ModelStore, settings: ServiceSettings, role: str) -> str:
    """The version serving ``role`` now: the policy's, or the workers' default."""
    rule = policy.rules.get(role)
    return rule.live if rule and rule.live else store.ref(getattr(settings, role))


def role_of(store: ModelStore, ref: str) -> str:
    task = store.spec(ref).get("task")
    for role, wanted in routing.TASKS.items():
        if task == wanted:
            return role
    raise routing.RoutingError(f"{ref} is a {task} model: only detectors and scorers are routed")


def compare(client: redis.Redis, store: ModelStore, settings: ServiceSettings, role: str,
            candidate: str | None = None) -> dict[str, Any]:
    """The report on ``candidate`` (default: the role's current one) against the live version."""
    policy = routing.load(client)
    current = live(policy, store, settings, role)
    rule = policy.rules.get(role)
    candidate = routing.canonical(store, role, candidate) if candidate else (rule.candidate if rule else None)
    if not candidate:
        raise routing.RoutingError(f"{role} has no candidate: name one")
    report = comparison.compare(comparison.pairs(client, current, candidate), settings.gates)
    return {"role": role, "live": current, "candidate": candidate, **report}


def route(client: redis.Redis, settings: ServiceSettings, who: str, role: str, candidate: str | None, mode: str,
          share: float = 0.0, sticky: str = "key", keys: list[str] | None = None, force: bool = False
          ) -> routing.Policy:
    store = manifest(settings)
    candidate = routing.canonical(store, role, candidate) if candidate else None
    if candidate and (mode in ("canary", "ab") or keys) and not force:
        report = compare(client, store, settings, role, candidate)
        if not report["passed"]:
            raise GateFailed(report)
    return routing.route(client, who, role, candidate, mode, share, sticky, keys)


def promote(client: redis.Redis, settings: ServiceSettings, who: str, ref: str, force: bool = False
            ) -> routing.Policy:
    """Make ``ref`` live for its role. Gated; the new live version's reference window (for
    drift) is what it scored in shadow and canary, when that is enough to judge by."""
    store = manifest(settings)
    role = role_of(store, ref)
    ref = routing.canonical(store, role, ref)
    if not force:
        report = compare(client, store, settings, role, ref)
        if not report["passed"]:
            raise GateFailed(report)
    policy = routing.promote(client, who, role, ref)
    seen = comparison.windows(client, ref, time.time() - settings.model_stats_ttl, settings.model_window)
    if seen.get("faces", 0) >= settings.drift_min_faces and not comparison.reference(client, ref):
        comparison.set_reference(client, ref, seen)
    return policy


def rollback(client: redis.Redis, who: str, role: str) -> routing.Policy:
    return routing.rollback(client, who, role)


def set_reference(client: redis.Redis, settings: ServiceSettings, ref: str, seconds: float) -> dict[str, int]:
    """Make the last ``seconds`` of ``ref``'s windows its drift reference."""
    store = manifest(settings)
    ref = store.ref(ref)
    counts = comparison.windows(client, ref, time.time() - seconds, settings.model_window)
    if counts.get("faces", 0) < settings.drift_min_faces:
        raise routing.RoutingError(f"{ref} scored {counts.get('faces', 0)} faces in that time; a reference "
                                   f"needs AURUM_DRIFT_MIN_FACES={settings.drift_min_faces}")
    comparison.set_reference(client, ref, counts)
    return counts


def drift(client: redis.Redis, settings: ServiceSettings, ref: str, seconds: float | None = None,
          now: float | None = None) -> dict[str, Any]:
    """``ref``'s recent windows (the current and the previous one; or those of the last
    ``seconds``) against its reference."""
    now = now or time.time()
    since = now - (settings.model_window if seconds is None else seconds)
    current = comparison.windows(client, ref, since, settings.model_window, now)
    report = comparison.drift(comparison.reference(client, ref), current, settings.drift_psi, settings.drift_p,
                              settings.drift_min_faces)
    return {"model": ref, **report}


def status(client: redis.Redis, settings: ServiceSettings) -> dict[str, Any]:
    """The policy, and for each role its live version and candidate."""
    store = manifest(settings)
    policy = routing.load(client)
    roles = {}
    for role in routing.ROLES:
        rule = policy.rules.get(role) or routing.Rule()
        roles[role] = {"live": live(policy, store, settings, role), "default": store.ref(getattr(settings, role)),
                       "candidate": rule.candidate, "mode": rule.mode, "share": rule.share, "sticky": rule.sticky,
                       "keys": rule.keys, "previous": rule.previous}
    return {"revision": policy.revision, "updated_at": policy.updated_at, "updated_by": policy.updated_by,
            "roles": roles}


def tracked(client: redis.Redis, settings: ServiceSettings) -> list[str]:
    """The versions drift is watched for: every role's live version and candidate."""
    store = manifest(settings)
    policy = routing.load(client)
    refs = {live(policy, store, settings, role) for role in routing.ROLES} | policy.refs()
    return sorted(refs)
