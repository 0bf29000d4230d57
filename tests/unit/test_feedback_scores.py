"""Feedback accuracy for the promotion rule: both versions classify the model's labelled
feedback; the result is kept while the feedback is unchanged; a failure is no evidence."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

from maas.serving.feedback_scores import FeedbackScores
from maas.storage.feedback import FeedbackLog, classifier_feedback_folder
from tests.unit.test_feedback_store import entry

ANSWERS = {"sentiment/v1": {"good": "negative", "bad": "negative", "fine": "neutral"},
           "sentiment/v2": {"good": "positive", "bad": "negative", "fine": "neutral"}}


class Classifier:
    """Each version's answers to known texts (the engines are not what is tested here)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    async def __call__(self, model_id: str, texts: list[str]) -> list[SimpleNamespace]:
        self.calls.append((model_id, len(texts)))
        if self.fail:
            raise RuntimeError("replica gone")
        return [SimpleNamespace(label=ANSWERS[model_id][text]) for text in texts]


def score_from_a_thread(scores: FeedbackScores) -> object:
    """What the canary's judge sees: ``accuracy`` called from a worker thread while the loop runs."""
    async def main() -> object:
        scores.bind_loop()
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(scores.accuracy("sentiment", "sentiment", "v1", "v2")))
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        return result[0]
    return asyncio.run(main())


def add_feedback(root: Path, *pairs: tuple[str, str]) -> None:
    FeedbackLog(classifier_feedback_folder(root, "sentiment")).append("alice", [entry(text, label) for text, label in pairs], 100)


def test_both_versions_score_the_feedback_and_the_result_is_kept(tmp_path: Path) -> None:
    add_feedback(tmp_path, ("good", "positive"), ("bad", "negative"), ("fine", "neutral"))
    classify = Classifier()
    scores = FeedbackScores(tmp_path, classify, chunk=2)
    accuracy = score_from_a_thread(scores)
    assert accuracy.labels == 3 and accuracy.live_accuracy == 2 / 3 and accuracy.challenger_accuracy == 1.0
    assert classify.calls == [("sentiment/v1", 2), ("sentiment/v1", 1), ("sentiment/v2", 2), ("sentiment/v2", 1)]
    assert score_from_a_thread(scores) == accuracy and len(classify.calls) == 4  # kept: no new feedback
    add_feedback(tmp_path, ("fine", "positive"))  # a label changed: scored again
    assert score_from_a_thread(scores).live_accuracy == 1 / 3 and len(classify.calls) == 8


def test_no_feedback_no_loop_or_a_failure_is_no_evidence(tmp_path: Path) -> None:
    assert score_from_a_thread(FeedbackScores(tmp_path, Classifier())) is None
    add_feedback(tmp_path, ("good", "positive"))
    assert FeedbackScores(tmp_path, Classifier()).accuracy("sentiment", "sentiment", "v1", "v2") is None  # no loop
    assert score_from_a_thread(FeedbackScores(tmp_path, Classifier(fail=True))) is None
