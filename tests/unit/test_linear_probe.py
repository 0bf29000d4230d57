"""LP-FT's first stage: the head fitted as a linear probe on the frozen encoder predicts, once
copied into the model, exactly what the probe predicts, and works for any label layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer

from maas.engines.classifier_heads import new_classifier
from maas.engines.windows import per_text_mean, predict
from maas.storage.embedded import minilm_path
from pipelines.training.linear_probe import fit_probe, head_inputs, set_head
from pipelines.training.train import TrainConfig

LABELS = ["business", "sport", "tech"]
TRAIN = [
    ("shares fell sharply on the stock market", 0), ("the bank raised interest rates again", 0),
    ("profits at the retailer doubled this year", 0), ("oil prices pushed inflation higher", 0),
    ("the striker scored twice in the final", 1), ("the tennis champion won in straight sets", 1),
    ("the team lost the match after extra time", 1), ("a record crowd watched the marathon", 1),
    ("a new phone chip doubles battery life", 2), ("the software update fixes a browser flaw", 2),
    ("engineers built a faster search engine", 2), ("the laptop ships with a brighter screen", 2),
]
VAL = [("the central bank cut rates", 0), ("the goalkeeper saved a penalty", 1), ("a new operating system", 2)]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_probe_head_predicts_what_the_probe_predicts(pooling: str) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = new_classifier(minilm_path(), LABELS, pooling)  # type: ignore[arg-type]
    texts = [t for t, _ in TRAIN]
    # Long texts are read as several windows: the probe sees each text's mean head input.
    train_x = head_inputs(model, tokenizer, texts, 8, 3)
    val_x = head_inputs(model, tokenizer, [t for t, _ in VAL], 8, 3)
    assert train_x.shape == (len(TRAIN), model.config.hidden_size)
    probe = fit_probe(train_x, [y for _, y in TRAIN], val_x, [y for _, y in VAL], len(LABELS))
    set_head(model, probe)

    logits = per_text_mean(model, tokenizer, texts, 8, 3, lambda inputs: model(**inputs).logits)
    assert np.allclose(logits.numpy(), train_x @ probe.weight.T + probe.bias, atol=1e-4)
    fitted = LogisticRegression(C=probe.c, max_iter=2000).fit(train_x, [y for _, y in TRAIN])
    assert predict(model, tokenizer, texts, 8, 3) == fitted.predict(train_x).tolist()


def test_probe_head_covers_binary_and_missing_labels() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.3, (20, 4)), rng.normal(1, 0.3, (20, 4))]).astype(np.float32)
    y = [0] * 20 + [2] * 20  # three labels, class 1 never seen
    probe = fit_probe(x, y, x[::5], y[::5], num_labels=3)
    assert probe.weight.shape == (3, 4) and probe.bias.shape == (3,)
    assert ((x @ probe.weight.T + probe.bias).argmax(axis=1) == np.array(y)).all()
    binary = fit_probe(x, [min(label, 1) for label in y], x[:0], [], num_labels=2)
    assert binary.c == 1.0 and binary.weight.shape == (2, 4)
    assert ((x @ binary.weight.T + binary.bias).argmax(axis=1) == np.array([min(v, 1) for v in y])).all()


def test_head_init_is_checked() -> None:
    assert TrainConfig(task="topic", head_init="probe").head_init == "probe"
    with pytest.raises(ValidationError):
        TrainConfig(task="topic", head_init="zeros")  # type: ignore[arg-type]
