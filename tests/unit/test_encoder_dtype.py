"""Encoders in half precision: the dtype a replica picks, batches sized for the device, and
parity of bfloat16 with float32 on the CPU (same labels, probabilities and embeddings close)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from maas.config import BatchingOptions, EncoderModelConfig
from maas.engines.encoders import ClassifierEngine, EmbeddingEngine, resolve_encoder_dtype
from maas.storage.embedded import minilm_path
from tests.parity import (
    COSINE_TOLERANCE,
    PROB_TOLERANCE,
    TEXTS,
    max_prob_difference,
    min_cosine,
    prototype_classifier,
)


def test_auto_dtype_is_float32_on_a_cpu_and_explicit_dtypes_are_kept() -> None:
    assert resolve_encoder_dtype("auto", "cpu") == "float32"
    for dtype in ("float32", "bfloat16", "float16"):
        assert resolve_encoder_dtype(dtype, "cpu") == resolve_encoder_dtype(dtype, "cuda") == dtype


def test_dtype_is_validated_and_int8_needs_a_float32_model() -> None:
    with pytest.raises(ValidationError):
        EncoderModelConfig(name="c", path="p", dtype="fp8")
    with pytest.raises(ValidationError, match="int8 runs a float32 model"):
        EncoderModelConfig(name="c", path="p", dtype="bfloat16", quantize="int8")
    EncoderModelConfig(name="c", path="p", dtype="float32", quantize="int8")


def test_batches_are_sized_for_the_device_unless_set() -> None:
    assert BatchingOptions().batch_size("cpu") == 32
    assert BatchingOptions().batch_size("cuda") == 128
    assert BatchingOptions(max_batch_size=8).batch_size("cuda") == 8


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return prototype_classifier(tmp_path_factory.mktemp("parity") / "clf")


def _classify(folder: Path, dtype: str) -> list:
    engine = ClassifierEngine()
    encoder = engine.load(EncoderModelConfig(name="c", path=str(folder), dtype=dtype, max_seq_len=64,
                                             max_windows=4))
    assert next(encoder.model.parameters()).dtype == getattr(torch, dtype)
    return engine.classify(encoder, TEXTS)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_classifier_matches_float32_on_the_cpu(classifier_dir: Path, dtype: str) -> None:
    reference, half = _classify(classifier_dir, "float32"), _classify(classifier_dir, dtype)
    assert [c.label for c in half] == [c.label for c in reference]
    assert max_prob_difference(reference, half) < PROB_TOLERANCE
    assert all(abs(sum(c.probs) - 1) < 1e-5 for c in half)  # softmax in float32
    assert [c.num_tokens for c in half] == [c.num_tokens for c in reference]


def test_bfloat16_embeddings_match_float32_on_the_cpu() -> None:
    vectors = {}
    for dtype in ("float32", "bfloat16"):
        engine = EmbeddingEngine([EncoderModelConfig(name="e", path=str(minilm_path()), dtype=dtype)])
        vectors[dtype] = engine.embed(engine.models["e"], TEXTS)
    assert min_cosine(vectors["float32"], vectors["bfloat16"]) > COSINE_TOLERANCE
    assert all(abs(sum(x * x for x in e.vector) - 1) < 1e-4 for e in vectors["bfloat16"])
