"""The real Ray Train fine-tuning pipeline on a tiny budget, end to end into a model folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.train import TRAINING_FILE, TrainConfig, train_classifier

pytestmark = pytest.mark.integration


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


@pytest.mark.timeout(600)
def test_train_classifier_writes_a_loadable_model(ray_runtime: None, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from maas.models import MARKER_FILE, read_marker
    from pipelines.train import predict

    config = TrainConfig(
        task="sentiment",
        output_dir=str(tmp_path / "sentiment"),
        storage_path=str(tmp_path / "ray"),
        max_train_examples=200,
        max_eval_examples=64,
        epochs=1,
        max_seq_len=32,
        batch_size=16,
        num_workers=2,
        cpus_per_worker=0.5,
    )
    result = train_classifier(config)

    folder = Path(result.model_dir)
    assert folder == tmp_path / "sentiment"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.is_fast and (folder / "tokenizer.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert set(predict(model, tokenizer, ["I love it", "worst flight ever"], 32)) <= {0, 1, 2}

    marker = read_marker(folder)
    assert marker is not None and (folder / MARKER_FILE).is_file()
    assert marker["task"] == "sentiment" and marker["labels"] == ["negative", "neutral", "positive"]

    record = json.loads((folder / TRAINING_FILE).read_text())
    assert record["data_hash"] == result.data_hash and len(record["data_hash"]) == 64
    assert record["config"]["max_train_examples"] == 200 and record["examples"]["test"] == 64
    metrics = record["metrics"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["test_macro_f1"] <= 1.0
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["global_step"] == 7  # ceil(100 / 16)
    assert result.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert not any((tmp_path / "ray").iterdir())  # checkpoints removed once the folder is written
    assert not list(tmp_path.glob(".sentiment.*"))  # no staging leftovers
