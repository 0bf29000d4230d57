"""The classifier and encoder engines on a CUDA GPU in half precision, against float32 on the
CPU: same labels, probabilities within ``PROB_TOLERANCE``, embeddings within ``COSINE_TOLERANCE``
(the tolerances of the CPU bfloat16 tests in tests/unit/test_encoder_dtype.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.config import GPU_BATCH_SIZE, BatchingOptions, EncoderModelConfig
from maas.engines.encoders import ClassifierEngine, EmbeddingEngine, default_device
from tests.parity import (
    COSINE_TOLERANCE,
    PROB_TOLERANCE,
    TEXTS,
    max_prob_difference,
    min_cosine,
)


def _config(folder: Path, dtype: str) -> EncoderModelConfig:
    return EncoderModelConfig(name="m", path=str(folder), dtype=dtype, max_seq_len=64, max_windows=4)


def _classify(folder: Path, device: str, dtype: str, texts: list[str] = TEXTS) -> list:
    engine = ClassifierEngine()
    return engine.classify(engine.load(_config(folder, dtype), device=device), texts)


def test_a_replica_with_a_gpu_runs_auto_in_half_precision(classifier_dir: Path) -> None:
    import torch

    encoder = ClassifierEngine.load(_config(classifier_dir, "auto"))
    parameter = next(encoder.model.parameters())
    assert default_device() == encoder.device == "cuda" and parameter.device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert parameter.dtype == expected
    assert BatchingOptions().batch_size(default_device()) == GPU_BATCH_SIZE


@pytest.mark.parametrize("dtype", ["auto", "float16", "float32"])
def test_cuda_classifier_matches_cpu_float32(classifier_dir: Path, dtype: str) -> None:
    reference = _classify(classifier_dir, "cpu", "float32")
    on_gpu = _classify(classifier_dir, "cuda", dtype)
    assert [c.label for c in on_gpu] == [c.label for c in reference]
    assert max_prob_difference(reference, on_gpu) < PROB_TOLERANCE
    assert [c.num_tokens for c in on_gpu] == [c.num_tokens for c in reference]


def test_cuda_embeddings_match_cpu_float32(encoder_dir: Path) -> None:
    vectors = {}
    for device, dtype in (("cpu", "float32"), ("cuda", "auto")):
        engine = EmbeddingEngine([_config(encoder_dir, dtype).model_copy(update={"max_windows": 1})], device)
        vectors[device] = engine.embed(engine.models["m"], TEXTS)
    assert min_cosine(vectors["cpu"], vectors["cuda"]) > COSINE_TOLERANCE


def test_a_batch_of_256_equals_batches_of_8(classifier_dir: Path) -> None:
    texts = [f"{text} ({i})" for i in range(32) for text in TEXTS][:256]
    engine = ClassifierEngine()
    encoder = engine.load(_config(classifier_dir, "auto"), device="cuda")
    whole = engine.classify(encoder, texts)
    parts = [c for i in range(0, len(texts), 8) for c in engine.classify(encoder, texts[i : i + 8])]
    assert [c.label for c in whole] == [c.label for c in parts]
    assert max_prob_difference(whole, parts) < PROB_TOLERANCE
