"""The ``maas`` command: prepare models, serve, train, show status."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from maas.config import AppConfig, load_app_config, load_serve_file

CLUSTER_DIR = Path(__file__).resolve().parent.parent / "cluster"
DEFAULT_CONFIG = CLUSTER_DIR / "maas-cpu.yaml"
APP_NAME = "maas"
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


def _ray_env(local_ray: bool = False) -> None:
    """Environment every maas driver needs before ``import ray``.

    ``local_ray``: this process starts (or joins, at a loopback address) a single-node Ray that
    listens on loopback only. Not for a driver that joins a cluster: it must advertise an
    address the other nodes can reach.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_ray:
        # Read at `import ray`: else Ray swaps a 127.0.0.1 node IP for the host's address and
        # binds all interfaces (ray/_private/services.py, resolve_ip_for_localhost).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def prepare_models(config: AppConfig) -> None:
    """Prepare every embedded model the config names: convert SmolLM2, and train each registry
    classifier of a built-in task (sentiment, topic) that has no live version yet."""
    from maas import models
    from maas.registry import REGISTRY_PREFIX, ModelRegistry

    registry = ModelRegistry(config.registry_dir)
    for model in [*config.generators, *config.classifier.models, *config.encoder.models]:
        if model.path.startswith(models.EMBEDDED_PREFIX):
            models.resolve_model_path(model.path, prepare=True)
        elif model.path.startswith(REGISTRY_PREFIX):
            name = model.path.removeprefix(REGISTRY_PREFIX)
            if registry.live_version(name) is None:
                _train_default(name, config.registry_dir)
    _check_ner_pipelines(config)


def _check_ner_pipelines(config: AppConfig) -> None:
    """NER pipelines come installed (spaCy packages): check that each one is there."""
    import importlib.util

    from maas.engines.ner import resolve_pipeline

    for model in config.ner.models:
        package = resolve_pipeline(model.path)
        if not Path(package).exists() and importlib.util.find_spec(package) is None:
            raise SystemExit(f"[maas] the NER pipeline '{package}' of '{model.name}' is not installed.")


def train_config_file(task: str) -> Path | None:
    """``cluster/train-<task>.yaml``: the default training config of a task, if there is one."""
    path = CLUSTER_DIR / f"train-{task}.yaml"
    return path if path.is_file() else None


def _train_default(name: str, registry_dir: str | None) -> None:
    from pipelines.train import config_from_args, train_classifier
    from pipelines.training_data import TASKS

    if name not in TASKS:
        raise SystemExit(f"[maas] the registry model '{name}' has no live version: train it with "
                         f"`maas train <task> --model-name {name}` first.")
    print(f"[maas] no live '{name}' model in the registry yet: training it now (a few minutes)...",
          file=sys.stderr)
    args = [name, *(["--registry-dir", registry_dir] if registry_dir else [])]
    config_file = train_config_file(name)
    args += ["--config", str(config_file)] if config_file else []
    _start_ray(None)
    result = train_classifier(config_from_args(args))
    print(f"[maas] {result.model_ref} is live: test macro-F1 {result.metrics['test_macro_f1']:.3f} "
          f"(TF-IDF baseline {result.metrics['baseline_test_macro_f1']:.3f})", file=sys.stderr)


def is_loopback_ray(address: str | None) -> bool:
    """Whether a Ray address means a Ray on this machine's loopback (None: one started here)."""
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _start_ray(address: str | None) -> None:
    """Join the Ray at ``address``, or start a local one that listens on loopback only."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace="serve")
        return
    # The address ray.init resolves _node_ip_address="127.0.0.1" to (see _ray_env).
    loopback_only = ray.util.get_node_ip_address() == LOOPBACK
    if not loopback_only:
        print("[maas] warning: the local Ray will listen beyond loopback (ray was imported "
              "without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).", file=sys.stderr)
    for name, value in SERVE_THROUGHPUT_ENV.items():  # inherited by the Ray this process starts
        os.environ.setdefault(name, value)
    hook = {"worker_process_setup_hook": "maas.cli.serve_grpc_on_loopback"}
    ray.init(address="local", namespace="serve", include_dashboard=False,
             _node_ip_address=LOOPBACK, runtime_env=hook if loopback_only else None)


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


def start_serve(host: str, port: int, address: str | None = None) -> None:
    """What ``maas serve`` starts before its application: Ray, then Serve's HTTP proxy."""
    from ray import serve

    _start_ray(address)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")


def cmd_prepare(args: argparse.Namespace) -> int:
    prepare_models(load_app_config(args.config))
    print("[maas] all embedded models are prepared.", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ray import serve

    from pipelines.app import build_app

    config = load_app_config(args.config)
    http = load_serve_file(args.config).http_options
    host = args.host or http.get("host", "127.0.0.1")
    port = args.port or int(http.get("port", 8000))
    check_exposure(host, config, args.allow_public_without_keys)
    prepare_models(config)
    start_serve(host, port, args.address)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    import ray

    address = ray.get_runtime_context().gcs_address
    print(f"[maas] serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
          f"[maas] Ray cluster at {address}: `maas status --address {address}`; Ctrl-C stops.",
          flush=True)
    _wait_for_signal()
    serve.shutdown()
    return 0


def check_exposure(host: str, config: AppConfig, forced: bool) -> None:
    """Refuse to listen beyond loopback without API keys, unless explicitly forced."""
    import ipaddress

    loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    if config.ingress.api_keys_file:
        return
    if loopback:
        print(f"[maas] no API keys configured (ingress.api_keys_file): listening on {host} only.",
              file=sys.stderr)
        return
    if not forced:
        raise SystemExit(f"[maas] refusing to listen on {host} without API keys: set "
                         "ingress.api_keys_file (see `maas keys add`), or pass "
                         "--allow-public-without-keys.")


def _wait_for_signal() -> None:
    stop = {"now": False}

    def on_signal(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["now"]:
        time.sleep(0.5)


def cmd_keys(args: argparse.Namespace) -> int:
    """``maas keys add|revoke|list --file F``: API keys, stored hashed; the service re-reads the file."""
    from maas import auth

    try:
        if args.action == "add":
            models = [m for m in (args.models or "").split(",") if m]
            auth.add_key(args.file, args.id, models, args.rpm, args.tpm)
        elif args.action == "revoke":
            auth.revoke_key(args.file, args.id)
            print(f"[maas] key {args.id!r} revoked; the service refuses it within a second.")
        else:
            print(auth.format_keys(auth.list_keys(args.file)))
    except (auth.KeyFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """``maas deploy CONFIG --address DASHBOARD``: what ``serve deploy`` does, then wait and show."""
    from maas.deploy import deploy, format_status, wait_until_running

    deploy(args.file, args.address)
    print(f"[maas] {args.file} accepted by {args.address or 'the local dashboard'}", flush=True)
    if args.wait:
        print(format_status(wait_until_running(args.address, timeout_s=args.timeout)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Replicas per deployment: from the dashboard (an ``http`` address) or through Ray."""
    if args.address and args.address.startswith("http"):
        from maas.deploy import format_status, replica_status

        print(format_status(replica_status(args.address)))
        return 0
    from ray import serve

    _start_ray(args.address or "auto")
    status = serve.status()
    for name, app in status.applications.items():
        print(f"application {name}: {_name(app.status)}")
        for dep_name, dep in app.deployments.items():
            replicas = ", ".join(f"{_name(state)}={n}" for state, n in dep.replica_states.items())
            print(f"  {dep_name:40s} {_name(dep.status):10s} replicas: {replicas or 'none'}")
    return 0


def _name(state: Any) -> str:
    return str(getattr(state, "value", state))


def cmd_train(args: argparse.Namespace) -> int:
    """Train into the registry; ``cluster/train-<task>.yaml`` gives the defaults if present."""
    from pipelines.train import main as train_main

    train_args = [args.task, *args.train_args]
    config_file = train_config_file(args.task)
    if config_file and "--config" not in args.train_args:
        train_args += ["--config", str(config_file)]
    _start_ray(args.address)
    return int(train_main(train_args) or 0)


def cmd_models(args: argparse.Namespace) -> int:
    """``maas models list``: every registry version with its metrics; ``*`` marks the live one."""
    from maas.registry import ModelRegistry

    registry = ModelRegistry(_registry_dir(args))
    print(f"{'':2}{'model':28} {'created':26} {'task':10} {'macro-F1':>8} {'baseline':>8}  labels")
    for name in registry.names():
        for v in registry.versions(name):
            f1, base = v.metrics.get("test_macro_f1"), v.metrics.get("baseline_test_macro_f1")
            print(f"{'*' if v.live else ' ':2}{v.ref:28} {v.created_at:26} {v.task or '-':10} "
                  f"{_num(f1):>8} {_num(base):>8}  {','.join(v.labels)}")
    print(f"(registry: {registry.root})")
    return 0


def _registry_dir(args: argparse.Namespace) -> str | None:
    """``--registry-dir``, else the one of the Serve config (``--config``), else the default."""
    return args.registry_dir or load_app_config(args.config).registry_dir


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_rollout(args: argparse.Namespace) -> int:
    """``maas rollout NAME VERSION``: make a registry version live; the service follows at once."""
    from maas.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(_registry_dir(args))
    previous = registry.live_version(args.name)
    try:
        version = registry.set_live(args.name, args.version, allow_label_change=args.allow_label_change)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[maas] {version.ref} is live (was {previous or 'none'}); classify requests for "
          f"'{args.name}' use it from the next request on.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="NLP models as a service on Ray Serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, doc in (
        ("serve", cmd_serve, "start a local Ray and serve the application"),
        ("prepare", cmd_prepare, "prepare the embedded default models"),
        ("status", cmd_status, "show applications, deployments and replicas"),
        ("train", cmd_train, "fine-tune a classifier with Ray Train into the model registry"),
        ("deploy", cmd_deploy, "deploy a Serve config to a running cluster (like `serve deploy`)"),
        ("models", cmd_models, "list the model registry's versions (`maas models list`)"),
        ("keys", cmd_keys, "add, revoke or list API keys (`maas keys add --file F --id ID`)"),
        ("rollout", cmd_rollout, "make a registry version live in the running service"),
    ):
        command = sub.add_parser(name, help=doc)
        command.set_defaults(func=func)
        if name in ("models", "rollout"):
            _registry_options(command, name)
            continue
        if name == "keys":
            _key_options(command)
            continue
        command.add_argument("--address", default=None,
                             help="Ray cluster address; deploy/status: the dashboard URL, "
                                  "e.g. http://127.0.0.1:8265")
        if name == "deploy":
            command.add_argument("file", nargs="?", default=str(DEFAULT_CONFIG), help="Serve config YAML")
            command.add_argument("--wait", action="store_true", help="wait until every deployment runs")
            command.add_argument("--timeout", type=float, default=600, help="seconds --wait waits")
        if name in ("serve", "prepare"):
            command.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config YAML")
        if name == "serve":
            command.add_argument("--host", default=None, help="HTTP host (default: from config)")
            command.add_argument("--port", type=int, default=None, help="HTTP port (default: 8000)")
            command.add_argument("--allow-public-without-keys", action="store_true",
                                 help="listen on a non-loopback host with no API keys (unsafe)")
        if name == "train":
            command.add_argument("task", help="task to train, e.g. sentiment or topic")
            command.add_argument("train_args", nargs=argparse.REMAINDER, help="training options")
    return parser


def _key_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["add", "revoke", "list"])
    command.add_argument("--file", required=True, help="the key file (ingress.api_keys_file)")
    command.add_argument("--id", help="the key's public name (add, revoke)")
    command.add_argument("--models", help="comma-separated models the key may use (default: all)")
    command.add_argument("--rpm", type=int, default=None, help="requests per minute (default: no limit)")
    command.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: no limit)")


def _registry_options(command: argparse.ArgumentParser, name: str) -> None:
    command.add_argument("--registry-dir", default=None,
                         help="model registry (default: the config's, else the cache's)")
    command.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config YAML")
    if name == "models":
        command.add_argument("action", choices=["list"], nargs="?", default="list")
    else:
        command.add_argument("name", help="registry model name, e.g. sentiment")
        command.add_argument("version", help="version to make live, e.g. v2")
        command.add_argument("--allow-label-change", action="store_true",
                             help="roll out a version whose labels differ from the live one's")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _ray_env(local_ray=is_loopback_ray(getattr(args, "address", None)))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
