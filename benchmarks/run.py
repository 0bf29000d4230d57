"""Run the whole benchmark: generation on four systems, classification on three variants.

::

    .venv/bin/python -m benchmarks.run                 # full run → benchmarks/results/
    .venv/bin/python -m benchmarks.run --quick         # tiny smoke run → a temp folder
    .venv/bin/python -m benchmarks.run --systems maas,vllm --skip-classify

Each system runs alone, in its own process group, on a free 127.0.0.1 port, and is stopped
before the next one starts. Generation load comes from vLLM's own load generator
(:mod:`benchmarks.loadgen`), classification load from :mod:`benchmarks.classify_load`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import classify_load, report  # noqa: E402
from benchmarks.cpu_share import CpuAccounting  # noqa: E402
from benchmarks.settings import (  # noqa: E402
    CLASSIFIER_MODEL,
    CLASSIFY_VARIANTS,
    EXTRA_CLASSIFY_VARIANTS,
    EXTRA_SYSTEMS,
    GENERATION_SYSTEMS,
    SERVED_MODEL,
    BenchSettings,
    Level,
    quick_settings,
)
from benchmarks.systems import (  # noqa: E402
    PYTHON,
    REPO_ROOT,
    RunningSystem,
    classify_spec,
    generation_spec,
    variant_overrides,
)
from maas.offline import set_offline_env

set_offline_env()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- models


def generator_dir() -> Path:
    """SmolLM2-135M-Instruct as a local Hugging Face folder (prepared once by maas)."""
    from maas.storage.embedded import prepare_smollm2

    return prepare_smollm2()


def classifier_dir(work_dir: Path) -> tuple[Path, str]:
    """The trained ``sentiment`` model if maas has one, else MiniLM with a seeded 3-label head.

    The speed comparison needs the same weights in every variant, not a good model.
    """
    from maas.storage.embedded import minilm_path
    from maas.storage.registry import ModelRegistry

    registry = ModelRegistry()
    live = registry.live_version(CLASSIFIER_MODEL)
    if live is not None:
        version = registry.get(CLASSIFIER_MODEL, live)
        return Path(version.path), f"maas's fine-tuned {version.ref} (live in the model registry)"
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = work_dir / "classifier"
    torch.manual_seed(0)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out, "all-MiniLM-L6-v2 with an untrained 3-label head (seed 0)"


# --------------------------------------------------------------------------- generation


def loadgen_argv(base_url: str, model_dir: Path, levels: tuple[Level, ...], result_dir: Path,
                 settings: BenchSettings) -> list[str]:
    """The load generator command for one system (all of its concurrency levels)."""
    w = settings.generation
    argv = [PYTHON, "-m", "benchmarks.loadgen",
            "--levels", ",".join(f"{lv.concurrency}:{lv.num_prompts}" for lv in levels),
            "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", SERVED_MODEL, "--tokenizer", str(model_dir),
            "--dataset-name", "random", "--random-input-len", str(w.input_len),
            "--random-output-len", str(w.output_len), "--seed", str(w.seed),
            "--temperature", str(w.temperature), "--top-p", str(w.top_p),
            "--num-warmups", str(w.num_warmups),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--disable-tqdm"]
    return argv + (["--ignore-eos"] if w.ignore_eos else [])


def run_loadgen(argv: list[str], log_path: Path, timeout_s: float) -> None:
    """Run the load generator in its own process group; kill the group on timeout."""
    with open(log_path, "ab") as out:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log(f"load generator timed out after {timeout_s:.0f}s (partial results kept)")


def parse_level(path: Path, output_len: int) -> dict[str, Any]:
    """Our summary of one ``vllm bench serve`` result file.

    ``short_requests`` counts answers with fewer than ``output_len`` tokens: the load generator
    counts a stream that ended early (with an error event, say) as completed.
    """
    raw = json.loads(path.read_text())
    completed = raw.get("completed") or 0
    output_lens = raw.get("output_lens")
    return {
        "short_requests": None if output_lens is None else sum(
            1 for n in output_lens if n and n < output_len),
        "concurrency": raw.get("max_concurrency"),
        "num_requests": raw.get("num_prompts"),
        "completed": completed,
        "failed": raw.get("failed", 0),
        "duration_s": round(raw.get("duration", 0.0), 2),
        "output_tok_s": raw.get("output_throughput"),
        "total_tok_s": raw.get("total_token_throughput"),
        "req_s": raw.get("request_throughput"),
        "mean_output_tokens": (raw.get("total_output_tokens", 0) / completed) if completed else None,
        **{f"{metric}_{p}_ms": raw.get(f"{p}_{metric}_ms")
           for metric in ("ttft", "tpot", "itl", "e2el") for p in ("p50", "p99")},
    }


def bench_generation(system: str, model_dir: Path, settings: BenchSettings, work_dir: Path,
                     commands: dict[str, Any]) -> dict[str, Any]:
    """Start one system, drive every concurrency level through it, stop it."""
    spec = generation_spec(system, model_dir, settings.engine)
    levels = settings.generation.levels_for(system)
    raw_dir = settings.results_dir / "raw" / "generation" / system
    raw_dir.mkdir(parents=True, exist_ok=True)
    for old in raw_dir.glob("c*.json"):
        old.unlink()
    log_path = work_dir / f"generation-{system}.log"
    commands.setdefault("generation", {})[system] = spec.command_line()
    log(f"{system}: starting on port {spec.port} (log {log_path})")
    with RunningSystem(spec, log_path, settings.startup_timeout_s) as running:
        log(f"{system}: ready after {running.startup_s:.0f}s; load: "
            + ", ".join(f"c={lv.concurrency}×{lv.num_prompts}" for lv in levels))
        argv = loadgen_argv(spec.base_url, model_dir, levels, raw_dir, settings)
        commands.setdefault("loadgen", {})[system] = shlex.join(argv)
        load_before = os.getloadavg()[0]
        with CpuAccounting() as cpu:
            run_loadgen(argv, work_dir / f"loadgen-{system}.log", settings.level_timeout_s * len(levels))
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        startup = running.startup_s
    parsed = [parse_level(raw_dir / f"c{lv.concurrency}.json", settings.generation.output_len)
              for lv in levels
              if (raw_dir / f"c{lv.concurrency}.json").exists()]
    log(f"{system}: done, stopped; {len(parsed)}/{len(levels)} levels")
    return {"startup_s": round(startup, 1), "error": None, "levels": parsed, "load_average_1m": load,
            "cpu_during_load": cpu.result()}


# --------------------------------------------------------------------------- classification


def bench_classify(variant: str, model_dir: Path, settings: BenchSettings, work_dir: Path,
                   commands: dict[str, Any]) -> dict[str, Any]:
    """Start one classification variant, run every concurrency level, stop it."""
    w = settings.classify
    spec = classify_spec(variant, model_dir, w.max_batch_size)
    log_path = work_dir / f"classify-{variant}.log"
    commands.setdefault("classification", {})[variant] = spec.command_line()
    log(f"classify {variant}: starting on port {spec.port} (log {log_path})")
    levels = []
    with RunningSystem(spec, log_path, settings.startup_timeout_s) as running:
        log(f"classify {variant}: ready after {running.startup_s:.0f}s")
        load_before = os.getloadavg()[0]
        with CpuAccounting() as cpu:
            for lv in w.levels:
                result = classify_load.run(spec.base_url, CLASSIFIER_MODEL, lv.concurrency,
                                           lv.num_prompts, w.seed, w.num_warmups)
                log(f"classify {variant}: c={lv.concurrency}: {result.requests_per_s:.1f} req/s, "
                    f"p50 {result.latency_p50_ms:.0f} ms, p99 {result.latency_p99_ms:.0f} ms")
                levels.append(result.to_dict())
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        startup = running.startup_s
    return {"startup_s": round(startup, 1), "error": None, "levels": levels, "load_average_1m": load,
            "cpu_during_load": cpu.result()}


def measure_quantization() -> dict[str, Any]:
    """int8 vs float32 of the live registry classifier: accuracy and offline speed."""
    from benchmarks import quantization
    from maas.storage.registry import ModelRegistry

    registry = ModelRegistry()
    live = registry.live_version(CLASSIFIER_MODEL)
    if live is None:
        return {"error": f"no live {CLASSIFIER_MODEL} in the registry (run `maas train {CLASSIFIER_MODEL}`)"}
    log("quantization: scoring float32 and int8 on the test split")
    return quantization.compare(registry.get(CLASSIFIER_MODEL, live))


# --------------------------------------------------------------------------- main


def guarded(name: str, func: Any, *args: Any) -> dict[str, Any]:
    """Run one system's benchmark; a failure is recorded and the run goes on."""
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - one failing system must not end the run
        log(f"{name} FAILED: {exc}")
        return {"startup_s": None, "error": f"{type(exc).__name__}: {exc}", "levels": []}


def automatic_notes(results: dict[str, Any], settings: BenchSettings) -> list[str]:
    """Notes that follow from the numbers: capped naive levels, short outputs, failures."""
    notes = ["The CPU was shared with other work during the run; `load_average_1m` in results.json "
             "gives the 1-minute load average before and after each system's measurement "
             "(2 cores: anything above 2 means contention)."]
    gen = settings.generation
    if results.get("merged_from"):
        rerun = ", ".join([*settings.systems, *settings.classify_variants])
        notes.append(f"Merged run: {rerun} measured on {results['machine']['date']}; the other "
                     f"systems come from the run of {results['merged_from']}.")
    if "naive" in results["generation"] and gen.naive_max_prompts < max(lv.num_prompts for lv in gen.levels):
        notes.append(f"The naive server got at most {gen.naive_max_prompts} requests per level "
                     "(it is slow at high concurrency); its numbers are rates, so they compare.")
    for name, entry in results["generation"].items():
        for level in entry.get("levels", []):
            mean = level.get("mean_output_tokens")
            if mean is not None and mean < 0.98 * gen.output_len:
                short = level.get("short_requests")
                notes.append(f"{name} at c={level['concurrency']}: {mean:.1f} output tokens per request "
                             f"on average, not {gen.output_len}"
                             + (f"; {short} answers ended early" if short is not None else "")
                             + " (an error inside the stream, or EOS where ignore_eos was not honoured).")
            if level.get("failed"):
                notes.append(f"{name} at c={level['concurrency']}: {level['failed']} failed requests.")
    return notes


def merge_previous(results: dict[str, Any], path: Path) -> None:
    """Start from an earlier run's systems and commands (those re-run here are replaced)."""
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    for key in ("generator_dir", "classifier"):
        if key in previous.get("settings", {}):
            results["settings"].setdefault(key, previous["settings"][key])
    results["generation"].update(previous.get("generation", {}))
    results["classification"].update(previous.get("classification", {}))
    if previous.get("quantization"):
        results["quantization"] = previous["quantization"]
    for key, value in previous.get("commands", {}).items():
        if isinstance(value, dict):
            results["commands"].setdefault(key, {}).update(value)
    results["commands"]["earlier_run"] = previous.get("commands", {}).get("run")
    results["merged_from"] = previous.get("machine", {}).get("date")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(GENERATION_SYSTEMS),
                        help="generation systems, comma-separated (default: %(default)s; "
                             f"also: {', '.join(EXTRA_SYSTEMS)})")
    parser.add_argument("--classify-variants", default=",".join(CLASSIFY_VARIANTS),
                        help="classification variants (default: %(default)s)")
    parser.add_argument("--skip-generate", action="store_true", help="no generation benchmark")
    parser.add_argument("--skip-classify", action="store_true", help="no classification benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="output folder (default: benchmarks/results, or a temp folder with --quick)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--gen-levels", default=None, metavar="C:N,...",
                        help="generation levels, e.g. 1:4,32:64 (default: 1:4,8:16,32:64)")
    parser.add_argument("--classify-levels", default=None, metavar="C:N,...",
                        help="classification levels, e.g. 1:64,16:512,64:1024 (the default)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other systems' results already in the results folder "
                             "(re-run only the systems named here)")
    return parser


def parse_levels(text: str) -> tuple[Level, ...]:
    """``"1:4,32:64"`` → levels (concurrency, requests)."""
    return tuple(Level(*(int(x) for x in item.split(":"))) for item in text.split(",") if item)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    settings = BenchSettings()
    if args.quick:
        settings = quick_settings(settings)
    settings.systems = tuple(s for s in args.systems.split(",") if s) if not args.skip_generate else ()
    settings.classify_variants = (tuple(v for v in args.classify_variants.split(",") if v)
                                  if not args.skip_classify else ())
    unknown = (set(settings.systems) - set(GENERATION_SYSTEMS) - set(EXTRA_SYSTEMS)) | (
        {v for v in settings.classify_variants if not known_classify_variant(v)})
    if unknown:
        raise SystemExit(f"unknown systems/variants: {sorted(unknown)}")
    if args.gen_levels:
        settings.generation = replace(settings.generation, levels=parse_levels(args.gen_levels))
    if args.classify_levels:
        settings.classify = replace(settings.classify, levels=parse_levels(args.classify_levels))
    if args.results_dir is not None:
        settings.results_dir = args.results_dir.resolve()
    elif args.quick:
        settings.results_dir = Path(tempfile.gettempdir()) / "maas-bench-quick"
    return settings


def known_classify_variant(variant: str) -> bool:
    """A listed variant, or a maas one with ``-t<N>``/``-r<N>``/``-grpc`` overrides (``maas-batched-t2``)."""
    base = "-".join(p for p in variant.split("-") if p != "grpc" and not variant_overrides(f"x-y-{p}"))
    return variant in CLASSIFY_VARIANTS or variant in EXTRA_CLASSIFY_VARIANTS or (
        variant.startswith("maas-") and (base in CLASSIFY_VARIANTS or base in EXTRA_CLASSIFY_VARIANTS))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    work_dir = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    log(f"results → {settings.results_dir}; logs → {work_dir}")
    commands: dict[str, Any] = {"run": shlex.join([PYTHON, "-m", "benchmarks.run", *(argv or sys.argv[1:])])}
    results: dict[str, Any] = {"machine": report.describe_machine(), "settings": settings.to_dict(),
                               "commands": commands, "generation": {}, "classification": {},
                               "logs_dir": str(work_dir)}
    if args.merge:
        merge_previous(results, settings.results_dir / "results.json")
    if settings.systems:
        model_dir = generator_dir()
        results["settings"]["generator_dir"] = str(model_dir)
        for system in settings.systems:
            results["generation"][system] = guarded(system, bench_generation, system, model_dir,
                                                    settings, work_dir, commands)
    if settings.classify_variants:
        cls_dir, what = classifier_dir(work_dir)
        results["settings"]["classifier"] = {"dir": str(cls_dir), "model": what}
        for variant in settings.classify_variants:
            results["classification"][variant] = guarded(variant, bench_classify, variant, cls_dir,
                                                         settings, work_dir, commands)
        if "maas-batched-int8" in settings.classify_variants:
            results["quantization"] = guarded("quantization", measure_quantization)
    results["machine"]["load_average_at_end"] = report.describe_machine()["load_average_at_start"]
    results["notes"] = automatic_notes(results, settings)
    paths = report.write_report(results, settings.results_dir, plots=not args.no_plots)
    print("\n" + report.console_summary(results) + "\n", flush=True)
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
