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
import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import ValidationError

from maas.storage.embedded import cache_dir, minilm_path, staged_folder
from maas.storage.feedback import load_feedback
from maas.storage.registry import TRAINING_FILE, ModelRegistry, TrainingStatus, write_status
from pipelines.training.report import TrainingReport, score, tfidf_baseline, write_report
from pipelines.training.runs import cli_main, ensure_ray, fit, fmt_s, silence_transformers
from pipelines.training.runs import log as _log
from pipelines.training.train_config import PreparedData, TrainConfig, TrainResult
from pipelines.training.train_worker import CHECKPOINT_MODEL_DIR, predict, train_loop_per_worker
from pipelines.training.training_data import (
    DataError,
    Example,
    balanced_subsample,
    data_hash,
    feedback_for_training,
    label_counts,
    load_examples,
    split_dataset,
    stratified_subsample,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TRAINING_FILE", "TrainConfig", "TrainResult", "main", "predict", "train_classifier"]


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
    started_ray = ensure_ray(config)
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
    if config.with_feedback:
        data = with_feedback(data, config, splits.validation + splits.test)
    _log(
        f"task {config.task}: {len(examples)} examples (sha256 {data.data_hash[:12]}); using "
        f"{len(data.train)} train {label_counts(data.train)} ({data.feedback_examples} from feedback), "
        f"{len(data.validation)} validation, {len(data.test)} test"
    )
    return data


def with_feedback(data: PreparedData, config: TrainConfig, held_out: list[Example]) -> PreparedData:
    """``data`` with the model's labelled feedback added to its training split only (after the
    subsample, so none is dropped); the fingerprint then covers the feedback too."""
    feedback = load_feedback(ModelRegistry(config.registry_dir), config.registry_name())
    used = feedback_for_training(feedback, held_out, data.labels)
    train_texts = {text for text, _ in data.train}
    added = [example for example in used if example[0] not in train_texts]
    relabelled = {text for text, _ in used}
    train = [(t, y) for t, y in data.train if t not in relabelled] + used
    _log(f"feedback: {len(feedback)} labelled texts, {len(used)} used ({len(added)} new to the training "
         "split; the others relabel its texts), none in validation or test")
    return data.model_copy(update={"train": train, "feedback_examples": len(used), "feedback_seen": len(feedback),
                                   "data_hash": _hash_with(data.data_hash, used)})


def _hash_with(base_hash: str, feedback: list[Example]) -> str:
    """The fingerprint of the task's data plus the feedback used (the task's alone without any)."""
    return hashlib.sha256(f"{base_hash}+{data_hash(feedback)}".encode()).hexdigest() if feedback else base_hash


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
                "validation_macro_f1": validation.macro_f1,
                "feedback_examples": float(data.feedback_examples)}
    _log(f"validation macro-F1 {validation.macro_f1:.3f}; test accuracy {fine_tuned.accuracy:.3f}, "
         f"macro-F1 {fine_tuned.macro_f1:.3f} in {fmt_s(time.perf_counter() - start)}")
    baseline = tfidf_baseline(data.train, data.test, data.labels)
    majority = max(label_counts(data.test).values()) / len(data.test)
    return TrainingReport(
        model=config.registry_name(), task=config.task, labels=data.labels, data_hash=data.data_hash,
        examples={"train": len(data.train), "validation": len(data.validation), "test": len(data.test),
                  "feedback": data.feedback_examples},
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


def _fit(config: TrainConfig, data: PreparedData, progress_file: Path | None = None) -> Any:
    """Run the TorchTrainer and return its ``ray.train.Result``."""
    loop_config = {**_loop_config(config, data), "progress_file": str(progress_file) if progress_file else None}
    return fit(config, train_loop_per_worker, loop_config, use_gpu=config.use_gpu,
               describe=f"Ray Train: {config.num_workers} workers x {config.cpus_per_worker} CPU"
                        f"{' + 1 GPU' if config.use_gpu else ''}, ")


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
        "feedback_examples": data.feedback_examples,
        "feedback_seen": data.feedback_seen,
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
    return cli_main(config_from_args, train_classifier, argv)


if __name__ == "__main__":
    raise SystemExit(main())
