"""Real Prometheus and Alertmanager for tests (Debian's prometheus and prometheus-alertmanager),
run from the repository's deploy/ files on loopback ports, and a webhook receiver that records
the notifications Alertmanager sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers import processes
from tests.helpers.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


SUFFIXES = re.compile(r"_(bucket|sum|count|total|created)$")


def base_name(name: str) -> str:
    """A sample's metric name without its histogram or counter suffix."""
    return SUFFIXES.sub("", name)


def our_metric_names(celery_app) -> set[str]:
    """Every metric the API's and a worker's registries export (base names)."""
    import workers.metrics  # noqa: F401 - registers the worker metrics in this process
    from api import create_app

    text = create_app().test_client().get("/metrics").get_data(as_text=True)
    return {base_name(line.split()[2]) for line in text.splitlines() if line.startswith("# TYPE ")}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (scripts/test installs Debian's prometheus and "
                           "prometheus-alertmanager)")
    return path


class Webhook:
    """An HTTP receiver for Alertmanager's webhook: every notification's alerts, in order."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.extend({**alert, "received_at": time.monotonic()} for alert in body["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["labels"].get("alertname") == name and a["status"] == "firing"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Process:
    """A server binary started in a temporary directory, stopped (and its log kept) on exit."""

    def __init__(self, workdir: Path, name: str, args: list[str], ready_path: str, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen([binary(name), *args], cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{name} exited: {(workdir / f'{name}.log').read_text()[-2000:]}"
            try:
                if requests.get(self.base + ready_path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{name} did not get ready")

    def stop(self) -> None:
        processes.stop(self.proc, timeout=15)
        self.log.close()


def alertmanager(workdir: Path, webhook_url: str, group_wait: str | None = None) -> Process:
    """deploy/alertmanager.yml with its webhook at ``webhook_url`` (and, for a test that cannot
    wait half a minute, a shorter group wait): nothing else changed."""
    config = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    if group_wait:
        config["route"]["group_wait"] = group_wait
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return Process(workdir, "prometheus-alertmanager", [
        "--config.file=alertmanager.yml", f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], "/-/ready", port)


def prometheus(workdir: Path, targets: dict[str, list[str]], alertmanager_base: str, interval: str = "1s") -> Process:
    """deploy/prometheus.yml's rules and alerting, scraping ``targets`` (job -> host:port list,
    the jobs named as deploy/prometheus.yml names them) every ``interval``."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(DEPLOY / f) for f in config["rule_files"]]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_base.split("//")[1]]}]}]}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    config["scrape_configs"] = [{**{k: v for k, v in jobs[name].items() if k != "basic_auth"},
                                 "static_configs": [{"targets": hosts}]} for name, hosts in targets.items()]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return Process(workdir, "prometheus", [
        "--config.file=prometheus.yml", f"--storage.tsdb.path={workdir / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}"], "/-/ready", port)


def query(prom: Process, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(prom.base + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def alert_states(prom: Process) -> dict[str, str]:
    """alertname -> state (pending, firing) of Prometheus's active alerts."""
    answer = requests.get(prom.base + "/api/v1/alerts", timeout=10).json()
    return {a["labels"]["alertname"]: a["state"] for a in answer["data"]["alerts"]}
