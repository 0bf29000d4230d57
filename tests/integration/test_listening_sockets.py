"""Safe defaults: a default local start of ``maas serve`` listens on loopback only.

A subprocess starts Ray and Serve through :func:`maas.cli.start_serve` (the start-up path of
``maas serve``; the session's Ray is started differently, and ``ray.init`` runs once per process)
with its own Ray temp dir, and deploys a one-replica app. The test lists the listening TCP/UDP
sockets of that subprocess's whole process tree (GCS, raylet, agents, dashboard head, autoscaler
monitor, Serve controller, proxy, replica, workers) and checks that every one is on loopback.
The metrics ports of the dashboard head and the autoscaler get free ports, so that they bind even
when another Ray on the machine holds their defaults (the dashboard agent's HTTP port, 52365, has
no such setting: it binds, and shows in the table, only when it is free).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60

CHILD = """
import json, sys, urllib.request
from maas import cli
cli.ray_env(local_ray=True)
import ray
from ray import serve
from ray._private.authentication.authentication_utils import is_token_auth_enabled

port = int(sys.argv[1])
cli.start_serve("127.0.0.1", port)

@serve.deployment(ray_actor_options={"num_cpus": 0})
def hello(_request) -> str:
    return "ok"

serve.run(hello.bind(), name="sockets", route_prefix="/", blocking=False)
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
info = {"gcs_address": ray.get_runtime_context().gcs_address, "http_port": port, "body": body,
        "token_auth": is_token_auth_enabled()}
print("READY " + json.dumps(info), flush=True)
sys.stdin.read()  # until the test closes stdin
serve.shutdown()
ray.shutdown()
"""


@dataclass(frozen=True)
class Listener:
    proto: str
    ip: str
    port: int
    pid: int
    process: str

    def row(self) -> str:
        where = "loopback" if is_loopback(self.ip) else "PUBLIC"
        return f"{where:8} {self.proto} {self.ip:>18}:{self.port:<6} pid {self.pid:<7} {self.process}"


@dataclass(frozen=True)
class DefaultStart:
    info: dict
    listeners: list[Listener]

    def table(self) -> str:
        return "\n".join(listener.row() for listener in self.listeners)


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 of dual-stack sockets
    return (mapped or address).is_loopback


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def listeners_of(procs: list[psutil.Process]) -> list[Listener]:
    """Listening TCP sockets and bound, unconnected UDP sockets of the processes."""
    found = []
    for proc in procs:
        try:
            connections = proc.net_connections(kind="inet")
            name = " ".join(" ".join(proc.cmdline()).split())[:90] or proc.name()
        except psutil.Error:  # exited meanwhile
            continue
        for conn in connections:
            tcp = conn.type == socket.SOCK_STREAM
            if (tcp and conn.status == psutil.CONN_LISTEN) or (not tcp and not conn.raddr):
                found.append(Listener("tcp" if tcp else "udp", conn.laddr.ip, conn.laddr.port,
                                      proc.pid, name))
    return sorted(found, key=lambda item: (item.pid, item.port))


def read_ready(child: subprocess.Popen[bytes], log: Path) -> dict:
    """The child's ``READY {json}`` line, once Ray, Serve and the app are up."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("READY "):
                return json.loads(line.removeprefix("READY "))
        if child.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError("the default start did not come up:\n" + "\n".join(text.splitlines()[-40:]))


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            if proc.is_running():  # also guards against a reused pid
                proc.kill()
        except psutil.Error:
            pass


def stop(child: subprocess.Popen[bytes]) -> None:
    """Close stdin so the child shuts Serve and Ray down; kill it if it hangs."""
    child.stdin.close()  # type: ignore[union-attr]
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(process_tree(child.pid))
        child.wait(10)


@pytest.fixture(scope="module")
def default_start() -> Iterator[DefaultStart]:
    temp_dir = Path(tempfile.mkdtemp(prefix="maas-sockets-"))  # short: Ray's unix sockets live in it
    log = temp_dir / "child.log"
    env = {**os.environ, "RAY_TMPDIR": str(temp_dir),
           "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port())}
    env.pop("RAY_ADDRESS", None)
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(free_port())], cwd=REPO, env=env,
                                 stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    procs: list[psutil.Process] = []
    try:
        info = read_ready(child, log)
        procs = process_tree(child.pid)
        yield DefaultStart(info, listeners_of(procs))
    finally:
        if not procs and child.poll() is None:  # start-up failed or timed out
            procs = process_tree(child.pid)
        stop(child)
        kill(procs)  # whatever Ray's shutdown left behind
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_default_start_listens_on_loopback_only(default_start: DefaultStart) -> None:
    public = [item for item in default_start.listeners if not is_loopback(item.ip)]
    assert not public, "listeners beyond loopback:\n" + default_start.table()


def test_the_listing_sees_ray_and_serve(default_start: DefaultStart) -> None:
    """The table holds the GCS and the Serve HTTP proxy, so the check above is not vacuous."""
    info = default_start.info
    gcs_host, gcs_port = info["gcs_address"].rsplit(":", 1)
    ports = {item.port for item in default_start.listeners}
    assert info["body"] == "ok"
    assert gcs_host == "127.0.0.1", info
    assert {int(gcs_port), info["http_port"]} <= ports, default_start.table()


def test_ray_token_authentication_stays_on(default_start: DefaultStart) -> None:
    assert default_start.info["token_auth"] is True
