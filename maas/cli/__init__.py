"""The ``maas`` command: prepare models, serve, train, show status.

One module per command group: :mod:`maas.cli.serving` (``prepare``, ``serve``, ``deploy``,
``status``), :mod:`maas.cli.models` (``train``, ``models``, ``rollout``, ``keys``), and the local
Ray and Serve they start (:mod:`maas.cli.local_ray`). This module holds the parser and ``main``.
"""

from __future__ import annotations

import argparse

from maas.cli.local_ray import (
    SERVE_THROUGHPUT_ENV,
    is_loopback_ray,
    ray_env,
    serve_grpc_on_loopback,
    start_serve,
)
from maas.cli.models import cmd_keys, cmd_models, cmd_rollout, cmd_train, split_address
from maas.cli.serving import cmd_deploy, cmd_prepare, cmd_serve, cmd_status
from maas.defaults import default_file

__all__ = ["DEFAULT_CONFIG", "SERVE_THROUGHPUT_ENV", "ray_env", "build_parser", "main", "serve_grpc_on_loopback",
           "split_address", "start_serve"]

DEFAULT_CONFIG = default_file("maas-cpu.yaml")  # cluster/maas-cpu.yaml in a checkout


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
    command.add_argument("--max-in-flight", type=int, default=None,
                         help="requests in flight at once (default: ingress.fair_share.max_in_flight_requests)")
    command.add_argument("--max-in-flight-sequences", type=int, default=None,
                         help="generated sequences in flight at once on each generator "
                              "(default: ingress.fair_share.sequence_share of its slots)")


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
        command.add_argument("--canary", type=float, default=None, metavar="PERCENT",
                             help="answer this share of the model's requests (0-100) with the version, "
                                  "rolled back or promoted by itself (classifier.canary); 0 stops a canary")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    address = getattr(args, "address", None)
    if args.command == "train":
        address = split_address(args.train_args, address)[1]
    ray_env(local_ray=is_loopback_ray(address))
    return int(args.func(args))
