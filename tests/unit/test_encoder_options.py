"""Encoder options: long texts read as windows (the one function training, the report and
serving share) and int8 dynamic quantization."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from maas.config import EncoderConfig, EncoderModelConfig
from maas.engines.windows import mean_by_owner, text_windows
from maas.storage.embedded import minilm_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(minilm_path()))


def test_one_window_is_plain_truncation(tokenizer) -> None:
    texts = ["short text", "word " * 100]
    windows = text_windows(tokenizer, texts, 16, 1)
    assert [len(w) for w in windows] == [1, 1]
    assert windows[1][0] == tokenizer(texts[1], truncation=True, max_length=16)["input_ids"]


def test_long_text_is_cut_into_consecutive_windows(tokenizer) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    body = tokenizer(words, add_special_tokens=False)["input_ids"]
    windows = text_windows(tokenizer, ["tiny", words], 16, 64)
    assert len(windows[0]) == 1
    long = windows[1]
    assert all(len(ids) <= 16 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
               for ids in long)
    assert [t for ids in long for t in ids[1:-1]] == body  # every token once, in order
    capped = text_windows(tokenizer, [words], 16, 2)[0]
    assert capped == long[:2]


def test_mean_by_owner_averages_each_texts_windows() -> None:
    values = torch.tensor([[1.0, 3.0], [3.0, 5.0], [10.0, 0.0]])
    assert mean_by_owner(values, [0, 0, 1], 2).tolist() == [[2.0, 4.0], [10.0, 0.0]]


def test_embedding_models_do_not_take_windows() -> None:
    with pytest.raises(ValueError, match="max_windows is for classifiers"):
        EncoderConfig(models=[EncoderModelConfig(name="e", path="embedded:minilm", max_windows=2)])


def test_int8_quantization_keeps_the_classifier_close(tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification

    from maas.engines.encoders import ClassifierEngine

    torch.manual_seed(0)
    folder = tmp_path / "clf"
    AutoModelForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=3).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    engine = ClassifierEngine()
    texts = ["a fine day", "the worst service ever", "it is a table"]
    outputs = {}
    for mode in ("none", "int8"):
        encoder = engine.load(EncoderModelConfig(name="c", path=str(folder), quantize=mode))
        linear = type(encoder.model.classifier).__module__
        assert (".quantized." in linear) == (mode == "int8"), linear
        outputs[mode] = engine.classify(encoder, texts)
    for full, small in zip(outputs["none"], outputs["int8"]):
        assert abs(sum(small.probs) - 1) < 1e-5
        assert max(abs(a - b) for a, b in zip(full.probs, small.probs)) < 0.05
