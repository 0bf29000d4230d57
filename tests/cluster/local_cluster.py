"""A Ray cluster started with ``ray start`` on this machine, owned and stopped by one test.

Every process of the cluster (head, autoscaler, the fake worker nodes the autoscaler launches,
their workers, job drivers) inherits the environment variable :data:`MARKER_VAR` with a value of
its own, so :meth:`LocalCluster.stop` finds exactly those processes, and no other Ray on the
machine, by reading ``/proc/<pid>/environ``. ``ray stop`` is never used: it ends every Ray of
every user of the machine.

Each cluster gets free ports and a temp dir of its own (so ``ray.init(address="auto")`` elsewhere
on the machine never finds it). The fake multi-node provider is pointed at the head's GCS port
with ``provider.gcs_address``, so the default port 6379 is not needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MARKER_VAR = "MAAS_TEST_RAY_CLUSTER"
RAY_CLI = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 180
STOP_GRACE_S = 5
"""Seconds between SIGTERM and SIGKILL in :meth:`LocalCluster.stop`. Most processes end at once;
the GCS server, the autoscaler and the fake nodes' raylets were still alive 20 s after SIGTERM
(seen with Ray 2.60), so a longer grace only delays their SIGKILL."""


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def node_ip() -> str:
    """The IP address Ray picks for this machine (the head's GCS listens there)."""
    from ray._private.services import get_node_ip_address

    return str(get_node_ip_address())


def cluster_env(marker: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of ``ray start`` (inherited by every process of the cluster)."""
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER: set by `maas serve`/`train` for a loopback-only local Ray
    # (perhaps in this very process); a multi-node cluster must not inherit it.
    dropped = ("RAY_ADDRESS", "RAY_DASHBOARD_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({
        MARKER_VAR: marker,
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    env.update(extra or {})
    return env


def fake_autoscaling_config(path: Path, gcs_address: str, worker_resources: dict[str, int],
                            max_workers: int, idle_timeout_minutes: float) -> Path:
    """An autoscaling config for Ray's fake multi-node provider: a head and one worker type."""
    config: dict[str, Any] = {
        "cluster_name": "maas-fake",
        "max_workers": max_workers,
        "idle_timeout_minutes": idle_timeout_minutes,
        "upscaling_speed": 1.0,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "launch_multiple": True,
            "gcs_address": gcs_address,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {"resources": worker_resources, "node_config": {},
                               "min_workers": 0, "max_workers": max_workers},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class LocalCluster:
    """A running local cluster: its addresses, environment and the marker of its processes."""

    marker: str
    temp_dir: Path
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    start_output: str = ""
    stopped: bool = field(default=False)

    def pids(self) -> list[int]:
        """Every live process of this cluster: those whose environment holds the marker, those
        with a file open in its temp dir, and their descendants. The marker alone misses Ray's
        agents: they overwrite their environment with their process title, and once their raylet
        is SIGKILLed they live on (a dashboard agent left so took 90 % of a core for the rest of
        the suite)."""
        found = set(marked_pids(self.marker)) | set(pids_using(self.temp_dir))
        return sorted(found | descendants(found))

    def node_processes(self, node_id: str) -> list[int]:
        """The raylet of one node (found by its ``--node_id``) and the processes it started."""
        raylets = [pid for pid in self.pids() if f"--node_id={node_id}" in _cmdline(pid)]
        children = [pid for pid in self.pids() if _parent(pid) in raylets]
        return raylets + children

    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL one node's raylet and its processes, as if the machine had died."""
        pids = self.node_processes(node_id)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return pids

    def stop(self, timeout_s: float = STOP_GRACE_S) -> None:
        """Terminate every process of the cluster (SIGTERM, then SIGKILL) and remove its temp dir."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5), (signal.SIGKILL, 5)):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                _signal(pid, sig)
            _wait_gone(pids, wait_s)
        self.stopped = True
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(num_cpus: float, *, autoscaling: dict[str, Any] | None = None,
                  extra_env: dict[str, str] | None = None) -> LocalCluster:
    """``ray start --head`` on free ports with the dashboard on 127.0.0.1; raises if it fails.

    ``autoscaling`` (keyword arguments of :func:`fake_autoscaling_config` without ``path`` and
    ``gcs_address``) turns on the fake multi-node autoscaler.
    """
    marker = uuid.uuid4().hex[:12]
    temp_dir = Path(tempfile.mkdtemp(prefix="rc_", dir="/tmp"))  # short: socket paths are limited
    port, dashboard_port = free_port(), free_port()
    gcs_address = f"{node_ip()}:{port}"
    args = [RAY_CLI, "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats"]
    extra = dict(extra_env or {})
    if autoscaling is not None:
        config = fake_autoscaling_config(temp_dir / "autoscaling.yaml", gcs_address, **autoscaling)
        args.append(f"--autoscaling-config={config}")
        extra.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    env = cluster_env(marker, extra)
    ensure_auth_token(env)
    cluster = LocalCluster(marker, temp_dir, gcs_address, f"http://127.0.0.1:{dashboard_port}", env)
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        cluster.stop()
        raise RuntimeError(f"ray start did not finish in {START_TIMEOUT_S}s") from exc
    cluster.start_output = done.stdout + done.stderr
    if done.returncode != 0:
        cluster.stop()
        raise RuntimeError(f"ray start failed ({done.returncode}):\n{cluster.start_output[-3000:]}")
    return cluster


def ensure_auth_token(env: dict[str, str]) -> None:
    """Generate ``~/.ray/auth_token`` where no token is set, as ``cluster/ray-cluster.yaml`` tells users.

    ``ray.init`` makes a token for a new local cluster; ``ray start`` with token auth never does
    and fails on a fresh machine.
    """
    default = Path.home() / ".ray" / "auth_token"
    if env.get("RAY_AUTH_TOKEN") or Path(env.get("RAY_AUTH_TOKEN_PATH", default)).expanduser().is_file():
        return
    subprocess.run([RAY_CLI, "get-auth-token", "--generate"], env=env, capture_output=True,
                   check=True, timeout=START_TIMEOUT_S)


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _live_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != os.getpid()]


def pids_using(directory: Path) -> list[int]:
    """Live processes with a file open under ``directory`` (Ray's processes keep their logs there)."""
    prefix = f"{directory}/"
    found = []
    for pid in _live_pids():
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(prefix) for link in links):
            found.append(pid)
    return found


def descendants(pids: set[int]) -> set[int]:
    """Every live descendant of ``pids``."""
    children: dict[int, list[int]] = {}
    for pid in _live_pids():
        children.setdefault(_parent(pid), []).append(pid)
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
