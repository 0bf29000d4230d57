"""Classifier heads: the mean-pooling head is saved, loaded and served like transformers' own
(CLS) head, through the one loader training, reports and serving share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoTokenizer, BertForSequenceClassification

from maas.config import EncoderModelConfig
from maas.engines.classifier_heads import MeanPooledClassifier, load_classifier, new_classifier
from maas.engines.encoders import ClassifierEngine
from maas.storage.embedded import minilm_path
from pipelines.training.train import TrainConfig

LABELS = ["business", "sport", "tech"]
TEXTS = ["shares fell sharply on the stock market", "the striker scored twice", "a new phone chip"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(minilm_path()))


def _saved(model: torch.nn.Module, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_mean_head_starts_from_the_pretrained_encoder() -> None:
    from transformers import AutoModel

    torch.manual_seed(0)
    model = new_classifier(minilm_path(), LABELS, "mean")
    base = AutoModel.from_pretrained(str(minilm_path()))
    assert isinstance(model, MeanPooledClassifier)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)
    assert torch.equal(model.encoder.encoder.layer[5].output.dense.weight, base.encoder.layer[5].output.dense.weight)
    head = model.classifier
    assert head.bias.detach().abs().max() == 0 and 0.01 < float(head.weight.detach().std()) < 0.03


def test_mean_head_round_trips_and_ignores_padding(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = new_classifier(minilm_path(), LABELS, "mean").eval()
    loaded = load_classifier(_saved(model, tokenizer, tmp_path / "mean")).eval()
    assert isinstance(loaded, MeanPooledClassifier)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = loaded(**batch).logits
        assert torch.allclose(logits, model(**batch).logits, atol=1e-5)
        alone = loaded(**tokenizer(TEXTS[2:], return_tensors="pt")).logits  # no padding
    assert torch.allclose(alone[0], logits[2], atol=1e-4)


def test_training_loss_is_cross_entropy(tokenizer) -> None:
    torch.manual_seed(0)
    model = new_classifier(minilm_path(), LABELS, "mean").eval()
    labels = torch.tensor([0, 1, 2])
    out = model(**tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=labels)
    assert torch.isclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_cls_folders_load_as_transformers_own_class(tokenizer, tmp_path: Path) -> None:
    folder = _saved(new_classifier(minilm_path(), LABELS, "cls"), tokenizer, tmp_path / "cls")
    assert type(load_classifier(folder)) is BertForSequenceClassification


def test_served_classifier_uses_the_folders_head(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = _saved(new_classifier(minilm_path(), LABELS, "mean"), tokenizer, tmp_path / "served")
    engine = ClassifierEngine()
    encoder = engine.load(EncoderModelConfig(name="topic", path=str(folder), max_seq_len=8, max_windows=4))
    assert isinstance(encoder.model, MeanPooledClassifier)
    results = engine.classify(encoder, TEXTS)
    assert [r.labels for r in results] == [LABELS] * 3
    assert all(abs(sum(r.probs) - 1) < 1e-5 for r in results)


def test_unknown_pooling_is_a_clear_error(tokenizer, tmp_path: Path) -> None:
    folder = _saved(new_classifier(minilm_path(), LABELS, "cls"), tokenizer, tmp_path / "odd")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"architectures"', '"classifier_pooling": "max",\n  "architectures"'))
    with pytest.raises(ValueError, match="unknown classifier_pooling 'max'"):
        load_classifier(folder)
    with pytest.raises(ValidationError, match="pooling"):
        TrainConfig(task="topic", pooling="max")
