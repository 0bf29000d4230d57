"""int8 dynamic quantization of a registry classifier: accuracy change beside the speed-up.

Both variants are loaded through the production code (``ClassifierEngine`` with
``quantize: none`` and ``quantize: int8``) and score the model's own held-out test split (the
split recorded with its training config), then classify the same texts in batches of 32 with
one torch thread, alternating variants so both see the same machine load.
"""

from __future__ import annotations

import time
from typing import Any

from maas.config import EncoderModelConfig
from maas.engines.encoders import ClassifierEngine, set_torch_threads
from maas.storage.registry import ModelVersion
from pipelines.training.report import score
from pipelines.training.train import TrainConfig, prepare_data

BATCH = 32
ROUNDS = 3
UNBATCHED_TEXTS = 300


def compare(version: ModelVersion) -> dict[str, Any]:
    """Test-split accuracy/macro-F1 and texts/s of ``version`` in float32 and in int8."""
    config = TrainConfig.model_validate({**version.config, "registry_dir": None})
    data = prepare_data(config)
    texts = [text for text, _ in data.test]
    truth = [label for _, label in data.test]
    set_torch_threads(1)
    engine = ClassifierEngine()
    encoders = {mode: engine.load(EncoderModelConfig(
        name=version.name, path=version.path, max_seq_len=config.max_seq_len,
        max_windows=config.max_windows, quantize=mode)) for mode in ("none", "int8")}
    seconds = {mode: 0.0 for mode in encoders}
    predicted: dict[str, list[str]] = {}
    for _ in range(ROUNDS):
        for mode, encoder in encoders.items():
            start = time.perf_counter()
            labels = [c.label for i in range(0, len(texts), BATCH)
                      for c in engine.classify(encoder, texts[i : i + BATCH])]
            seconds[mode] += time.perf_counter() - start
            predicted[mode] = labels
    rows = {}
    for mode in encoders:
        scores = score(truth, predicted[mode], data.labels)
        rows[mode] = {"accuracy": round(scores.accuracy, 4), "macro_f1": round(scores.macro_f1, 4),
                      "texts_per_s": round(ROUNDS * len(texts) / seconds[mode], 1)}
    agree = sum(a == b for a, b in zip(predicted["none"], predicted["int8"])) / len(texts)
    one_by_one = _texts_per_s_unbatched(engine, encoders["none"], texts[:UNBATCHED_TEXTS])
    return {"model": version.ref, "test_texts": len(texts), "batch_size": BATCH, "torch_threads": 1,
            "float32": rows["none"], "int8": rows["int8"],
            "speedup": round(rows["int8"]["texts_per_s"] / rows["none"]["texts_per_s"], 2),
            "macro_f1_change": round(rows["int8"]["macro_f1"] - rows["none"]["macro_f1"], 4),
            "same_label_share": round(agree, 4),
            "float32_unbatched_texts_per_s": round(one_by_one, 1),
            "batching_gain_model_only": round(rows["none"]["texts_per_s"] / one_by_one, 2)}


def _texts_per_s_unbatched(engine: ClassifierEngine, encoder: Any, texts: list[str]) -> float:
    """The same model called once per text: the ceiling of what batching can add on this CPU."""
    start = time.perf_counter()
    for text in texts:
        engine.classify(encoder, [text])
    return len(texts) / (time.perf_counter() - start)
