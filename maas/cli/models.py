"""``maas train``, ``maas models``, ``maas rollout`` and ``maas keys``: the model registry's and the
API keys' commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from maas.cli.local_ray import start_ray
from maas.config import load_app_config


def cmd_train(args: argparse.Namespace) -> int:
    """Train into the registry; ``cluster/train-<task>.yaml`` gives the defaults if present."""
    from pipelines.training.background_training import train_config_file
    from pipelines.training.lora_tasks import GENERATOR_TASKS
    from pipelines.training.train import main as train_main

    options, address = split_address(args.train_args, args.address)
    if args.task in GENERATOR_TASKS:  # a LoRA adapter of a served generator
        from pipelines.training.lora import main as lora_main

        start_ray(address)
        return int(lora_main([args.task, *options]) or 0)
    train_args = [args.task, *options]
    config_file = train_config_file(args.task)
    if config_file and "--config" not in options:
        train_args += ["--config", str(config_file)]
    start_ray(address)
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
    """``maas models list``: every registry version with its metrics; ``*`` marks the live one; a
    challenger's shadow traffic statistics, a running canary and the latest canary decisions
    follow its model's versions."""
    from maas.storage.canary_store import CanaryStore
    from maas.storage.registry import ModelRegistry
    from maas.storage.shadow_stats import ShadowLog

    registry = ModelRegistry(registry_dir(args))
    print(f"{'':2}{'model':24} {'created':26} {'task':10} {'kind':9} {'val-F1':>7} {'test-F1':>7} "
          f"{'baseline':>8}  labels")
    for name in registry.names():
        versions = registry.versions(name)
        for v in versions:
            m = v.metrics
            if _kind(v.config) == "lora":  # an adapter: exact-match accuracy, and the base model's
                m = {"test_macro_f1": m.get("test_accuracy"), "baseline_test_macro_f1": m.get("base_test_accuracy")}
            print(f"{'*' if v.live else ' ':2}{v.ref:24} {v.created_at:26} {v.task or '-':10} "
                  f"{_kind(v.config):9} {_num(m.get('validation_macro_f1')):>7} "
                  f"{_num(m.get('test_macro_f1')):>7} {_num(m.get('baseline_test_macro_f1')):>8}  "
                  f"{','.join(v.labels)}")
        challenger = registry.challenger(name)
        if challenger and _kind(versions[-1].config) != "lora":  # classifiers only are shadowed
            print(shadow_line(name, registry.live_version(name) or "-", challenger, ShadowLog(registry)))
        for line in canary_lines(name, CanaryStore(registry).read(name)):
            print(line)
    print(f"(registry: {registry.root})")
    return 0


def shadow_line(name: str, live: str, challenger: str, log: Any) -> str:
    """``  shadow of NAME: vC against live vL: ...``: what shadow traffic found for the challenger."""
    head = f"  shadow of {name}: {challenger} against live {live}:"
    record = log.get(name, live, challenger)
    if record is None:
        return f"{head} no request shadowed yet"
    (live_conf, challenger_conf), (live_s, challenger_s) = record.mean_confidence(), record.mean_latency_s()
    return (f"{head} {record.requests} requests ({record.errors} errors, {record.dropped} dropped), "
            f"agreement {_num(record.agreement())} over {record.texts} texts, confidence "
            f"{_num(live_conf)} vs {_num(challenger_conf)}, latency {_ms(live_s)} vs {_ms(challenger_s)}")


def canary_lines(name: str, state: Any, decisions: int = 3) -> list[str]:
    """``  canary of NAME: ...`` for a running canary, then its model's latest decisions."""
    lines = []
    if (record := state.active) is not None:
        held = "; held: passed, waiting for the promotion rule" if record.held else ""
        lines.append(f"  canary of {name}: {record.version} at {record.percent:g}% against live "
                     f"{record.live_version}: canary {_arm(record.canary)}, live {_arm(record.live)}{held}")
    for decision in state.decisions[-decisions:]:
        lines.append(f"  canary decision {decision.at}: {decision.action} {decision.version} "
                     f"(live {decision.live_version}): {decision.reason}")
    return lines


def _arm(tally: Any) -> str:
    return f"{tally.requests} requests ({tally.errors} errors, p95 {_ms(tally.p95_s())})"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def registry_dir(args: argparse.Namespace) -> str | None:
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
    """``maas rollout NAME VERSION``: make a registry version live; the service follows at once.
    An operator's action: the promotion rule is not applied (a canary's promotion applies it);
    a running canary of the model is cancelled.
    With ``--canary PERCENT``: start a canary of the version instead (``0`` stops one)."""
    from maas.storage.registry import ModelRegistry, RegistryError
    from maas.storage.served_adapters import check_servable, is_adapter

    registry = ModelRegistry(registry_dir(args))
    if getattr(args, "canary", None) is not None:
        return start_canary(args, registry)
    previous = registry.live_version(args.name)
    try:
        target = registry.get(args.name, args.version)
        if is_adapter(target):  # an adapter goes live only where its base model serves it
            check_servable(target, load_app_config(args.config), args.config)
        version = registry.set_live(args.name, args.version, allow_label_change=args.allow_label_change)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from maas.storage.canary_store import CanaryStore

    if CanaryStore(registry).stop(args.name, f"ended by `maas rollout` of {args.version}"):
        print(f"[maas] the running canary of '{args.name}' is cancelled.")
    kind = "generation" if is_adapter(version) else "classify"
    print(f"[maas] {version.ref} is live (was {previous or 'none'}); {kind} requests for "
          f"'{args.name}' use it from the next request on.")
    return 0


def start_canary(args: argparse.Namespace, registry: Any) -> int:
    """``maas rollout NAME VERSION --canary PERCENT``: store a canary of a classifier version
    (``0``: stop the running one); the service's replicas route, judge and decide, with the
    thresholds of the service's config (each judging decision stores the ones it applied)."""
    from maas.storage.canary_store import CanaryStore
    from maas.storage.registry import RegistryError
    from maas.storage.served_adapters import is_adapter

    store = CanaryStore(registry)
    try:
        if args.canary == 0:
            stopped = store.stop(args.name)
            print(f"[maas] canary of {args.name}/{stopped.version} stopped." if stopped
                  else f"[maas] no canary of '{args.name}' runs.")
            return 0
        if is_adapter(registry.get(args.name, args.version)):
            raise RegistryError("a canary is for registry classifiers; roll an adapter out with "
                                "`maas rollout` without --canary.")
        started = store.start(args.name, args.version, args.canary, args.allow_label_change)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[maas] canary of {args.name}/{args.version} started against live {started.live_version}: "
          f"{args.canary:g}% of the classify requests for '{args.name}' are answered by it from the next "
          "request on; it is rolled back or promoted by itself (`maas models list` shows how it does).")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """``maas keys add|revoke|list --file F``: API keys, stored hashed; the service re-reads the file."""
    from maas.edge import key_file

    try:
        if args.action == "add":
            models = [m for m in (args.models or "").split(",") if m]
            key_file.add_key(args.file, args.id, models, args.rpm, args.tpm, admin=args.admin,
                             max_open_batches=args.max_open_batches, max_storage_mib=args.max_storage_mib,
                             max_in_flight=args.max_in_flight, max_in_flight_sequences=args.max_in_flight_sequences)
        elif args.action == "revoke":
            key_file.revoke_key(args.file, args.id)
            print(f"[maas] key {args.id!r} revoked; the service refuses it within a second.")
        else:
            print(key_file.format_keys(key_file.list_keys(args.file)))
    except (key_file.KeyFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
