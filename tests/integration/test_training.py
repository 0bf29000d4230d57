"""The real Ray Train pipeline: a run survives a killed worker, writes a model, a report and a
registry version; a bad config fails before any training."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.training.train import TRAINING_FILE, TrainConfig, TrainResult, train_classifier
from tests.conftest import small_train_config

pytestmark = pytest.mark.integration
LABELS = ["negative", "neutral", "positive"]
KILLED_RUN_EXAMPLES, KILLED_RUN_BATCH = 160, 16
"""The killed-worker run: 5 steps an epoch on 2 workers, a checkpoint after each of its 2 epochs."""


@pytest.fixture
def ray_runtime() -> Iterator[None]:
    """Reuse an initialized Ray; else start a private 2-CPU one and shut it down afterwards."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        started = True
    yield
    if started:
        ray.shutdown()


def training_workers() -> list[int]:
    """PIDs of this Ray's training worker processes (children of its raylet)."""
    import psutil
    from ray._private import ray_constants
    from ray._private.worker import _global_node

    raylet = _global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    return [p.pid for p in psutil.Process(raylet).children(recursive=True)
            if "RayTrainWorker" in " ".join(_cmdline(p))]


def _cmdline(process: object) -> list[str]:
    try:
        return process.cmdline()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a process that just ended
        return []


def checkpoint_registered(storage: Path) -> bool:
    """Whether Ray Train has registered a checkpoint of the run (not just started writing one)."""
    snapshots = list(storage.glob("*/checkpoint_manager_snapshot.json"))
    return any("checkpoint_" in path.read_text() for path in snapshots)


def kill_a_worker_after_first_checkpoint(storage: Path, timeout_s: float) -> int | None:
    """Wait for the run's first registered checkpoint, then SIGKILL one training worker."""
    import os
    import signal

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if checkpoint_registered(storage):
            workers = training_workers()
            if workers:
                os.kill(workers[-1], signal.SIGKILL)
                return workers[-1]
        time.sleep(0.05)
    return None


@pytest.mark.timeout(900)
def test_killed_worker_resumes_from_checkpoint_into_a_model_and_report(
    ray_runtime: None, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from maas.storage.embedded import read_marker
    from pipelines.training.train import predict

    storage = tmp_path / "ray"
    config = TrainConfig(
        task="sentiment", output_dir=str(tmp_path / "sentiment"), storage_path=str(storage),
        max_train_examples=KILLED_RUN_EXAMPLES, max_eval_examples=64, epochs=2, max_seq_len=32,
        batch_size=KILLED_RUN_BATCH,
        num_workers=2, cpus_per_worker=0.5, max_failures=2,
    )
    outcome: dict[str, TrainResult] = {}
    run = threading.Thread(target=lambda: outcome.setdefault("result", train_classifier(config)))
    run.start()
    killed = kill_a_worker_after_first_checkpoint(storage, timeout_s=600)
    run.join(timeout=800)
    assert killed is not None, "no checkpoint appeared"
    result = outcome["result"]

    steps_per_epoch = KILLED_RUN_EXAMPLES // (KILLED_RUN_BATCH * config.num_workers)
    assert result.metrics["global_step"] == 2 * steps_per_epoch  # every step done, none twice
    assert result.metrics["resumed_from_step"] >= steps_per_epoch  # restarted from a checkpoint
    assert result.metrics["epoch"] == 2

    folder = Path(result.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert set(predict(model, tokenizer, ["I love it", "worst flight ever"], 32)) <= {0, 1, 2}
    assert read_marker(folder)["labels"] == LABELS

    record = json.loads((folder / TRAINING_FILE).read_text())
    assert record["data_hash"] == result.data_hash and len(record["data_hash"]) == 64
    report = json.loads((folder / "report.json").read_text())
    assert report["fine_tuned"]["macro_f1"] == result.metrics["test_macro_f1"]
    assert 0 <= report["baseline"]["macro_f1"] <= 1
    assert sum(map(sum, report["fine_tuned"]["confusion"])) == 64
    assert "TF-IDF" in (folder / "report.md").read_text()
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(storage.glob("*/checkpoint_*"))  # checkpoints removed once the model is written


def test_training_registers_versions_and_checks_labels(ray_runtime: None, tmp_path: Path) -> None:
    from maas.engines.classifier_heads import MeanPooledClassifier, load_classifier
    from maas.storage.registry import ModelRegistry
    from pipelines.training.training_data import DataError

    registry = tmp_path / "registry"
    data = tmp_path / "reviews.csv"
    rows = ([f"great stuff number {i} with a few more words,good" for i in range(30)]
            + [f"bad thing {i} with a few more words,bad" for i in range(30)])
    data.write_text("review,verdict\n" + "\n".join(rows) + "\n")
    overrides = {"dataset": {"path": str(data), "text_column": "review", "label_column": "verdict"},
                 "model_name": "reviews", "max_train_examples": None, "max_eval_examples": None}
    first = train_classifier(small_train_config("reviews", registry, **overrides))
    assert (first.model_ref, first.live, first.labels) == ("reviews/v1", True, ["bad", "good"])
    # v2: the mean-pooling head, first fitted as a linear probe across both workers (LP-FT), and
    # trained on whole texts read as 2 windows of 8 tokens (the loss on their mean logits).
    second = train_classifier(small_train_config(
        "reviews", registry, pooling="mean", head_init="probe", train_on="texts", max_seq_len=8,
        max_windows=2, **overrides))
    assert (second.model_ref, second.live) == ("reviews/v2", False)  # v1 stays live until a rollout
    assert isinstance(load_classifier(second.model_dir), MeanPooledClassifier)  # the head it trained
    assert second.metrics["test_accuracy"] > 0.5
    assert ModelRegistry(registry).live_version("reviews") == "v1"

    other = tmp_path / "other.csv"
    other.write_text("review,verdict\n" + "\n".join(r.replace(",bad", ",meh") for r in rows) + "\n")
    with pytest.raises(DataError, match="differ from those of the live reviews/v1"):
        train_classifier(small_train_config("reviews", registry, **{**overrides, "dataset": {
            "path": str(other), "text_column": "review", "label_column": "verdict"}}))
    with pytest.raises(DataError, match="no column 'text'"):
        train_classifier(small_train_config("reviews", registry, dataset={"path": str(data)}))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="no usable examples"):
        train_classifier(small_train_config("x", registry, dataset={"path": str(empty)}))
