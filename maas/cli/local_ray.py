"""The local Ray and Serve that ``maas serve`` (and ``status``, ``train``) start on this machine:
the environment before ``import ray``, a Ray that listens on loopback only, Serve's throughput
switches and its HTTP proxy, and where Ray's messages and logs go."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from maas.offline import set_offline_env

LOOPBACK = "127.0.0.1"


SERVE_THROUGHPUT_ENV: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
"""Ray Serve's own switches (part of its RAY_SERVE_THROUGHPUT_OPTIMIZED set, without direct
ingress and gRPC): user code and the router on each replica's event loop instead of threads of
their own, access logs buffered: fewer thread hops per request on a small machine (classify
requests/s +11 % / +28 % / +3 % at 1 / 16 / 64 clients in benchmarks/results, runs vary by about
that much). Read by every Ray process: `maas serve` sets them before it starts its local Ray; an
explicit value wins. Only for the Ray processes that run Serve: a driver process that has
RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 set cannot make synchronous handle calls (`.result()`),
so the test session and the cluster configs leave them unset."""


def ray_env(local_ray: bool = False) -> None:
    """Environment every maas driver needs before ``import ray``.

    ``local_ray``: this process starts (or joins, at a loopback address) a single-node Ray that
    listens on loopback only. Not for a driver that joins a cluster: it must advertise an
    address the other nodes can reach.
    """
    set_offline_env()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if local_ray:
        # Read at `import ray`: else Ray swaps a 127.0.0.1 node IP for the host's address and
        # binds all interfaces (ray/_private/services.py, resolve_ip_for_localhost).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def is_loopback_ray(address: str | None) -> bool:
    """Whether a Ray address means a Ray on this machine's loopback (None: one started here)."""
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def start_ray(address: str | None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Join the Ray at ``address``, or start a local one that listens on loopback only.

    ``num_cpus``: logical CPUs of a local Ray (default: the machine's). ``quiet``: the workers'
    output and Ray's own messages stay in Ray's log files instead of this terminal.
    """

    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace="serve")
        return
    # The address ray.init resolves _node_ip_address="127.0.0.1" to (see ray_env).
    loopback_only = ray.util.get_node_ip_address() == LOOPBACK
    if not loopback_only:
        print("[maas] warning: the local Ray will listen beyond loopback (ray was imported "
              "without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).", file=sys.stderr)
    for name, value in SERVE_THROUGHPUT_ENV.items():  # inherited by the Ray this process starts
        os.environ.setdefault(name, value)
    hook = {"worker_process_setup_hook": "maas.cli.local_ray.serve_grpc_on_loopback"}
    quiet_options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING} if quiet else {}
    ray.init(address="local", namespace="serve", include_dashboard=False, num_cpus=num_cpus,
             _node_ip_address=LOOPBACK, runtime_env=hook if loopback_only else None, **quiet_options)


def serve_grpc_on_loopback() -> None:
    """Worker setup hook of a local Ray: Serve binds each replica's inter-deployment gRPC server
    to ``[::]:0`` (ray/serve/_private/replica.py, no setting); bind it to loopback instead."""
    try:
        from ray._common import tls_utils

        add_port = tls_utils.add_port_to_grpc_server
    except (ImportError, AttributeError):  # another Ray version: leave its default
        return

    def add_loopback_port(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{LOOPBACK}:{address.removeprefix('[::]:')}"
        return add_port(server, address)

    tls_utils.add_port_to_grpc_server = add_loopback_port
    replica = sys.modules.get("ray.serve._private.replica")
    if replica is not None:  # imported before the hook ran: patch its own reference too
        replica.add_port_to_grpc_server = add_loopback_port


def check_http_port(host: str, port: int) -> None:
    """Refuse at once when another process listens on the HTTP port: Serve's proxy would fail to
    bind only after Ray has started, with a traceback (``Failed to bind to address``)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"[maas] {host}:{port} is in use ({exc.strerror}): stop what holds it "
                             f"(`ss -ltnp 'sport = :{port}'`) or serve on another port (--port).") from None


def start_serve(host: str, port: int, address: str | None = None, num_cpus: int | None = None,
                quiet: bool = False) -> None:
    """What ``maas serve`` starts before its application: Ray, then Serve's HTTP proxy."""

    from ray import serve

    start_ray(address, num_cpus=num_cpus, quiet=quiet)
    if quiet:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        divert_raylet_messages(Path(ray_logs_dir()) / "maas-driver.log")
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")


def divert_raylet_messages(path: Path) -> None:
    """Write the messages Ray pushes to the driver (worker start-up warnings, retried tasks at
    shutdown) to ``path`` instead of this terminal. Ray prints them with its module-level
    ``print_to_stdstream`` from a listener thread, whatever ``log_to_driver`` says."""
    try:
        from ray._private import worker
    except ImportError:  # another Ray version: leave its default
        return
    sink = path.open("a", encoding="utf-8")

    def to_file(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines") or []:
            sink.write(f"({data.get('pid', 'ray')}) {line}\n")
        sink.flush()

    worker.print_to_stdstream = to_file


def ray_logs_dir() -> str:
    """The folder of the connected Ray's log files (every replica's and worker's output)."""
    try:
        from ray._private import worker

        return str(worker._global_node.get_logs_dir_path())
    except (ImportError, AttributeError):
        return "/tmp/ray/session_latest/logs"
