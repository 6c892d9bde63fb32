"""The Prometheus scrape config and the Grafana dashboard in deploy/ use metric names that exist:
ours (API and worker registries) and Flower's (a real Flower started from the Procfile)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from tests.helpers.redis_server import free_port
from tests.helpers.deploy import procfile
from tests.helpers.monitoring import base_name, our_metric_names

ROOT = Path(__file__).resolve().parents[2]


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((ROOT / "deploy/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    return {base_name(m) for e in exprs for m in re.findall(r"\b((?:aurum|flower)_[a-z_]+)\b", e)}


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flower_metric_names(redis_url: str) -> set[str]:
    port = free_port()
    command = procfile({"AURUM_BIND": "127.0.0.1", "FLOWER_PORT": str(port)})["flower"]
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env={**os.environ, "AURUM_REDIS_URL": redis_url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).text == "OK":
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop(proc)
    return {base_name(line.split()[2]) for line in text.splitlines() if line.startswith("# TYPE ")}


def test_dashboard_uses_only_existing_metrics(celery_app, redis_server) -> None:
    used = dashboard_metric_names()
    known = our_metric_names(celery_app) | flower_metric_names(f"{redis_server.url}/1")
    assert {"aurum_job_queue_seconds", "aurum_job_compute_seconds", "flower_task_runtime_seconds"} <= used
    assert used <= known, f"unknown metrics in the dashboard: {sorted(used - known)}"


def test_prometheus_config_scrapes_every_service() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker_port = int(compose["services"]["worker"]["environment"]["AURUM_WORKER_METRICS_PORT"])
    assert {"api:8000", f"worker:{worker_port}", f"worker:{worker_port + 1}", "flower:5555"} <= targets


def test_flower_never_serves_beyond_loopback_without_auth(redis_server) -> None:
    """The Procfile's Flower refuses every interface without FLOWER_BASIC_AUTH (flowerconfig.py),
    and with it answers 401 to a request without the password."""
    env = {**os.environ, "AURUM_REDIS_URL": f"{redis_server.url}/1"}
    env.pop("FLOWER_BASIC_AUTH", None)
    refused = subprocess.run([sys.executable, "-m", *procfile({"FLOWER_PORT": str(free_port())})["flower"]],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr
    port = free_port()
    command = procfile({"AURUM_BIND": "127.0.0.1", "FLOWER_PORT": str(port)})["flower"]
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env={**env, "FLOWER_BASIC_AUTH": "ops:s3cret"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "flower did not start"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/", auth=("ops", "s3cret"), timeout=10).status_code == 200
    finally:
        stop(proc)
