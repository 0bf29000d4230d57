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
from maas.defaults import default_file
from maas.edge.exposure import check_deploy_exposure, check_exposure
from maas.offline import set_offline_env

DEFAULT_CONFIG = default_file("maas-cpu.yaml")  # cluster/maas-cpu.yaml in a checkout
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
    set_offline_env()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if local_ray:
        # Read at `import ray`: else Ray swaps a 127.0.0.1 node IP for the host's address and
        # binds all interfaces (ray/_private/services.py, resolve_ip_for_localhost).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def prepare_models(config: AppConfig) -> None:
    """Prepare every embedded model the config names (SmolLM2 is converted once) and check the
    NER pipelines. Registry classifiers are not trained here: ``maas serve`` trains those with no
    live version in the background (:mod:`pipelines.training.background_training`)."""
    from maas.storage import embedded as models

    for model in [*config.generators, *config.classifier.models, *config.encoder.models]:
        if model.path.startswith(models.EMBEDDED_PREFIX):
            models.resolve_model_path(model.path, prepare=True)
    _check_ner_pipelines(config)


def _check_ner_pipelines(config: AppConfig) -> None:
    """NER pipelines come installed (spaCy packages): check that each one is there."""
    import importlib.util

    from maas.engines.ner import resolve_pipeline

    for model in config.ner.models:
        package = resolve_pipeline(model.path)
        if not Path(package).exists() and importlib.util.find_spec(package) is None:
            raise SystemExit(f"[maas] the NER pipeline '{package}' of '{model.name}' is not installed.")


def is_loopback_ray(address: str | None) -> bool:
    """Whether a Ray address means a Ray on this machine's loopback (None: one started here)."""
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _start_ray(address: str | None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Join the Ray at ``address``, or start a local one that listens on loopback only.

    ``num_cpus``: logical CPUs of a local Ray (default: the machine's). ``quiet``: the workers'
    output and Ray's own messages stay in Ray's log files instead of this terminal.
    """
    import logging

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


def start_serve(host: str, port: int, address: str | None = None, num_cpus: int | None = None,
                quiet: bool = False) -> None:
    """What ``maas serve`` starts before its application: Ray, then Serve's HTTP proxy."""
    import logging

    from ray import serve

    _start_ray(address, num_cpus=num_cpus, quiet=quiet)
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


def cmd_prepare(args: argparse.Namespace) -> int:
    prepare_models(load_app_config(args.config))
    print("[maas] all embedded models are prepared.", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve at once; train the registry classifiers with no live version in the background."""
    from ray import serve

    from maas.console import Console
    from pipelines.app import build_app
    from pipelines.training.background_training import logical_cpus, plan_jobs, start_background_training

    console = Console()
    config = load_app_config(args.config)
    http = load_serve_file(args.config).http_options
    host = args.host or http.get("host", "127.0.0.1")
    port = args.port or int(http.get("port", 8000))
    check_exposure(host, config, args.allow_public_without_keys)
    console.phase("preparing the embedded models")
    prepare_models(config)
    jobs, untrainable = plan_jobs(config)
    for name in untrainable:
        console.phase(f"'{name}' has no live version and no training config: it answers 503 "
                      f"until `maas train ... --model-name {name}` makes one live")
    console.phase("starting Ray and the service (about a minute)")
    local = args.address is None
    start_serve(host, port, args.address, quiet=local,
                num_cpus=logical_cpus(config, jobs, os.cpu_count() or 1) if local else None)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    import ray

    address = ray.get_runtime_context().gcs_address
    console.phase(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    console.phase(f"Ray cluster at {address}: `maas status --address {address}`; Ctrl-C stops")
    console.phase(f"logs of Ray, the replicas and the training: {ray_logs_dir()}")
    training = start_background_training(jobs, config.registry_dir) if jobs else None
    if jobs:
        console.phase(f"training {', '.join(j.name for j in jobs)} in the background: a linear probe "
                      "goes live first (503 model_not_ready until then), then a fine-tuned "
                      "challenger replaces it if it is better on validation")
    _wait_for_signal(console, config, [j.name for j in jobs], training)
    console.phase("stopping")
    serve.shutdown()
    return 0


def _wait_for_signal(console: Any, config: AppConfig, training_names: list[str],
                     training: Any) -> None:
    """Until SIGINT/SIGTERM: follow the background trainings on the console."""
    from maas.console import TrainingProgress
    from maas.storage.registry import ModelRegistry

    stop = {"now": False}

    def on_signal(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    progress = TrainingProgress(ModelRegistry(config.registry_dir), training_names, console)
    while not stop["now"]:
        if training is not None:
            progress.poll()
            training = _report_if_finished(console, training)
        time.sleep(0.5)


def _report_if_finished(console: Any, training: Any) -> Any:
    """When the background task ends: a line per model that failed; returns None once done."""
    import ray

    ready, _ = ray.wait([training], timeout=0)
    if not ready:
        return training
    try:
        outcomes = ray.get(training)
    except Exception as exc:  # noqa: BLE001 - the task itself died: say so, keep serving
        console.phase(f"background training stopped: {type(exc).__name__}; see Ray's logs")
        return None
    failed = {name: outcome for name, outcome in outcomes.items() if outcome != "ok"}
    for name, outcome in failed.items():
        console.phase(f"{name}: training failed ({outcome}); the other models keep serving")
    console.phase("background training finished" + (" with failures" if failed else ""))
    return None


def cmd_keys(args: argparse.Namespace) -> int:
    """``maas keys add|revoke|list --file F``: API keys, stored hashed; the service re-reads the file."""
    from maas.edge import key_file

    try:
        if args.action == "add":
            models = [m for m in (args.models or "").split(",") if m]
            key_file.add_key(args.file, args.id, models, args.rpm, args.tpm, admin=args.admin,
                             max_open_batches=args.max_open_batches, max_storage_mib=args.max_storage_mib)
        elif args.action == "revoke":
            key_file.revoke_key(args.file, args.id)
            print(f"[maas] key {args.id!r} revoked; the service refuses it within a second.")
        else:
            print(key_file.format_keys(key_file.list_keys(args.file)))
    except (key_file.KeyFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """``maas deploy CONFIG --address DASHBOARD``: what ``serve deploy`` does, then wait and show."""
    from maas.deploy import deploy, format_status, wait_until_running

    check_deploy_exposure(args.file, args.allow_public_without_keys)
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
    _print_training(args)
    for name, app in status.applications.items():
        print(f"application {name}: {_name(app.status)}")
        for dep_name, dep in app.deployments.items():
            replicas = ", ".join(f"{_name(state)}={n}" for state, n in dep.replica_states.items())
            print(f"  {dep_name:40s} {_name(dep.status):10s} replicas: {replicas or 'none'}")
    return 0


def _print_training(args: argparse.Namespace) -> None:
    """The training state of every registry model that has one (``training.json``)."""
    from maas.storage.registry import ModelRegistry

    registry = ModelRegistry(_registry_dir(args))
    rows = [(name, registry.live_version(name), registry.training_status(name)) for name in registry.names()]
    for name, live, run in rows:
        if run is not None:
            print(f"model {name:30s} live: {live or 'none':6s} training: {run.line()}")


def _name(state: Any) -> str:
    return str(getattr(state, "value", state))


def cmd_train(args: argparse.Namespace) -> int:
    """Train into the registry; ``cluster/train-<task>.yaml`` gives the defaults if present."""
    from pipelines.training.background_training import train_config_file
    from pipelines.training.lora_tasks import GENERATOR_TASKS
    from pipelines.training.train import main as train_main

    options, address = split_address(args.train_args, args.address)
    if args.task in GENERATOR_TASKS:  # a LoRA adapter of a served generator
        from pipelines.training.lora import main as lora_main

        _start_ray(address)
        return int(lora_main([args.task, *options]) or 0)
    train_args = [args.task, *options]
    config_file = train_config_file(args.task)
    if config_file and "--config" not in options:
        train_args += ["--config", str(config_file)]
    _start_ray(address)
    return int(train_main(train_args) or 0)


def split_address(train_args: list[str], address: str | None) -> tuple[list[str], str | None]:
    """``maas train TASK ... --address A``: the Ray address may also follow the task (everything
    after the task goes to the trainer, which has no ``--address``); the last one given wins."""
    options: list[str] = []
    rest = iter(train_args)
    for arg in rest:
        if arg == "--address":
            address = next(rest, None) or address
        elif arg.startswith("--address="):
            address = arg.split("=", 1)[1]
        else:
            options.append(arg)
    return options, address


def cmd_models(args: argparse.Namespace) -> int:
    """``maas models list``: every registry version with its metrics; ``*`` marks the live one."""
    from maas.storage.registry import ModelRegistry

    registry = ModelRegistry(_registry_dir(args))
    print(f"{'':2}{'model':24} {'created':26} {'task':10} {'kind':9} {'val-F1':>7} {'test-F1':>7} "
          f"{'baseline':>8}  labels")
    for name in registry.names():
        for v in registry.versions(name):
            m = v.metrics
            if _kind(v.config) == "lora":  # an adapter: exact-match accuracy, and the base model's
                m = {"test_macro_f1": m.get("test_accuracy"), "baseline_test_macro_f1": m.get("base_test_accuracy")}
            print(f"{'*' if v.live else ' ':2}{v.ref:24} {v.created_at:26} {v.task or '-':10} "
                  f"{_kind(v.config):9} {_num(m.get('validation_macro_f1')):>7} "
                  f"{_num(m.get('test_macro_f1')):>7} {_num(m.get('baseline_test_macro_f1')):>8}  "
                  f"{','.join(v.labels)}")
    print(f"(registry: {registry.root})")
    return 0


def _registry_dir(args: argparse.Namespace) -> str | None:
    """``--registry-dir``, else the one of the Serve config (``--config``), else the default."""
    return args.registry_dir or load_app_config(args.config).registry_dir


def _kind(config: dict[str, Any]) -> str:
    """``probe`` (frozen encoder, fitted head), ``fine-tune``, or ``lora`` (a generator's adapter)."""
    if config.get("kind") == "lora-adapter":
        return "lora"
    return "probe" if config.get("fine_tune") is False else "fine-tune"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_rollout(args: argparse.Namespace) -> int:
    """``maas rollout NAME VERSION``: make a registry version live; the service follows at once."""
    from maas.storage.registry import ModelRegistry, RegistryError
    from maas.storage.served_adapters import check_servable, is_adapter

    registry = ModelRegistry(_registry_dir(args))
    previous = registry.live_version(args.name)
    try:
        target = registry.get(args.name, args.version)
        if is_adapter(target):  # an adapter goes live only where its base model serves it
            check_servable(target, load_app_config(args.config), args.config)
        version = registry.set_live(args.name, args.version, allow_label_change=args.allow_label_change)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "generation" if is_adapter(version) else "classify"
    print(f"[maas] {version.ref} is live (was {previous or 'none'}); {kind} requests for "
          f"'{args.name}' use it from the next request on.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="NLP models as a service on Ray Serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, doc in (
        ("serve", cmd_serve, "start a local Ray and serve the application"),
        ("prepare", cmd_prepare, "prepare the embedded default models"),
        ("status", cmd_status, "show applications, deployments and replicas"),
        ("train", cmd_train, "fine-tune a classifier (or a generator's LoRA adapter: lora-topic, "
                              "lora-sentiment) with Ray Train into the model registry"),
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
        if name in ("serve", "prepare", "status"):
            command.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config YAML")
        if name == "status":
            command.add_argument("--registry-dir", default=None,
                                 help="model registry (default: the config's, else the cache's)")
        if name == "serve":
            command.add_argument("--host", default=None, help="HTTP host (default: from config)")
            command.add_argument("--port", type=int, default=None, help="HTTP port (default: 8000)")
        if name in ("serve", "deploy"):
            command.add_argument("--allow-public-without-keys", action="store_true",
                                 help="listen on a non-loopback host with no API keys (unsafe)")
        if name == "train":
            command.add_argument("task", help="task to train, e.g. sentiment, topic or lora-topic")
            command.add_argument("train_args", nargs=argparse.REMAINDER, help="training options")
    return parser


def _key_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["add", "revoke", "list"])
    command.add_argument("--file", required=True, help="the key file (ingress.api_keys_file)")
    command.add_argument("--id", help="the key's public name (add, revoke)")
    command.add_argument("--models", help="comma-separated models the key may use (default: all)")
    command.add_argument("--rpm", type=int, default=None, help="requests per minute (default: no limit)")
    command.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: no limit)")
    command.add_argument("--admin", action="store_true",
                         help="an operator key: may also read /metrics (add)")
    command.add_argument("--max-open-batches", type=int, default=None,
                         help="batches not yet ended at once (default: ingress.max_open_batches_per_key)")
    command.add_argument("--max-storage-mib", type=int, default=None,
                         help="MiB of stored files (default: ingress.max_storage_mib_per_key)")


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
    address = getattr(args, "address", None)
    if args.command == "train":
        address = split_address(args.train_args, address)[1]
    _ray_env(local_ray=is_loopback_ray(address))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
