"""HAProxy (Debian's, on deploy/haproxy/haproxy.cfg: the file compose uses) in front of two API
instances of one stack: it spreads requests over both, takes an instance that dies or stops
being ready out within its checks while clients see only 202s or HAProxy's retryable 503 in our
error shape, and stops a client that trickles its headers before it reaches the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.chaos.common import Load, record, settle
from tests.helpers.deploy import procfile
from tests.helpers.haproxy import HAProxy
from tests.helpers.photos import unique_photo
from tests.helpers.redis_server import free_port
from tests.helpers.stack import ROOT, Stack


class Fleet:
    """The stack's API (api1) and a second instance (api2) of the same Procfile command, both
    behind HAProxy; ``http`` talks to HAProxy with the stack's key."""

    def __init__(self, stack: Stack, workdir) -> None:
        self.stack = stack
        self.port2 = free_port()
        self.log = open(workdir / "web2.log", "a")
        self.command = procfile({"PORT": str(self.port2), "AURUM_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2"})["web"]
        self.api2 = self._start_api2()
        self.lb = HAProxy(workdir, [f"127.0.0.1:{stack.port}", f"127.0.0.1:{self.port2}"], header_timeout="2s").start()
        self.http = requests.Session()
        self.http.headers.update(stack.http.headers)

    def _start_api2(self) -> subprocess.Popen:
        return subprocess.Popen(self.command, cwd=ROOT, env=self.stack.env, stdout=self.log, stderr=subprocess.STDOUT)

    def restart_api2(self) -> None:
        self.api2 = self._start_api2()

    def kill_api2(self) -> None:
        """SIGKILL the instance's API server (granian) and its workers: a host gone at once."""
        children = subprocess.run(["pgrep", "-P", str(self.api2.pid)], capture_output=True, text=True).stdout.split()
        self.api2.kill()
        for pid in children:
            subprocess.run(["kill", "-9", pid], check=False)
        self.api2.wait()

    def stop(self) -> None:
        self.lb.stop()
        if self.api2.poll() is None:
            self.api2.terminate()
            self.api2.wait(20)
        self.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("haproxy")
    with Stack(workdir) as stack:
        fleet = Fleet(stack, workdir)
        try:
            fleet.lb.wait_states({"api1": True, "api2": True}, timeout=90)
            yield fleet
        finally:
            fleet.stop()


def post(fleet: Fleet, seed: int, timeout: float = 15) -> requests.Response:
    return fleet.http.post(fleet.lb.base + "/api/ml/score", files={"image": ("p", unique_photo(seed))},
                           timeout=timeout)


def test_requests_are_spread_over_both_instances(fleet) -> None:
    before = fleet.lb.responses()
    ids = []
    for i in range(40):
        response = post(fleet, 40_000 + i)
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    done = settle(fleet.stack, ids, deadline_s=120)  # read straight from api1: one shared Redis
    assert all(doc["status"] == "succeeded" for doc in done.values()) and len(done) == len(ids)
    after = fleet.lb.responses()
    served = {s: after.get(s, 0) - before.get(s, 0) for s in ("api1", "api2")}
    assert min(served.values()) >= 5, served  # leastconn, sequential: both get a share


def test_an_instance_killed_under_load_is_taken_out_and_brought_back(fleet) -> None:
    with Load(lambda seed: post(fleet, 50_000 + seed)) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        fleet.kill_api2()
        fleet.lb.wait_states({"api1": True, "api2": False}, timeout=30)
        marked_down_s = time.monotonic() - killed_at
        time.sleep(2.0)
        fleet.restart_api2()
        fleet.lb.wait_states({"api1": True, "api2": True}, timeout=90)
        time.sleep(1.0)
    answers, accepted = [(status, code) for _, status, code in load.answers], load.accepted
    statuses: dict[str, int] = {}
    for status, code in answers:
        statuses[f"{status} {code}".strip()] = statuses.get(f"{status} {code}".strip(), 0) + 1
    done = settle(fleet.stack, accepted, deadline_s=150)
    record("haproxy-instance-killed", {"answers": statuses, "marked_down_after_s": round(marked_down_s, 2),
                                       "accepted": len(accepted), "ended": len(done)})
    # A connection to the dead instance is re-dispatched (retry-on conn-failure); a request it
    # held when it died is answered by HAProxy with a 502/503 in our shape, never a hang.
    # A POST the instance was still reading when it died cannot be re-sent by HAProxy (it may
    # have been accepted): its connection is reset, which the SDK retries; one at most.
    assert set(statuses) <= {"202", "-1", "502 SERVICE_UNAVAILABLE", "503 SERVICE_UNAVAILABLE"}, statuses
    assert statuses.get("-1", 0) <= 1, statuses
    assert statuses.get("202", 0) >= 0.95 * len(answers), statuses
    assert len(done) == len(accepted) and all(d["status"] == "succeeded" for d in done.values())


def test_no_instance_ready_is_a_503_in_our_error_shape(fleet) -> None:
    """Both instances out (api2 killed, api1 frozen so that its checks time out): HAProxy's own
    answer is our JSON error, with Retry-After, within its queue timeout."""
    fleet.kill_api2()
    api1 = [fleet.stack.procs[0].pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(fleet.stack.procs[0].pid)], capture_output=True, text=True).stdout.split()]
    signal_all(api1, signal.SIGSTOP)  # api1's arbiter and workers hang: its checks time out
    try:
        fleet.lb.wait_states({"api1": False, "api2": False}, timeout=60)
        start = time.monotonic()
        response = post(fleet, 60_000)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert response.headers["Retry-After"] == "1"
        assert time.monotonic() - start < 10  # `timeout queue` bounds the wait, no hang
    finally:
        signal_all(api1, signal.SIGCONT)
        fleet.restart_api2()
    fleet.lb.wait_states({"api1": True, "api2": True}, timeout=90)


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        os.kill(pid, sig)


def test_a_client_trickling_its_headers_is_cut_off_by_haproxy(fleet) -> None:
    """Slowloris: headers one byte every half second never reach the API; HAProxy answers 408
    and closes once AURUM_LB_HEADER_TIMEOUT (2 s here) has passed; others are served meanwhile."""
    with socket.create_connection(("127.0.0.1", fleet.lb.port), timeout=30) as sock:
        start = time.monotonic()
        reply = b""
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.5)
                if time.monotonic() - start > 12:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            pass
        elapsed = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert elapsed < 12
    assert fleet.http.get(fleet.lb.base + "/health", timeout=15).status_code == 200
