"""Honest evaluation of a training run: test metrics beside a classical baseline, as a report.

The fine-tuned model and a TF-IDF + logistic-regression baseline (scikit-learn), trained on
the same training examples, are scored on the same held-out test split: accuracy, macro-F1,
per-label F1 and the confusion matrix. :func:`write_report` puts ``report.json``,
``report.md`` and ``confusion_matrix.png`` into the model folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "confusion_matrix.png"
BASELINE_NAME = "TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression (C=10)"

Example = tuple[str, str]


class Scores(BaseModel):
    """How one classifier did on the test split."""

    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    confusion: list[list[int]] = Field(description="Rows: true label; columns: predicted label.")


class TrainingReport(BaseModel):
    """Everything a reader needs to judge a trained model."""

    model: str
    task: str
    labels: list[str]
    data_hash: str
    examples: dict[str, int]
    fine_tuned: Scores
    baseline: Scores
    baseline_name: str = BASELINE_NAME
    majority_accuracy: float
    training: dict[str, float] = Field(description="Training-side metrics (epochs, time, loss...).")
    config: dict[str, Any]
    created_at: str

    @property
    def beats_baseline(self) -> bool:
        return self.fine_tuned.macro_f1 > self.baseline.macro_f1


def score(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Scores:
    """Accuracy, macro-F1, per-label F1 and the confusion matrix of ``predicted``."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    per_label = f1_score(truth, predicted, labels=list(labels), average=None, zero_division=0)
    return Scores(
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, labels=list(labels), average="macro", zero_division=0)),
        per_label_f1={label: float(f) for label, f in zip(labels, per_label, strict=True)},
        confusion=confusion_matrix(truth, predicted, labels=list(labels)).tolist(),
    )


def tfidf_baseline(train: Sequence[Example], test: Sequence[Example], labels: Sequence[str]) -> Scores:
    """Train the classical baseline on ``train`` and score it on ``test``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    features = vectorizer.fit_transform([text for text, _ in train])
    model = LogisticRegression(C=10, max_iter=2000).fit(features, [label for _, label in train])
    predicted = model.predict(vectorizer.transform([text for text, _ in test]))
    scores = score([label for _, label in test], list(predicted), labels)
    print(f"[train] baseline macro-F1 {scores.macro_f1:.3f} ({time.perf_counter() - start:.1f}s)",
          flush=True)
    return scores


def write_report(folder: Path, report: TrainingReport) -> None:
    """Write ``report.json``, ``report.md`` and ``confusion_matrix.png`` into ``folder``."""
    (folder / REPORT_JSON).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    plot_confusion(report, folder / REPORT_PNG)


def read_report(folder: Path) -> TrainingReport | None:
    try:
        return TrainingReport.model_validate(json.loads((folder / REPORT_JSON).read_text("utf-8")))
    except (OSError, ValueError):
        return None


def render_markdown(report: TrainingReport) -> str:
    """The report as Markdown: headline table, per-label F1 and both confusion matrices."""
    ft, base = report.fine_tuned, report.baseline
    verdict = "beats" if report.beats_baseline else "does NOT beat"
    lines = [
        f"# Training report: {report.model}",
        "",
        f"Task `{report.task}`, labels {', '.join(report.labels)}; data sha256 `{report.data_hash[:16]}`; "
        f"examples: {', '.join(f'{k} {v}' for k, v in report.examples.items())}; created {report.created_at}.",
        "",
        f"The fine-tuned model **{verdict}** the baseline on test macro-F1.",
        "",
        "| model | test accuracy | test macro-F1 |",
        "|---|---:|---:|",
        f"| fine-tuned ({report.model}) | {ft.accuracy:.3f} | {ft.macro_f1:.3f} |",
        f"| baseline: {report.baseline_name} | {base.accuracy:.3f} | {base.macro_f1:.3f} |",
        f"| majority class | {report.majority_accuracy:.3f} | - |",
        "",
        "| label | F1 fine-tuned | F1 baseline |",
        "|---|---:|---:|",
        *[f"| {label} | {ft.per_label_f1[label]:.3f} | {base.per_label_f1[label]:.3f} |"
          for label in report.labels],
        "",
        "Training: " + ", ".join(f"{k} {v:g}" for k, v in sorted(report.training.items())),
        "",
        *_confusion_md("Fine-tuned", ft, report.labels),
        *_confusion_md("Baseline", base, report.labels),
        f"![confusion matrices]({REPORT_PNG})",
        "",
    ]
    return "\n".join(lines)


def _confusion_md(title: str, scores: Scores, labels: Sequence[str]) -> list[str]:
    head = "| true \\ predicted | " + " | ".join(labels) + " |"
    rule = "|---|" + "---:|" * len(labels)
    rows = [f"| {label} | " + " | ".join(str(n) for n in row) + " |"
            for label, row in zip(labels, scores.confusion, strict=True)]
    return [f"{title} confusion matrix:", "", head, rule, *rows, ""]


def plot_confusion(report: TrainingReport, path: Path) -> None:
    """Both confusion matrices side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2.2 + 0.7 * len(report.labels)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, (title, scores) in zip(axes, (("fine-tuned", report.fine_tuned),
                                          ("TF-IDF baseline", report.baseline)), strict=True):
        _heatmap(ax, scores.confusion, report.labels, f"{title}: macro-F1 {scores.macro_f1:.3f}")
    fig.suptitle(f"{report.model}: test split ({report.examples.get('test', 0)} examples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _heatmap(ax: Any, matrix: list[list[int]], labels: Sequence[str], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
