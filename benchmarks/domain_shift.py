"""A sentiment classifier trained on tweets, shown product and service reviews, corrected by feedback.

    PYTHONPATH=. .venv/bin/python -m benchmarks.domain_shift [--per-label 15] [--train 600] \\
        [--out benchmarks/results/domain_shift.json]

1. ``sentiment/v1`` is trained by the production pipeline (:func:`pipelines.training.train.train_classifier`)
   on the ``sentiment`` task (tweets), in a throwaway registry;
2. it is scored on the new domain: ``benchmarks/data/reviews_sentiment.tsv``, 90 hand-written
   review sentences (30 per label), a style the tweets lack; every other sentence of each label is
   feedback, the rest the held-out new-domain test;
3. the feedback half goes in as ``POST /v1/feedback`` stores it (:class:`maas.endpoints.feedback.api.Feedback`:
   each sentence remembered as a classify answer of v1, then given its correct label; no HTTP);
4. the background trainer's trigger (:func:`pipelines.training.background_training.feedback_retrain_jobs`,
   ``classifier.retrain_after_feedback`` = the number of feedback texts) plans the retrain and
   :func:`~pipelines.training.background_training.run_jobs` runs it: ``--with-feedback``, a
   challenger that goes live only if better on validation;
5. both versions are scored on the held-out reviews and on the tweets' fixed test split (the same
   examples for both: feedback never enters validation or test).

Prints a table and writes it, with the command and the config, to ``--out`` (JSON) and beside it (``.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maas.offline import set_offline_env

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "benchmarks" / "data" / "reviews_sentiment.tsv"
MARGIN = 0.02
"""The most the tweets' test accuracy may fall after the retrain (stated before the run)."""


def reviews(per_label: int = 15) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(feedback, held-out) halves of the review sentences: alternate sentences of each label; the
    first ``per_label`` of each label's feedback half are used (the held-out half is always whole)."""
    with open(REVIEWS, encoding="utf-8", newline="") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle, delimiter="\t")]
    feedback, held_out = [], []
    for label in sorted({y for _, y in rows}):
        of_label = [row for row in rows if row[1] == label]
        feedback += of_label[0::2][:per_label]
        held_out += of_label[1::2]
    return feedback, held_out


def accuracy(model_dir: str, examples: list[tuple[str, str]], max_seq_len: int) -> float:
    """The served reading of a version folder (windows' mean logits), scored on ``examples``."""
    from transformers import AutoTokenizer

    from maas.engines.classifier_heads import load_classifier
    from maas.engines.windows import predict
    from maas.storage.registry import TRAINING_FILE

    labels = json.loads((Path(model_dir) / TRAINING_FILE).read_text(encoding="utf-8"))["labels"]
    ids = predict(load_classifier(Path(model_dir)), AutoTokenizer.from_pretrained(model_dir),
                  [t for t, _ in examples], max_seq_len)
    return sum(labels[i] == y for i, (_, y) in zip(ids, examples, strict=True)) / len(examples)


def give_feedback(scratch: Path, registry_dir: Path, version: str, labels: list[str],
                  examples: list[tuple[str, str]]) -> int:
    """Each example as a classify answer of ``version``, then its correct label, as the route stores them."""
    from maas.endpoints.feedback.api import Feedback
    from maas.endpoints.feedback.protocol import FeedbackRequest
    from maas.storage.feedback import RememberedInput

    feedback = Feedback(scratch / "batches", registry_dir, lambda model: model if model == "sentiment" else None)
    for i, (text, label) in enumerate(examples):
        response_id = f"classify-shift{i}"
        feedback.remember(response_id, RememberedInput(kind="classify", model="sentiment", model_id=version,
                                                       texts=[text], labels=labels), "domain-shift")
        feedback.give(FeedbackRequest(response_id=response_id, label=label), "domain-shift")
    return len(examples)


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import yaml

    from maas.config import AppConfig
    from maas.storage.registry import ModelRegistry
    from pipelines.training.background_training import feedback_retrain_jobs, run_jobs
    from pipelines.training.train import TrainConfig, train_classifier

    registry_dir = scratch / "registry"
    values = {"task": "sentiment", "max_train_examples": args.train, "max_eval_examples": args.eval,
              "epochs": args.epochs, "max_seq_len": 64, "batch_size": 16, "head_init": "probe",
              "storage_path": str(scratch / "ray_train"), "time_budget_s": 150}
    train_file = scratch / "train-sentiment.yaml"
    train_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    first = train_classifier(TrainConfig.model_validate({**values, "registry_dir": str(registry_dir)}))
    feedback, held_out = reviews(args.per_label)
    given = give_feedback(scratch, registry_dir, first.model_ref or "", first.labels, feedback)
    app = AppConfig.model_validate({"registry_dir": str(registry_dir), "classifier": {
        "retrain_after_feedback": given, "models": [
            {"name": "sentiment", "path": "registry:sentiment", "train_config": str(train_file)}]}})
    jobs = feedback_retrain_jobs(app)
    assert len(jobs) == 1, "the trigger did not fire"
    outcomes = run_jobs(jobs)
    registry = ModelRegistry(registry_dir)
    second = registry.versions("sentiment")[-1]
    rows = {version.version: {
        "new_domain_accuracy": accuracy(version.path, held_out, 64),
        "tweets_test_accuracy": version.metrics["test_accuracy"],
        "tweets_test_macro_f1": version.metrics["test_macro_f1"],
        "validation_macro_f1": version.metrics["validation_macro_f1"],
        "feedback_examples": int(version.metrics.get("feedback_examples", 0)),
        "live": version.live,
    } for version in registry.versions("sentiment")}
    v1, v2 = rows["v1"], rows[second.version]
    return {"rows": rows, "feedback_given": given, "new_domain_held_out": len(held_out), "outcome": outcomes,
            "new_domain_gain": v2["new_domain_accuracy"] - v1["new_domain_accuracy"],
            "tweets_test_change": v2["tweets_test_accuracy"] - v1["tweets_test_accuracy"],
            "margin": MARGIN, "within_margin": v2["tweets_test_accuracy"] >= v1["tweets_test_accuracy"] - MARGIN,
            "train_config": values}


def table(result: dict[str, Any]) -> str:
    lines = ["| version | feedback examples | new domain accuracy (held-out reviews) | tweets test accuracy "
             "| tweets test macro-F1 | validation macro-F1 | live |", "|---|---|---|---|---|---|---|"]
    for version, row in result["rows"].items():
        lines.append(f"| {version} | {row['feedback_examples']} | {row['new_domain_accuracy']:.3f} "
                     f"| {row['tweets_test_accuracy']:.3f} | {row['tweets_test_macro_f1']:.3f} "
                     f"| {row['validation_macro_f1']:.3f} | {row['live']} |")
    lines.append("")
    lines.append(f"new domain: {result['new_domain_gain']:+.3f} on {result['new_domain_held_out']} held-out "
                 f"reviews after {result['feedback_given']} feedback labels; tweets test: "
                 f"{result['tweets_test_change']:+.3f} (allowed fall {result['margin']}: "
                 f"{'within' if result['within_margin'] else 'PAST'} the margin)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    set_offline_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=15, help="Feedback sentences per label (at most 15).")
    parser.add_argument("--train", type=int, default=600, help="Training tweets (class-balanced).")
    parser.add_argument("--eval", type=int, default=300, help="Validation and test tweets.")
    parser.add_argument("--epochs", type=int, default=1, help="Fine-tuning epochs of each version.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "domain_shift.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maas-domain-shift-") as scratch:
        result = run(args, Path(scratch))
    result |= {"command": "PYTHONPATH=. .venv/bin/python -m benchmarks.domain_shift "
                          + shlex.join(sys.argv[1:] if argv is None else argv),
               "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    text = table(result)
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(f"# Domain shift: tweets -> reviews, with feedback\n\n`{result['command']}` "
                                      f"({result['measured_at']}, {result['machine']['cpus']} CPUs)\n\n{text}\n",
                                      encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
