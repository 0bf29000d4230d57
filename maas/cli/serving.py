"""``maas prepare``, ``maas serve``, ``maas deploy`` and ``maas status``: the service's commands."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from maas.cli.local_ray import check_http_port, ray_logs_dir, start_serve
from maas.cli.models import registry_dir
from maas.config import AppConfig, load_app_config, load_serve_file
from maas.edge.exposure import check_deploy_exposure, check_exposure

APP_NAME = "maas"


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


def cmd_prepare(args: argparse.Namespace) -> int:
    prepare_models(load_app_config(args.config))
    print("[maas] all embedded models are prepared.", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve at once; train the registry classifiers with no live version in the background."""
    from ray import serve

    from maas.console import Console
    from pipelines.app import build_app
    from pipelines.training.background_training import (
        logical_cpus,
        mark_unfinished,
        plan_jobs,
        start_background_training,
    )

    console = Console()
    config = load_app_config(args.config)
    http = load_serve_file(args.config).http_options
    host = args.host or http.get("host", "127.0.0.1")
    port = args.port or int(http.get("port", 8000))
    check_exposure(host, config, args.allow_public_without_keys)
    if args.address is None:  # its own Ray: Serve's proxy binds here
        check_http_port(host, port)
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
    names = [j.name for j in jobs]  # a retrain on feedback adds its model's
    _wait_for_signal(console, config, names, training)
    console.phase("stopping")
    serve.shutdown()
    ray.shutdown()  # the background training ends with it: no status is written after this
    mark_unfinished(names, config.registry_dir)
    return 0


FEEDBACK_CHECK_S = 30.0
"""How often ``maas serve`` counts new feedback labels (``classifier.retrain_after_feedback``)."""


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
    next_check = time.monotonic() + FEEDBACK_CHECK_S
    while not stop["now"]:
        if training is not None:
            progress.poll()
            training = _report_if_finished(console, training)
        elif config.classifier.retrain_after_feedback and time.monotonic() >= next_check:
            next_check = time.monotonic() + FEEDBACK_CHECK_S
            training = _retrain_on_feedback(console, config, training_names)
        time.sleep(0.5)


def _retrain_on_feedback(console: Any, config: AppConfig, training_names: list[str]) -> Any:
    """Start the retrains that ``classifier.retrain_after_feedback`` asks for now, if any (one Ray
    task, as the first versions' training); returns its ``ObjectRef`` or None."""
    from pipelines.training.background_training import feedback_retrain_jobs, start_background_training

    jobs = feedback_retrain_jobs(config)
    if not jobs:
        return None
    training_names.extend(job.name for job in jobs if job.name not in training_names)
    console.phase(f"retraining {', '.join(j.name for j in jobs)} with its feedback in the background: "
                  "a challenger, live only if it is better on validation")
    return start_background_training(jobs, config.registry_dir)


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

    from maas.cli.running_ray import join_running_ray
    from maas.deploy import replicas_text

    join_running_ray(args.address or "auto")
    status = serve.status()
    _print_training(args)
    for name, app in status.applications.items():
        print(f"application {name}: {_name(app.status)}")
        for dep_name, dep in app.deployments.items():
            counts = {_name(state): n for state, n in dep.replica_states.items()}
            print(f"  {dep_name:40s} {_name(dep.status):10s} replicas: {replicas_text(counts, _name(dep.status))}")
    return 0


def _print_training(args: argparse.Namespace) -> None:
    """The training state of every registry model that has one (``training.json``)."""
    from maas.storage.registry import ModelRegistry

    registry = ModelRegistry(registry_dir(args))
    rows = [(name, registry.live_version(name), registry.training_status(name)) for name in registry.names()]
    for name, live, run in rows:
        if run is not None:
            print(f"model {name:30s} live: {live or 'none':6s} training: {run.line()}")


def _name(state: Any) -> str:
    return str(getattr(state, "value", state))
