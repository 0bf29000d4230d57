"""Distributed fine-tuning of the service's text classifiers with Ray Train, into the registry.

``maas train sentiment`` (or ``python -m pipelines.training.train sentiment``) runs:

1. the driver loads the task (:mod:`pipelines.training.training_data`: the built-in ``sentiment`` and
   ``topic`` tasks, or any CSV/JSONL file with a text and a label column), splits it
   (stratified, seeded), subsamples the training part and fingerprints the data;
2. a Ray Train ``TorchTrainer`` runs :func:`pipelines.training.train_worker.train_loop_per_worker` on
   ``num_workers`` data-parallel workers (DDP; gloo on CPU, NCCL on GPU), with a checkpoint each
   epoch; a failed worker group restarts from the last checkpoint (``FailureConfig``);
3. the driver scores the final model on the held-out test split beside a TF-IDF + logistic
   regression baseline trained on the same examples (:mod:`pipelines.training.report`), and stores the
   model with its training record and report as the next version ``<name>/vN`` of the model
   registry (:mod:`maas.storage.registry`). The first version of a model becomes live; later ones go
   live with ``maas rollout <name> <version>`` (or ``--rollout``).

The defaults are sized for 2 cores: see :class:`TrainConfig` and ``cluster/train-*.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maas.config import Pooling
from maas.storage.embedded import cache_dir, minilm_path, staged_folder
from maas.storage.registry import (
    TRAINING_FILE,
    ModelRegistry,
    RegistryError,
    TrainingStatus,
    check_name,
    write_status,
)
from pipelines.training.report import TrainingReport, score, tfidf_baseline, write_report
from pipelines.training.train_worker import (
    CHECKPOINT_MODEL_DIR,
    PREFIX,
    fmt_s,
    predict,
    silence_transformers,
    train_loop_per_worker,
)
from pipelines.training.training_data import (
    DEFAULT_FRACTIONS,
    DataError,
    DatasetSource,
    Example,
    balanced_subsample,
    data_hash,
    label_counts,
    load_examples,
    split_dataset,
    stratified_subsample,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HeadInit = Literal["random", "probe"]
TrainOn = Literal["windows", "texts"]

__all__ = ["TRAINING_FILE", "TrainConfig", "TrainResult", "main", "predict", "train_classifier"]


class TrainConfig(BaseModel):
    """Everything that defines a fine-tuning run; the defaults train the default sentiment model.

    The same config runs on 2 CPU workers here and on N GPU workers of a cluster: only
    ``num_workers``, ``cpus_per_worker``, ``use_gpu`` and the sizes change (``cluster/train-*.yaml``).
    The defaults bound the first run to a few minutes on 2 cores: 4,800 class-balanced training
    tweets, one epoch, 64 tokens, 1,000 validation and 1,000 test examples, and a time budget
    that stops training early (with a checkpoint) on a busy machine.
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field(
        description="Built-in task ('sentiment': tweets, 'topic': BBC News), or a name for `dataset`."
    )
    dataset: DatasetSource | None = Field(
        default=None, description="A CSV/JSONL file of labelled texts (instead of a built-in task)."
    )
    model_name: str | None = Field(
        default=None, description="Registry name of the trained model; None means the task name."
    )
    registry_dir: str | None = Field(
        default=None, description="Model registry folder; None means cache_dir()/registry."
    )
    rollout: bool | None = Field(
        default=None,
        description="Make the new version live: None = only if the model has no live version yet.",
    )
    promote_if_better: bool = Field(
        default=False,
        description="Make the new version live only if its validation macro-F1 beats the live "
        "version's (a challenger; the test split is never used to choose). Overrides `rollout`.",
    )
    fine_tune: bool = Field(
        default=True,
        description="False: stop after the linear probe (needs head_init 'probe'): the frozen "
        "encoder with a fitted head, the fastest honest first version of a model.",
    )
    allow_label_change: bool = Field(
        default=False, description="Allow labels that differ from the live version's."
    )
    base_model: str | None = Field(
        default=None,
        description="Hugging Face folder to fine-tune; None means the packaged all-MiniLM-L6-v2.",
    )
    output_dir: str | None = Field(
        default=None, description="Write the model folder here instead of into the registry."
    )
    storage_path: str | None = Field(
        default=None, description="Ray Train storage for checkpoints; None means cache_dir()/ray_train."
    )
    keep_checkpoints: bool = Field(
        default=False, description="Keep the run's Ray Train checkpoints after the model is written."
    )
    num_workers: int = Field(default=2, ge=1, le=256, description="Data-parallel Ray Train workers.")
    cpus_per_worker: float = Field(default=0.5, gt=0, le=256, description="Logical Ray CPUs per worker.")
    torch_threads: int | None = Field(
        default=None, ge=1, le=256, description="Torch threads per worker; None: max(1, floor(cpus_per_worker))."
    )
    use_gpu: bool = Field(default=False, description="Give each worker one GPU.")
    epochs: int = Field(default=1, ge=1, le=100, description="Passes over the training set.")
    batch_size: int = Field(
        default=32, ge=1, le=4096, description="Examples per worker and step; the global batch is x num_workers."
    )
    learning_rate: float = Field(default=1e-4, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the steps that warm the learning rate up linearly."
    )
    pooling: Pooling = Field(
        default="cls",
        description="What the classification head reads: 'cls', the first token's state "
        "(transformers' *ForSequenceClassification), or 'mean', the mean of all token states "
        "(how sentence encoders such as all-MiniLM-L6-v2 were trained to carry a text's meaning).",
    )
    head_init: HeadInit = Field(
        default="random",
        description="How the new classification head starts: 'random', or 'probe': first fitted "
        "as a logistic regression on the frozen encoder's features (C chosen on validation), "
        "then fine-tuned with the encoder (LP-FT; see pipelines/training/linear_probe.py).",
    )
    max_seq_len: int = Field(default=64, ge=8, le=512, description="Tokens the model reads at once.")
    max_windows: int = Field(
        default=1, ge=1, le=64,
        description="A longer text is read as up to this many consecutive windows of max_seq_len "
        "tokens (each trained with the text's label; their logits averaged when predicting). "
        "Serve the model with the same value. 1: cut the text at max_seq_len.",
    )
    train_on: TrainOn = Field(
        default="windows",
        description="'windows': every window of a text is a training example with the text's label; "
        "'texts': a text's windows' logits are averaged, as when predicting, and the loss is the "
        "text's (batch_size then counts texts). The same with max_windows 1.",
    )
    max_train_examples: int | None = Field(
        default=4800, ge=1, description="Cap on the training examples drawn from the train split; None: all."
    )
    balance_train: bool = Field(
        default=True,
        description="Draw capped training examples with equal label counts where the data allows "
        "(else keep the label proportions).",
    )
    max_eval_examples: int | None = Field(
        default=1000, ge=1, description="Cap on the validation and on the test examples (stratified); None: all."
    )
    split_fractions: tuple[float, float, float] = Field(
        default=DEFAULT_FRACTIONS, description="Train, validation and test fractions (positive, sum 1)."
    )
    time_budget_s: float | None = Field(
        default=240.0,
        gt=0,
        description="Budget of the training loop in seconds; when spent, training stops early with a checkpoint.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the split, sampling and training.")
    log_every_steps: int = Field(default=10, ge=1, description="A progress line every N steps.")
    max_failures: int = Field(
        default=1, ge=-1, description="Restarts of the worker group (from the last checkpoint); -1: unlimited."
    )

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in value) or abs(sum(value) - 1) > 1e-6:
            raise ValueError("split fractions must be positive and sum to 1")
        return value

    @field_validator("task", "model_name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @model_validator(mode="after")
    def _probe_only_needs_probe(self) -> TrainConfig:
        if not self.fine_tune and self.head_init != "probe":
            raise ValueError("fine_tune: false trains only a linear probe: set head_init: probe")
        return self

    def registry_name(self) -> str:
        return self.model_name or self.task


class TrainResult(BaseModel):
    """What a finished run produced: the model folder, its registry version and test metrics."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The Hugging Face folder of the trained model.")
    model_ref: str | None = Field(default=None, description="Registry version, e.g. 'sentiment/v2'.")
    live: bool = Field(default=False, description="Whether this version is now the live one.")
    labels: list[str] = Field(description="Labels in class-id order.")
    metrics: dict[str, float] = Field(description="Test, baseline and training metrics.")
    data_hash: str = Field(description="sha256 of the task's examples (all splits).")
    wall_time_s: float = Field(description="Seconds from start to the written folder.")


class PreparedData(BaseModel):
    """The splits a run uses, after subsampling, plus their fingerprint."""

    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    data_hash: str


# --------------------------------------------------------------------------- driver


def train_classifier(config: TrainConfig) -> TrainResult:
    """Fine-tune ``config.base_model`` on the task with Ray Train; store and return the model.

    Starts a local Ray (and shuts it down afterwards) only when none is initialized.
    """
    registry = ModelRegistry(config.registry_dir)
    status = _StatusWriter(registry.status_path(config.registry_name()) if config.output_dir is None else None)
    try:
        return _train(config, registry, status)
    except BaseException as exc:
        status.failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise


def _train(config: TrainConfig, registry: ModelRegistry, status: _StatusWriter) -> TrainResult:
    start = time.perf_counter()
    status.phase("loading data")
    data = prepare_data(config)
    if config.output_dir is None:
        check_labels(registry, config, data.labels)
    started_ray = _ensure_ray(config)
    try:
        result = _fit(config, data, status.path)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    with result.checkpoint.as_directory() as folder:
        model, tokenizer = _load_checkpoint_model(Path(folder))
    status.phase("evaluating")
    report = build_report(config, data, model, tokenizer, _run_metrics(result.metrics))
    metrics = {**report.training, **_headline(report)}
    if config.output_dir is not None:
        model_dir, ref, live = _write_folder(Path(config.output_dir), model, tokenizer, data, config, report), None, False
    else:
        model_dir, ref, live = _register(registry, model, tokenizer, data, config, report)
    if not config.keep_checkpoints:
        shutil.rmtree(result.path, ignore_errors=True)
    wall = time.perf_counter() - start
    _log(f"done in {fmt_s(wall)}: {ref or model_dir}{' (live)' if live else ''}")
    status.done(f"{ref or model_dir}{' live' if live else ' stored, not live'}: validation macro-F1 "
                f"{metrics['validation_macro_f1']:.3f}, test {metrics['test_macro_f1']:.3f}")
    return TrainResult(model_dir=str(model_dir), model_ref=ref, live=live, labels=data.labels,
                       metrics=metrics, data_hash=data.data_hash, wall_time_s=wall)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Load, split, subsample and fingerprint the task's data as ``config`` says."""
    examples = load_examples(config.task, config.dataset)
    labels = sorted({label for _, label in examples}) if config.dataset else None
    splits = split_dataset(examples, seed=config.seed, fractions=config.split_fractions)
    sample = balanced_subsample if config.balance_train else stratified_subsample
    data = PreparedData(
        labels=labels or _builtin_labels(config.task),
        train=sample(splits.train, config.max_train_examples, config.seed),
        validation=stratified_subsample(splits.validation, config.max_eval_examples, config.seed),
        test=stratified_subsample(splits.test, config.max_eval_examples, config.seed),
        data_hash=data_hash(examples),
    )
    _log(
        f"task {config.task}: {len(examples)} examples (sha256 {data.data_hash[:12]}); using "
        f"{len(data.train)} train {label_counts(data.train)}, {len(data.validation)} validation, "
        f"{len(data.test)} test"
    )
    return data


def _builtin_labels(task: str) -> list[str]:
    from pipelines.training.training_data import task_labels

    return list(task_labels(task))  # type: ignore[arg-type]


def check_labels(registry: ModelRegistry, config: TrainConfig, labels: list[str]) -> None:
    """Refuse, before training, labels unlike those the model's live version serves."""
    name = config.registry_name()
    live = registry.live_version(name)
    if live is None or config.allow_label_change:
        return
    served = registry.get(name, live).labels
    if served != labels:
        raise DataError(
            f"The data's labels {labels} differ from those of the live {name}/{live} {served}. "
            "Train under another --model-name, or pass --allow-label-change."
        )


def build_report(
    config: TrainConfig,
    data: PreparedData,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    training: dict[str, float],
) -> TrainingReport:
    """Score the model and the TF-IDF baseline on the test split."""
    _log(f"evaluating on {len(data.validation)} validation and {len(data.test)} held-out test examples")
    start = time.perf_counter()
    validation = _score_split(config, data.validation, data.labels, model, tokenizer)
    fine_tuned = _score_split(config, data.test, data.labels, model, tokenizer)
    training = {**training, "validation_accuracy": validation.accuracy,
                "validation_macro_f1": validation.macro_f1}
    _log(f"validation macro-F1 {validation.macro_f1:.3f}; test accuracy {fine_tuned.accuracy:.3f}, "
         f"macro-F1 {fine_tuned.macro_f1:.3f} in {fmt_s(time.perf_counter() - start)}")
    baseline = tfidf_baseline(data.train, data.test, data.labels)
    majority = max(label_counts(data.test).values()) / len(data.test)
    return TrainingReport(
        model=config.registry_name(), task=config.task, labels=data.labels, data_hash=data.data_hash,
        examples={"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        fine_tuned=fine_tuned, baseline=baseline, majority_accuracy=majority, training=training,
        config=config.model_dump(mode="json"), created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _score_split(config: TrainConfig, examples: list[Example], labels: list[str],
                 model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Accuracy and macro-F1 of the model on one split, read as the served model reads texts."""
    ids = predict(model, tokenizer, [text for text, _ in examples], config.max_seq_len, config.max_windows)
    return score([label for _, label in examples], [labels[i] for i in ids], labels)


def _headline(report: TrainingReport) -> dict[str, float]:
    return {
        "test_accuracy": report.fine_tuned.accuracy,
        "test_macro_f1": report.fine_tuned.macro_f1,
        "baseline_test_accuracy": report.baseline.accuracy,
        "baseline_test_macro_f1": report.baseline.macro_f1,
        "majority_baseline_accuracy": report.majority_accuracy,
        "test_examples": float(report.examples["test"]),
    }


def default_output_dir(task: str) -> Path:
    """Where ``maas.storage.embedded`` keeps prepared models: ``cache_dir()/models/<task>``."""
    return cache_dir() / "models" / task


def _ensure_ray(config: TrainConfig) -> bool:
    """Start a local Ray if none is initialized; return whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        needed = math.ceil(config.num_workers * config.cpus_per_worker)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False)
    return True


def _fit(config: TrainConfig, data: PreparedData, progress_file: Path | None = None) -> Any:
    """Run the TorchTrainer and return its ``ray.train.Result``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = Path(config.storage_path) if config.storage_path else cache_dir() / "ray_train"
    storage.mkdir(parents=True, exist_ok=True)
    name = f"{config.registry_name()}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**_loop_config(config, data),
                           "progress_file": str(progress_file) if progress_file else None},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage.resolve()),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    _log(f"Ray Train: {config.num_workers} workers x {config.cpus_per_worker} CPU"
         f"{' + 1 GPU' if config.use_gpu else ''}, checkpoints in {storage / name}")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint (error: {result.error!r})")
    return result


def _loop_config(config: TrainConfig, data: PreparedData) -> dict[str, Any]:
    """The plain-data configuration shipped to every worker."""
    label_id = {label: i for i, label in enumerate(data.labels)}
    return {
        **config.model_dump(mode="json"),
        "base_model": str(_base_model(config)),
        "torch_threads": config.torch_threads or max(1, int(config.cpus_per_worker)),
        "labels": data.labels,
        "train_texts": [text for text, _ in data.train],
        "train_labels": [label_id[label] for _, label in data.train],
        "val_texts": [text for text, _ in data.validation],
        "val_labels": [label_id[label] for _, label in data.validation],
    }


def _run_metrics(reported: dict[str, Any]) -> dict[str, float]:
    """The training-side metrics of the last report, as floats."""
    keys = ("epoch", "global_step", "train_loss", "val_accuracy", "train_examples_per_s",
            "train_time_s", "stopped_early", "resumed_from_step")
    return {key: float(reported[key]) for key in keys if key in reported}


def _register(
    registry: ModelRegistry,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    config: TrainConfig,
    report: TrainingReport,
) -> tuple[Path, str, bool]:
    """Store the model as the next registry version; make it live if the config says so."""
    name = config.registry_name()
    with registry.new_version(name, _marker(data, config, report)) as (version, folder):
        _fill_folder(folder, model, tokenizer, data, config, report)
    make_live = _should_go_live(registry, name, config, report)
    if make_live:
        registry.set_live(name, version, allow_label_change=config.allow_label_change)
    return registry.root / name / version, f"{name}/{version}", make_live


def _should_go_live(registry: ModelRegistry, name: str, config: TrainConfig, report: TrainingReport) -> bool:
    """``rollout`` as configured; a challenger (``promote_if_better``) only if it beats the live
    version on the validation split. The first version of a model always goes live."""
    live = registry.live_version(name)
    if live is None:
        return config.promote_if_better or config.rollout is not False
    if not config.promote_if_better:
        return bool(config.rollout)
    ours = report.training["validation_macro_f1"]
    theirs = registry.get(name, live).metrics.get("validation_macro_f1")
    better = theirs is None or ours > theirs
    _log(f"challenger: validation macro-F1 {ours:.4f} vs live {name}/{live} "
         f"{'(not recorded)' if theirs is None else f'{theirs:.4f}'}: "
         f"{'promoted' if better else 'kept, not live'}")
    return better


def _write_folder(
    dest: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    config: TrainConfig,
    report: TrainingReport,
) -> Path:
    """Write the model folder to ``dest`` atomically (marker last)."""
    with staged_folder(dest, _marker(data, config, report)) as folder:
        _fill_folder(folder, model, tokenizer, data, config, report)
    return dest


def _marker(data: PreparedData, config: TrainConfig, report: TrainingReport) -> dict[str, Any]:
    return {"kind": "sequence-classification", "task": config.task, "labels": data.labels,
            "data_hash": data.data_hash, "test_macro_f1": report.fine_tuned.macro_f1}


def _fill_folder(
    folder: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    config: TrainConfig,
    report: TrainingReport,
) -> None:
    """Model weights, tokenizer, training record and report."""
    with _quiet_transformers():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    record = {
        "task": config.task,
        "labels": data.labels,
        "config": config.model_dump(mode="json"),
        "base_model": str(_base_model(config)),
        "metrics": {**report.training, **_headline(report)},
        "data_hash": data.data_hash,
        "examples": report.examples,
        "train_label_counts": label_counts(data.train),
        "created_at": report.created_at,
    }
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_report(folder, report)


def _load_checkpoint_model(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model and tokenizer saved in a run checkpoint."""
    from transformers import AutoTokenizer

    from maas.engines.classifier_heads import load_classifier

    path = folder / CHECKPOINT_MODEL_DIR
    with _quiet_transformers():
        return load_classifier(path), AutoTokenizer.from_pretrained(path)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for a while."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    silence_transformers()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _base_model(config: TrainConfig) -> Path:
    return Path(config.base_model).expanduser().resolve() if config.base_model else minilm_path()


class _StatusWriter:
    """Writes the run's :class:`TrainingStatus` (driver side; the workers write training steps)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def phase(self, phase: str) -> None:
        if self.path is not None:
            write_status(self.path, TrainingStatus(state="training", phase=phase))

    def done(self, detail: str) -> None:
        if self.path is not None:
            write_status(self.path, TrainingStatus(state="done", detail=detail))

    def failed(self, detail: str) -> None:
        if self.path is not None:
            write_status(self.path, TrainingStatus(state="failed", detail=detail[:500]))


def _log(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The CLI: the task, then one ``--option`` per :class:`TrainConfig` field."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.training.train", description="Fine-tune a text classifier with Ray Train."
    )
    parser.add_argument("task", help=TrainConfig.model_fields["task"].description)
    parser.add_argument(
        "--config", default=None, help="YAML file of TrainConfig fields (options override it)."
    )
    parser.add_argument("--dataset", dest="dataset_path", default=None,
                        help="CSV or JSONL file of labelled texts (instead of a built-in task).")
    parser.add_argument("--text-column", default=None, help="Column of the texts (default: text).")
    parser.add_argument("--label-column", default=None, help="Column of the labels (default: label).")
    for name, field in TrainConfig.model_fields.items():
        if name not in ("task", "dataset"):
            _add_option(parser, name, field.annotation, field.description or "")
    return parser


def _add_option(parser: argparse.ArgumentParser, name: str, annotation: Any, help_text: str) -> None:
    flag = "--" + name.replace("_", "-")
    if annotation is bool or set(get_args(annotation)) == {bool, type(None)}:  # bool | None too
        parser.add_argument(
            flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
    elif get_origin(annotation) is tuple:
        parser.add_argument(
            flag, dest=name, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None, help=help_text
        )
    else:
        parser.add_argument(flag, dest=name, default=None, help=f"{help_text} ('none' to unset)")


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from CLI arguments (and an optional YAML file)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = _read_yaml(args.pop("config"))
    dataset = {key: args.pop(flag) for key, flag in
               (("path", "dataset_path"), ("text_column", "text_column"), ("label_column", "label_column"))}
    if any(dataset.values()):
        values["dataset"] = {**(values.get("dataset") or {}),
                             **{k: v for k, v in dataset.items() if v is not None}}
    values.update({key: _none_word(value) for key, value in args.items() if value is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _read_yaml(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of TrainConfig fields")
    return data


def _none_word(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.training.train TASK [--option value ...]``: train, then print the result as JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = config_from_args(argv)
    try:
        result = train_classifier(config)
    except (DataError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
