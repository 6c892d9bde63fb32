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

from aurum import errors
from aurum.store import ModelStore

from . import comparison, heartbeats, routing
from .config import ServiceSettings


class GateFailed(routing.RoutingError):
    """The comparison report does not let the candidate have traffic yet."""

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [name for name, ok in report["gates"]["checks"].items() if not ok]
        super().__init__(f"the comparison report fails its gates ({', '.join(failed)}); "
                         "shadow it longer, or force")
        self.report = report


class Catalogue:
    """The versions the workers can serve and their defaults, from the live children's
    heartbeats (a version must be in every child's manifest); without a live child, this
    machine's manifest and settings (the CLI beside a models folder). The API has no models
    folder of its own: it checks routes against this."""

    def __init__(self, defaults: dict[str, str], names: dict[str, str], versions: dict[str, str]) -> None:
        self.defaults = defaults  # role -> name@version the workers serve it with by default
        self.names = names        # name -> name@version of its default version
        self.versions = versions  # name@version -> task

    @classmethod
    def of(cls, client: redis.Redis, settings: ServiceSettings) -> "Catalogue":
        children = [r["catalogue"] for r in heartbeats.live(client).values() if r.get("catalogue")]
        if children:
            versions = {ref: task for ref, task in children[0]["versions"].items()
                        if all(ref in child["versions"] for child in children)}
            return cls(children[0]["defaults"], children[0]["names"], versions)
        try:
            store = ModelStore(settings.models_dir, verify_checksums=False)
        except errors.ModelUnavailable:
            raise routing.RoutingError("no worker is live and there is no models folder here: "
                                       "nothing to check versions against") from None
        return cls({role: store.ref(getattr(settings, role)) for role in routing.ROLES},
                   {name: f"{name}@{spec['version']}" for name, spec in store.specs.items()},
                   {ref: store.spec(ref).get("task") for ref in store.all_refs()})

    def ref(self, ref: str) -> str:
        key = ref if "@" in ref else self.names.get(ref, "")
        if key not in self.versions:
            raise routing.RoutingError(f"{ref} is not a version the workers can serve (aurum models list)")
        return key

    def task(self, ref: str) -> str | None:
        return self.versions.get(ref)


def live(policy: routing.Policy, catalogue: Catalogue, role: str) -> str:
    """The version serving ``role`` now: the policy's, or the workers' default."""
    rule = policy.rules.get(role)
    return rule.live if rule and rule.live else catalogue.defaults[role]


def role_of(catalogue: Catalogue, ref: str) -> str:
    task = catalogue.task(catalogue.ref(ref))
    for role, wanted in routing.TASKS.items():
        if task == wanted:
            return role
    raise routing.RoutingError(f"{ref} is a {task} model: only detectors and scorers are routed")


def _gate(client: redis.Redis, catalogue: Catalogue, settings: ServiceSettings, role: str, candidate: str) -> None:
    """Refuse ``candidate`` traffic unless its comparison report passes."""
    report = compare(client, catalogue, settings, role, candidate)
    if not report["passed"]:
        raise GateFailed(report)


def compare(client: redis.Redis, catalogue: Catalogue, settings: ServiceSettings, role: str,
            candidate: str | None = None) -> dict[str, Any]:
    """The report on ``candidate`` (default: the role's current one) against the live version."""
    if role not in routing.ROLES:
        raise routing.RoutingError(f"role: one of {', '.join(routing.ROLES)}, not {role!r}")
    policy = routing.load(client)
    current = live(policy, catalogue, role)
    rule = policy.rules.get(role)
    candidate = routing.canonical(catalogue, role, candidate) if candidate else (rule.candidate if rule else None)
    if not candidate:
        raise routing.RoutingError(f"{role} has no candidate: name one")
    rows = comparison.pairs(client, current, candidate, settings.model_window, settings.result_ttl)
    return {"role": role, "live": current, "candidate": candidate, **comparison.compare(rows, settings.gates)}


def route(client: redis.Redis, settings: ServiceSettings, who: str, role: str, candidate: str | None, mode: str,
          share: float = 0.0, sticky: str = "key", keys: list[str] | None = None, force: bool = False
          ) -> routing.Policy:
    catalogue = Catalogue.of(client, settings)
    candidate = routing.canonical(catalogue, role, candidate) if candidate else None
    if candidate and (mode in ("canary", "ab") or keys) and not force:
        _gate(client, catalogue, settings, role, candidate)
    return routing.route(client, who, role, candidate, mode, share, sticky, keys)


def promote(client: redis.Redis, settings: ServiceSettings, who: str, ref: str, force: bool = False
            ) -> routing.Policy:
    """Make ``ref`` live for its role. Gated; the new live version's reference window (for
    drift) is what it scored in shadow and canary, when that is enough to judge by."""
    catalogue = Catalogue.of(client, settings)
    role = role_of(catalogue, ref)
    ref = routing.canonical(catalogue, role, ref)
    if not force:
        _gate(client, catalogue, settings, role, ref)
    policy = routing.promote(client, who, role, ref)
    seen = comparison.windows(client, ref, time.time() - settings.model_stats_ttl, settings.model_window)
    if seen.get("faces", 0) >= settings.drift_min_faces and not comparison.reference(client, ref):
        comparison.set_reference(client, ref, seen)
    return policy


def rollback(client: redis.Redis, who: str, role: str) -> routing.Policy:
    return routing.rollback(client, who, role)


def _seconds(settings: ServiceSettings, seconds: float | None, default: float) -> float:
    """A span of windows to sum: at most what is kept (AURUM_MODEL_STATS_TTL)."""
    value = default if seconds is None else seconds
    if not 0 < value:
        raise routing.RoutingError("the span must be above 0 seconds")
    return min(value, settings.model_stats_ttl)


def set_reference(client: redis.Redis, settings: ServiceSettings, ref: str, seconds: float | None = None
                  ) -> dict[str, int]:
    """Make the last ``seconds`` (default an hour) of ``ref``'s windows its drift reference."""
    ref = Catalogue.of(client, settings).ref(ref)
    counts = comparison.windows(client, ref, time.time() - _seconds(settings, seconds, 3600), settings.model_window)
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
    since = now - _seconds(settings, seconds, settings.model_window)
    current = comparison.windows(client, ref, since, settings.model_window, now)
    report = comparison.drift(comparison.reference(client, ref), current, settings.drift_psi, settings.drift_p,
                              settings.drift_min_faces)
    return {"model": ref, **report}


def drifts(client: redis.Redis, settings: ServiceSettings, model: str | None = None,
           seconds: float | None = None) -> list[dict[str, Any]]:
    """Drift of ``model``, or of every tracked version: each role's live version and candidate."""
    catalogue = Catalogue.of(client, settings)
    if model:
        refs = [catalogue.ref(model)]
    else:
        policy = routing.load(client)
        refs = sorted({live(policy, catalogue, role) for role in routing.ROLES} | policy.refs())
    return [drift(client, settings, ref, seconds) for ref in refs]


def status(client: redis.Redis, settings: ServiceSettings) -> dict[str, Any]:
    """The policy, and for each role its live version, default and candidate."""
    catalogue = Catalogue.of(client, settings)
    policy = routing.load(client)
    roles = {}
    for role in routing.ROLES:
        rule = policy.rules.get(role) or routing.Rule()
        roles[role] = {"live": live(policy, catalogue, role), "default": catalogue.defaults[role],
                       "candidate": rule.candidate, "mode": rule.mode, "share": rule.share, "sticky": rule.sticky,
                       "keys": rule.keys, "previous": rule.previous}
    return {"revision": policy.revision, "updated_at": policy.updated_at, "updated_by": policy.updated_by,
            "roles": roles}
