"""What one classify forward costs in-process, the floor under any server's 1-client latency::

    .venv/bin/python -m benchmarks.forward_cost

The classify benchmark's model (:func:`benchmarks.run.classifier_dir`), one short text per call,
through maas's engine (``ClassifierEngine.classify``, the production loading code) and through
transformers' ``pipeline()`` (the naive server's), with 1 and 2 torch threads: no HTTP, no Ray.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from maas.offline import set_offline_env

set_offline_env()

TEXTS = ("I love this phone, it is brilliant!", "The service was slow and the food was cold.")
CALLS = 200


def latency_ms(func: Callable[[str], object], calls: int = CALLS) -> tuple[float, float]:
    """(p50, min) milliseconds of ``func(text)`` after a warm-up."""
    for _ in range(20):
        func(TEXTS[0])
    times = []
    for i in range(calls):
        start = time.perf_counter()
        func(TEXTS[i % len(TEXTS)])
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


def main() -> int:
    import torch
    from transformers import pipeline

    from benchmarks.run import classifier_dir
    from maas.config import EncoderModelConfig
    from maas.engines.encoders import ClassifierEngine

    model_dir, description = classifier_dir(Path(tempfile.mkdtemp(prefix="maas-forward-")))
    engine = ClassifierEngine()
    encoder = ClassifierEngine.load(EncoderModelConfig(name="bench", path=str(model_dir), max_seq_len=64))
    naive = pipeline("text-classification", model=str(model_dir), top_k=None)
    print(f"model: {description}\n\n| path | torch threads | p50 ms | min ms |\n|---|---|---|---|")
    for name, func in (("maas ClassifierEngine.classify", lambda t: engine.classify(encoder, [t])),
                       ("transformers pipeline()", naive)):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            p50, low = latency_ms(func)
            print(f"| {name} | {threads} | {p50:.2f} | {low:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
