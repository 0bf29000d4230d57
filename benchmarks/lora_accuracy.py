"""A LoRA adapter of the served generator against the base model, on a generator task's test split.

    .venv/bin/python -m benchmarks.lora_accuracy [--out benchmarks/results/lora_topic.json] \\
        lora-topic [maas train options, e.g. --max-steps 80]

Runs ``maas train``'s LoRA pipeline (:func:`pipelines.training.lora.train_adapter`: Ray Train,
then greedy answers of the base model and of the adapter on the test split, scored by exact
match) into a throwaway registry unless ``--registry-dir`` is given, and writes the metrics, the
answers each model tends to give, the config and the command that made them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from maas.offline import set_offline_env

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    set_offline_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_topic.json"))
    args, train_args = parser.parse_known_args(argv)
    from pipelines.training.lora import config_from_args, train_adapter

    config = config_from_args(train_args)
    with tempfile.TemporaryDirectory(prefix="maas-lora-bench-") as scratch:
        if config.registry_dir is None:
            config = config.model_copy(update={"registry_dir": str(Path(scratch) / "registry"),
                                               "storage_path": str(Path(scratch) / "ray_train")})
        result = train_adapter(config)
        report = json.loads((Path(result.path) / "report.json").read_text(encoding="utf-8"))
    command = "PYTHONPATH=. .venv/bin/python -m benchmarks.lora_accuracy " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = {
        "command": command,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "task": config.task,
        "base_test_accuracy": result.metrics["base_test_accuracy"],
        "adapter_test_accuracy": result.metrics["test_accuracy"],
        "base_test_lenient_accuracy": result.metrics["base_test_lenient_accuracy"],
        "adapter_test_lenient_accuracy": result.metrics["test_lenient_accuracy"],
        "test_examples": int(result.metrics["test_examples"]),
        "training": {k: result.metrics[k] for k in ("global_step", "train_loss", "validation_loss", "train_time_s")
                     if k in result.metrics},
        "wall_time_s": result.wall_time_s,
        "data_hash": result.data_hash,
        "base_answers": report["base_answers"],
        "adapter_answers": report["adapter_answers"],
        "samples": report["samples"],
        "config": report["config"],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"base {out['base_test_accuracy']:.3f} -> adapter {out['adapter_test_accuracy']:.3f} exact match "
          f"(first label named: base {out['base_test_lenient_accuracy']:.3f}, adapter "
          f"{out['adapter_test_lenient_accuracy']:.3f}) on "
          f"{out['test_examples']} test examples; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
