"""First versions of the service's registry classifiers, trained in the background while it serves.

``maas serve`` starts the service at once; a registry classifier with no live version answers
503 (``model_not_ready``) until its first version goes live through the registry, with no
restart. Each such model is trained by the same pipeline as ``maas train``
(:func:`pipelines.training.train.train_classifier`), in one Ray task on the service's own Ray, in two
rounds:

1. **fast first**: a linear probe on the frozen encoder (``fine_tune: false``), the fastest
   honest model, goes live as ``<name>/v1`` within minutes;
2. **better later**: the full fine-tune of the model's training config runs as a challenger
   (``promote_if_better``) and goes live only if it beats the live version on the validation
   split; both versions stay in the registry with their metrics (``maas models list``).

Every probe runs before any fine-tune, so every model answers as early as it can. Where a run
stands is written to the registry (:class:`maas.storage.registry.TrainingStatus`), which ``/v1/models``,
``maas status`` and ``maas serve``'s progress line read. A failed run is recorded there and the
rest of the service keeps serving.
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from maas.config import AppConfig, EncoderModelConfig
from maas.defaults import default_file
from maas.storage.registry import REGISTRY_PREFIX, ModelRegistry, TrainingStatus


class BackgroundJob(BaseModel):
    """The training of one registry classifier's first versions: a probe, then a challenger."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The registry name (and the name clients use).")
    probe: dict[str, Any] = Field(description="TrainConfig fields of the linear-probe version.")
    challenger: dict[str, Any] | None = Field(
        description="TrainConfig fields of the fine-tuned challenger; None: the probe only."
    )

    def cpus(self) -> float:
        """Logical CPUs its Ray Train workers reserve at once."""
        from pipelines.training.train import TrainConfig

        config = TrainConfig.model_validate(self.challenger or self.probe)
        return config.num_workers * config.cpus_per_worker


def train_config_file(name: str) -> Path | None:
    """``cluster/train-<name>.yaml``: the default training config of a model, if there is one."""
    path = default_file(f"train-{name}.yaml")
    return path if path.is_file() else None


def training_values(model: EncoderModelConfig, name: str) -> dict[str, Any] | None:
    """The TrainConfig fields of a registry model: its ``train_config`` file, else
    ``cluster/train-<name>.yaml``, else the built-in task of that name; None if there is none."""
    import yaml

    from pipelines.training.training_data import TASKS

    path = Path(model.train_config) if model.train_config else train_config_file(name)
    if path is not None:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
        return values
    return {"task": name} if name in TASKS else None


def plan_jobs(config: AppConfig) -> tuple[list[BackgroundJob], list[str]]:
    """The background jobs for the registry classifiers with no live version, and the names of
    those that cannot be trained here (no training config and no built-in task)."""
    registry = ModelRegistry(config.registry_dir)
    jobs, untrainable = [], []
    for model in config.classifier.models:
        if not model.path.startswith(REGISTRY_PREFIX):
            continue
        name = model.path.removeprefix(REGISTRY_PREFIX)
        if registry.live_version(name) is not None:
            continue
        values = training_values(model, name)
        if values is None:
            untrainable.append(name)
            continue
        jobs.append(job_for(name, values, config.registry_dir))
    return jobs, untrainable


def job_for(name: str, values: dict[str, Any], registry_dir: str | None) -> BackgroundJob:
    """A probe-then-challenger job from a model's TrainConfig fields."""
    from pipelines.training.train import TrainConfig

    base = {**values, "model_name": name, "registry_dir": registry_dir}
    probe = {**base, "head_init": "probe", "fine_tune": False, "rollout": None,
             "promote_if_better": False}
    challenger = {**base, "rollout": False, "promote_if_better": True}
    TrainConfig.model_validate(probe)  # a bad config fails at start, not in the background
    if not values.get("fine_tune", True):
        return BackgroundJob(name=name, probe=probe, challenger=None)
    TrainConfig.model_validate(challenger)
    return BackgroundJob(name=name, probe=probe, challenger=challenger)


def training_cpus(jobs: list[BackgroundJob]) -> float:
    """Logical CPUs the background runs need at once (they run one after another)."""
    return max((job.cpus() for job in jobs), default=0.0)


def mark_queued(jobs: list[BackgroundJob], registry_dir: str | None) -> None:
    """Record every job as queued, so its model's 503 and ``maas status`` say so from the start."""
    registry = ModelRegistry(registry_dir)
    for job in jobs:
        registry.set_training_status(job.name, TrainingStatus(state="training", phase="queued"))


STOPPED_DETAIL = "stopped with `maas serve` before it finished"


def mark_unfinished(names: list[str], registry_dir: str | None) -> None:
    """After the service (and its Ray) stopped: a run still ``training`` would stay so in
    ``maas status`` and ``/v1/models`` for good; it is ``failed`` with :data:`STOPPED_DETAIL`
    instead. The next ``maas serve`` trains a model that has no live version again."""
    registry = ModelRegistry(registry_dir)
    for name in names:
        status = registry.training_status(name)
        if status is not None and status.state == "training":
            registry.set_training_status(name, TrainingStatus(state="failed", detail=STOPPED_DETAIL))


def run_jobs(jobs: list[BackgroundJob]) -> dict[str, str]:
    """Every probe, then every challenger, one at a time; a failure is recorded and the others
    go on. Returns each model's outcome (``ok`` or the error)."""
    from pipelines.training.train import TrainConfig, train_classifier

    outcomes: dict[str, str] = {}
    rounds = [(job, job.probe) for job in jobs] + [(job, job.challenger) for job in jobs if job.challenger]
    for job, values in rounds:
        if outcomes.get(job.name, "ok") != "ok":
            continue  # its probe failed: no challenger
        try:
            train_classifier(TrainConfig.model_validate(values))
            outcomes[job.name] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded by train_classifier, reported here
            traceback.print_exc()  # into this task's log, never to a client
            outcomes[job.name] = f"{type(exc).__name__}: {exc}"
    return outcomes


def start_background_training(jobs: list[BackgroundJob], registry_dir: str | None) -> Any:
    """Run :func:`run_jobs` as one Ray task on the connected Ray; returns its ``ObjectRef``.

    The task itself reserves no CPU: its Ray Train workers reserve theirs.
    """
    import ray

    mark_queued(jobs, registry_dir)
    task = ray.remote(num_cpus=0, max_retries=0)(run_jobs)
    return task.options(name="maas-background-training").remote(jobs)


def logical_cpus(config: AppConfig, jobs: list[BackgroundJob], machine_cpus: int) -> int:
    """Logical CPUs for a local Ray that runs the graph and the background training at once.

    Replicas and training workers reserve fractions of logical CPUs; the work itself shares the
    machine's cores (torch threads are capped per replica and worker).
    """
    graph = sum(d.num_cpus * d.num_replicas for d in deployment_options(config))
    return max(machine_cpus, math.ceil(graph + max(training_cpus(jobs), retrain_cpus(config))))


def deployment_options(config: AppConfig) -> list[Any]:
    """The Serve options of every deployment the config builds."""
    options = [g.deployment for g in config.generators] + [config.tokenizer.deployment,
                                                           config.ingress.deployment]
    for part in (config.classifier, config.encoder, config.ner):
        if part.models:
            options.append(part.deployment)
    return options


# --------------------------------------------------------------------------- retraining on feedback


def new_feedback(registry: ModelRegistry, name: str) -> int:
    """Labelled feedback texts of ``name`` that its newest version has not seen (it records how
    many there were when it trained: ``feedback_seen`` in its training record)."""
    from maas.storage.feedback import load_feedback
    from maas.storage.files import read_json
    from maas.storage.registry import TRAINING_FILE

    versions = registry.versions(name)
    seen = int(read_json(Path(versions[-1].path) / TRAINING_FILE).get("feedback_seen") or 0) if versions else 0
    return max(len(load_feedback(registry, name)) - seen, 0)


def feedback_retrain_jobs(config: AppConfig) -> list[BackgroundJob]:
    """The challenger runs that ``classifier.retrain_after_feedback`` asks for now: for each
    registry classifier with a live version, no run under way, and at least that many new
    labelled texts since its newest version, a fine-tune ``--with-feedback`` that goes live only
    if it beats the live version on validation (``promote_if_better``). None when it is 0."""
    threshold = config.classifier.retrain_after_feedback
    if threshold <= 0:
        return []
    registry = ModelRegistry(config.registry_dir)
    jobs = []
    for model in config.classifier.models:
        name = model.path.removeprefix(REGISTRY_PREFIX)
        if not model.path.startswith(REGISTRY_PREFIX) or registry.live_version(name) is None:
            continue
        status = registry.training_status(name)
        values = training_values(model, name)
        if values is None or (status is not None and status.state == "training"):
            continue
        if new_feedback(registry, name) >= threshold:
            challenger = {**values, "model_name": name, "registry_dir": config.registry_dir,
                          "rollout": False, "promote_if_better": True, "with_feedback": True}
            jobs.append(BackgroundJob(name=name, probe=challenger, challenger=None))
    return jobs


def retrain_cpus(config: AppConfig) -> float:
    """Logical CPUs a retrain on feedback may reserve later (the largest of the registry
    classifiers' training configs); 0 when ``classifier.retrain_after_feedback`` is off."""
    if config.classifier.retrain_after_feedback <= 0:
        return 0.0
    cpus = []
    for model in config.classifier.models:
        name = model.path.removeprefix(REGISTRY_PREFIX)
        values = training_values(model, name) if model.path.startswith(REGISTRY_PREFIX) else None
        if values is not None:
            cpus.append(job_for(name, values, config.registry_dir).cpus())
    return max(cpus, default=0.0)
