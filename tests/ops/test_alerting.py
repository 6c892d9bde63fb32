"""Monitoring that runs: deploy/prometheus.yml, deploy/alerts.yml and deploy/alertmanager.yml
checked by Prometheus's own tools, every alert unit-tested, and one alert fired for real: the
Procfile stack scraped by a real Prometheus, its worker stopped, the page arriving at a webhook
through a real Alertmanager."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers import monitoring
from tests.helpers.monitoring import DEPLOY, alert_states, base_name, our_metric_names, query
from tests.helpers.stack import Stack


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([monitoring.binary(args[0]), *args[1:]], cwd=DEPLOY, capture_output=True, text=True,
                          timeout=120)


def test_prometheus_config_and_rules_are_valid() -> None:
    checked = tool("promtool", "check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    rules = tool("promtool", "check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_every_alert_rule_passes_its_unit_tests() -> None:
    tested = tool("promtool", "test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cases = [c for t in yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts - fires == set(), "alerts no unit test expects to fire"
    assert alerts - quiet == set(), "alerts no unit test expects to stay quiet"
    assert {"AurumNoReadyWorker", "AurumQueueWaitHigh", "AurumServerErrors", "AurumLatencyAboveSLO",
            "AurumDeadLetters", "AurumDegradedResults", "AurumModelLoadFailures", "AurumQualityFailuresHigh",
            "AurumScoreShift"} <= alerts
    for group in rules["groups"]:  # every page says what is wrong
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["summary"]


def test_alertmanager_config_is_valid() -> None:
    checked = tool("amtool", "check-config", "alertmanager.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_use_only_metrics_the_service_exports(celery_app) -> None:
    """A rule on a misspelt metric never fires: each aurum_* name in alerts.yml is exported by
    the API's or a worker's registry."""
    import re

    text = (DEPLOY / "alerts.yml").read_text()
    used = {base_name(m) for m in re.findall(r"\b(aurum_[a-z_]+)\b", text)}
    known = our_metric_names(celery_app)
    assert {"aurum_worker_children_ready", "aurum_face_score", "aurum_faces", "aurum_model_load_failures"} <= known
    assert used <= known, f"alerts.yml uses metrics nobody exports: {sorted(used - known)}"


@pytest.mark.timeout(600)
def test_stopped_workers_page_the_operator_within_the_rule_window(tmp_path: Path) -> None:
    """The stack up, Prometheus scraping its API and worker children every second: all quiet.
    The worker stopped: AurumNoReadyWorker goes pending, then (after its ``for:``) firing, and
    Alertmanager delivers it to the webhook (group wait shortened from 30 s to 2 s)."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "AurumNoReadyWorker")
    hold = float(rule["for"].rstrip("m")) * 60
    hook = monitoring.Webhook()
    processes = []
    with Stack(tmp_path / "stack") as stack:
        try:
            am = monitoring.alertmanager(tmp_path, hook.url, group_wait="2s")
            processes.append(am)
            workers = [u.split("//")[1].split("/")[0] for u in stack.worker_metrics]
            prom = monitoring.prometheus(tmp_path, {"aurum-api": [f"127.0.0.1:{stack.port}"], "aurum-worker": workers},
                                         am.base)
            processes.append(prom)
            def seen() -> tuple[bool, bool]:
                return (bool(query(prom, "aurum_worker_children_ready > 0")),
                        bool(query(prom, 'up{job="aurum-worker"} == 1')))

            deadline = time.monotonic() + 90  # scrapes start at their own moments; a loaded machine
            while time.monotonic() < deadline and seen() != (True, True):
                time.sleep(0.5)
            ready, scraped = seen()
            assert ready, "Prometheus never saw a ready worker"
            assert scraped, "no worker child was scraped"
            time.sleep(3)  # a few evaluations with workers up
            assert "AurumNoReadyWorker" not in alert_states(prom) and not hook.firing("AurumNoReadyWorker")

            stack.stop_worker()
            stopped = time.monotonic()
            # the children leave the heartbeat set as they stop; the gauge drops at the next scrape
            deadline = stopped + 60
            while time.monotonic() < deadline and alert_states(prom).get("AurumNoReadyWorker") is None:
                time.sleep(0.5)
            assert alert_states(prom).get("AurumNoReadyWorker") == "pending"
            pending = time.monotonic()
            assert requests.get(stack.base + "/ready", timeout=15).status_code == 503
            deadline = pending + hold + 90  # for:, then an evaluation, a group wait and a delivery
            while time.monotonic() < deadline and not hook.firing("AurumNoReadyWorker"):
                time.sleep(0.5)
            page = hook.firing("AurumNoReadyWorker")
            assert page, f"no page within {hold + 90:.0f} s of the alert going pending"
            # pending was seen at most a poll (and a query) after it began: a few seconds of slack
            assert page[0]["received_at"] - pending >= hold - 5, "the page came before the rule's for: window"
            assert page[0]["labels"]["severity"] == "page"
            assert "No worker child is ready" in page[0]["annotations"]["summary"]
        finally:
            for proc in reversed(processes):
                proc.stop()
            hook.stop()
