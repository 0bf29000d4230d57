"""What dynamic batching buys a classifier replica, and how much CPU a request costs it.

Classifies the same texts through the production engine (``ClassifierEngine``, the dtype a
replica picks for its device) at batch sizes 1, 8, 32, 64 and 256, and splits the time between
tokenization (on the CPU, in the replica) and the forward pass (on the device, including the
copy of the inputs there and of the probabilities back). On a GPU the forward pass of a batch
costs little more than that of one text, so texts/s grows with the batch until tokenization,
which does not get cheaper per text, is what is left: its milliseconds per text are the CPU each
request costs the replica, which sizes ``num_cpus`` against one GPU.

    python -m benchmarks.gpu_batching --model-dir DIR [--device cuda] [--out FILE]

``DIR`` is a classifier folder (``tests/gpu/prepare.py`` writes one); the texts are generated
(fixed seed, 8-60 words), so nothing else is needed. Runs on a CPU too (``--device cpu``) to
check the script, not for figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BATCH_SIZES = (1, 8, 32, 64, 256)
WORDS = ("market shares bank profit striker goal match season phone chip software update the a of "
         "and to in is was for on with as by it this that from at new after said will year people "
         "government election film music weather travel school price report team player").split()


@dataclass
class BatchFigures:
    """Throughput of one batch size and where the time went."""

    batch_size: int
    texts: int
    texts_per_s: float
    tokenize_ms_per_text: float
    forward_ms_per_text: float
    tokenize_share: float


def make_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 8-60 words drawn from a fixed vocabulary (fixed seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))) for _ in range(count)]


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def measure(engine: Any, encoder: Any, texts: list[str], batch_size: int) -> BatchFigures:
    """Classify ``texts`` in batches of ``batch_size``; time tokenization and forward apart."""
    tokenize_s = forward_s = 0.0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        t0 = time.perf_counter()
        batch, owners = encoder.windows(chunk)
        _sync(encoder.device)
        t1 = time.perf_counter()
        engine.classify_windows(encoder, batch, owners, len(chunk))  # ends with a copy to the CPU
        t2 = time.perf_counter()
        tokenize_s, forward_s = tokenize_s + t1 - t0, forward_s + t2 - t1
    total = tokenize_s + forward_s
    return BatchFigures(batch_size, len(texts), round(len(texts) / total, 1),
                        round(1000 * tokenize_s / len(texts), 3), round(1000 * forward_s / len(texts), 3),
                        round(tokenize_s / total, 3))


def run(model_dir: str, device: str, dtype: str, texts_per_size: int, batch_sizes: tuple[int, ...],
        max_seq_len: int) -> dict[str, Any]:
    """Figures of every batch size, after a warm-up batch of each."""
    import torch

    from maas.config import EncoderModelConfig
    from maas.engines.encoders import ClassifierEngine

    engine = ClassifierEngine()
    config = EncoderModelConfig(name="bench", path=model_dir, dtype=dtype, max_seq_len=max_seq_len)
    encoder = engine.load(config, device=device)
    texts = make_texts(texts_per_size)
    for size in batch_sizes:  # warm-up: kernels chosen, memory pools grown
        engine.classify(encoder, texts[:size])
    rows = [asdict(measure(engine, encoder, texts, size)) for size in batch_sizes]
    device_name = torch.cuda.get_device_name() if encoder.device == "cuda" else (platform.processor() or platform.machine())
    return {"device": encoder.device, "device_name": device_name, "dtype": encoder.dtype,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "max_seq_len": max_seq_len, "rows": rows}


def table(result: dict[str, Any]) -> str:
    """A markdown table of the figures."""
    lines = [f"{result['device_name']} ({result['device']}, {result['dtype']}, torch {result['torch']})",
             "", "| batch | texts/s | tokenize ms/text | forward ms/text | tokenize share |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['batch_size']} | {r['texts_per_s']} | {r['tokenize_ms_per_text']} | "
              f"{r['forward_ms_per_text']} | {r['tokenize_share']:.0%} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="classifier folder")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--texts", type=int, default=2048, help="texts per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device; use --device cpu to try the script")
    result = run(args.model_dir, args.device, args.dtype, args.texts, tuple(args.batch_sizes), args.max_seq_len)
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
