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

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "cluster" / "maas-cpu.yaml"
APP_NAME = "maas"
LOOPBACK = "127.0.0.1"


def _ray_env() -> None:
    """Environment every maas driver needs before ``import ray``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def prepare_models(config: AppConfig) -> None:
    """Prepare every embedded model the config names (convert SmolLM2, train sentiment)."""
    from maas import models

    for model in config.all_models():
        if not model.path.startswith(models.EMBEDDED_PREFIX):
            continue
        name = model.path.removeprefix(models.EMBEDDED_PREFIX)
        if name == models.SENTIMENT and not models.is_prepared(models.model_dir(name)):
            _train_default_sentiment()
        else:
            models.resolve_model_path(model.path, prepare=True)


def _train_default_sentiment() -> None:
    print("[maas] no trained sentiment model cached yet: training it now (a few minutes)...",
          file=sys.stderr)
    from pipelines.train import TrainConfig, train_classifier

    _start_ray(None)
    result = train_classifier(TrainConfig(task="sentiment"))
    print(f"[maas] sentiment model ready: {result.model_dir}", file=sys.stderr)


def _start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace="serve")
    else:
        ray.init(address="local", namespace="serve", include_dashboard=False,
                 _node_ip_address=LOOPBACK)


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
    prepare_models(config)
    _start_ray(args.address)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    import ray

    address = ray.get_runtime_context().gcs_address
    print(f"[maas] serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
          f"[maas] Ray cluster at {address}: `maas status --address {address}`; Ctrl-C stops.",
          flush=True)
    _wait_for_signal()
    serve.shutdown()
    return 0


def _wait_for_signal() -> None:
    stop = {"now": False}

    def on_signal(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["now"]:
        time.sleep(0.5)


def cmd_status(args: argparse.Namespace) -> int:
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
    from pipelines.train import main as train_main

    _start_ray(args.address)
    return int(train_main([args.task, *args.train_args]) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="NLP models as a service on Ray Serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, doc in (
        ("serve", cmd_serve, "start a local Ray and serve the application"),
        ("prepare", cmd_prepare, "prepare the embedded default models"),
        ("status", cmd_status, "show applications, deployments and replicas"),
        ("train", cmd_train, "fine-tune a classifier with Ray Train"),
    ):
        command = sub.add_parser(name, help=doc)
        command.set_defaults(func=func)
        command.add_argument("--address", default=None, help="Ray cluster address (default: local)")
        if name in ("serve", "prepare"):
            command.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config YAML")
        if name == "serve":
            command.add_argument("--host", default=None, help="HTTP host (default: from config)")
            command.add_argument("--port", type=int, default=None, help="HTTP port (default: 8000)")
        if name == "train":
            command.add_argument("task", help="task to train, e.g. sentiment or topic")
            command.add_argument("train_args", nargs=argparse.REMAINDER, help="training options")
    return parser


def main(argv: list[str] | None = None) -> int:
    _ray_env()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
