"""Settings of a benchmark run: engine settings shared by every system, and the workloads.

Every system serves the same model with the same engine settings (:class:`EngineSettings`);
the generation and classification workloads are fixed by :class:`GenerationWorkload` and
:class:`ClassifyWorkload`. ``--quick`` swaps in tiny sizes for a smoke run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maas.engines.generator import resolve_dtype

GENERATION_SYSTEMS: tuple[str, ...] = ("maas", "vllm", "rayllm", "naive")
MAAS_STREAM_INTERVAL = 4
"""maas streams chunks of 4 tokens, as cluster/maas-cpu.yaml does (``stream_interval``)."""
MAAS_VARIANTS: dict[str, list[str]] = {
    "maas-bf16": ["--dtype", "bfloat16"],
    "maas-stream1": ["--stream-interval", "1"],
    "maas-stream1-stock": ["--stream-interval", "1"],
}
"""Opt-in maas variants (extra ``benchmarks.ray_apps`` flags): ``maas-bf16`` forces bfloat16 (the
default before ``auto``) to measure the dtype choice on this CPU; ``maas-stream1`` streams every
token as its own chunk (vLLM's default ``stream_interval``)."""
SERVE_STOCK_SUFFIX = "-stock"
"""Variants named ``...-stock`` run maas on Ray Serve's stock settings, without the Serve
settings ``maas serve`` sets (``maas.cli.SERVE_THROUGHPUT_ENV``)."""
EXTRA_SYSTEMS: tuple[str, ...] = (*MAAS_VARIANTS, "maas-stock", "maas-no-tcmalloc", "vllm-tcmalloc")
"""``maas-no-tcmalloc``: maas with ``MAAS_TCMALLOC=0`` (glibc malloc in the replicas);
``vllm-tcmalloc``: bare vLLM with tcmalloc preloaded, as vLLM's CPU docs recommend."""
CLASSIFY_VARIANTS: tuple[str, ...] = ("maas-batched", "maas-batched-int8", "maas-unbatched", "naive")
EXTRA_CLASSIFY_VARIANTS: tuple[str, ...] = ("maas-batched-stock", "maas-unbatched-stock", "maas-batched-nowait",
                                             "maas-batched-wait10ms")
"""``maas-batched-nowait``: ``batch_wait_timeout_s`` 0 (now the default); ``maas-batched-wait10ms``:
0.01 s, the default before the ingress coalesced requests."""
"""``maas-batched-int8``: the batched classifier with ``quantize: int8``."""
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVED_MODEL = "smollm2-135m-instruct"
CLASSIFIER_MODEL = "sentiment"
RAY_NUM_CPUS = 8
"""Logical CPUs of each private Ray cluster (more than the 2 cores, so every replica schedules)."""


@dataclass(frozen=True)
class EngineSettings:
    """vLLM engine settings used by maas, bare vLLM and Ray Serve LLM alike."""

    dtype: str = field(default_factory=lambda: resolve_dtype("auto", on_gpu=False))
    """maas's CPU default: bfloat16 on CPUs with native bf16 instructions, else float32."""
    max_model_len: int = 2048
    enforce_eager: bool = True
    max_num_seqs: int = 64
    kv_cache_gib: int = 1

    def env(self) -> dict[str, str]:
        """Environment variables every vLLM process needs for these settings."""
        return {"VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib)}


@dataclass(frozen=True)
class Level:
    """One concurrency level and how many requests it sends."""

    concurrency: int
    num_prompts: int


@dataclass(frozen=True)
class GenerationWorkload:
    """Random prompts of fixed lengths through ``/v1/completions`` (vLLM's load generator)."""

    input_len: int = 128
    output_len: int = 64
    seed: int = 0
    ignore_eos: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    num_warmups: int = 2
    levels: tuple[Level, ...] = (Level(1, 4), Level(8, 16), Level(32, 64))
    naive_max_prompts: int = 32
    """Cap on the requests a level sends to the naive server (it is slow at high concurrency)."""

    def levels_for(self, system: str) -> tuple[Level, ...]:
        """The levels a system runs; the naive server's are capped at ``naive_max_prompts``."""
        if system != "naive":
            return self.levels
        return tuple(Level(lv.concurrency, min(lv.num_prompts, self.naive_max_prompts))
                     for lv in self.levels)


@dataclass(frozen=True)
class ClassifyWorkload:
    """Fixed short texts through ``/v1/classify`` (our own async load generator)."""

    seed: int = 0
    num_warmups: int = 8
    levels: tuple[Level, ...] = (Level(1, 64), Level(16, 512), Level(64, 1024))
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.0
    """As cluster/maas-cpu.yaml: the ingress coalesces concurrent requests (maas/serving/coalesce.py), so
    the classifier need not wait to fill a batch (0.01 before; ``maas-batched-wait10ms``)."""
    max_seq_len: int = 128


@dataclass
class BenchSettings:
    """Everything one run uses; recorded verbatim in ``results.json``."""

    systems: tuple[str, ...] = GENERATION_SYSTEMS
    classify_variants: tuple[str, ...] = CLASSIFY_VARIANTS
    engine: EngineSettings = field(default_factory=EngineSettings)
    generation: GenerationWorkload = field(default_factory=GenerationWorkload)
    classify: ClassifyWorkload = field(default_factory=ClassifyWorkload)
    startup_timeout_s: float = 600.0
    level_timeout_s: float = 900.0
    quick: bool = False
    results_dir: Path = RESULTS_DIR

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results_dir"] = str(self.results_dir)
        return data


def quick_settings(base: BenchSettings) -> BenchSettings:
    """Tiny workloads for a smoke run (same engines, few requests)."""
    base.generation = GenerationWorkload(
        input_len=32, output_len=16, num_warmups=1,
        levels=(Level(1, 2), Level(8, 8), Level(32, 32)), naive_max_prompts=8,
    )
    base.classify = ClassifyWorkload(num_warmups=2, levels=(Level(1, 8), Level(16, 32), Level(64, 64)))
    base.quick = True
    return base
