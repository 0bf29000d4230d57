"""``maas train --with-feedback``'s data (no training runs here): feedback joins the training split
only, never validation or test, which stay the same examples as without it; and the background
trigger asks for a retrain once ``classifier.retrain_after_feedback`` new labels arrived."""

from __future__ import annotations

import json
from pathlib import Path

from maas.config import AppConfig
from maas.storage.feedback import FeedbackEntry, FeedbackLog, classifier_feedback_folder
from maas.storage.registry import ModelRegistry, TrainingStatus
from pipelines.training.background_training import (
    feedback_retrain_jobs,
    logical_cpus,
    new_feedback,
    retrain_cpus,
)
from pipelines.training.train import TrainConfig, prepare_data
from tests.unit.test_registry import add_version


def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.csv"
    rows = [f"great thing number {i},good" for i in range(20)] + [f"awful thing number {i},bad" for i in range(20)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def give(registry: Path, examples: list[tuple[str, str]], owner: str = "alice") -> None:
    FeedbackLog(classifier_feedback_folder(registry, "reviews")).append(
        owner, [FeedbackEntry(response_id="classify-1", model_id="reviews/v1", text=t, label=y) for t, y in examples],
        1000)


def config(tmp_path: Path, **fields: object) -> TrainConfig:
    return TrainConfig.model_validate({"task": "reviews", "dataset": {"path": str(dataset(tmp_path))},
                                       "registry_dir": str(tmp_path / "registry"), "max_train_examples": 10,
                                       **fields})


def test_feedback_joins_the_training_split_only(tmp_path: Path) -> None:
    plain = prepare_data(config(tmp_path))
    held_out = plain.validation[0]
    give(tmp_path / "registry", [("a new style of praise", "good"), ("a new style of scorn", "bad"),
                                 (held_out[0], held_out[1]),  # a text of the validation split: left out
                                 ("an unknown label", "meh")])  # not a label of the data: left out
    fed = prepare_data(config(tmp_path, with_feedback=True))
    assert fed.validation == plain.validation and fed.test == plain.test
    assert fed.feedback_examples == 2 and fed.feedback_seen == 4
    assert set(fed.train) == set(plain.train) | {("a new style of praise", "good"), ("a new style of scorn", "bad")}
    held_texts = {t for t, _ in fed.validation + fed.test}
    assert not held_texts & {t for t, _ in fed.train}
    assert fed.data_hash != plain.data_hash
    assert prepare_data(config(tmp_path)).train == plain.train  # without the flag, no feedback


def test_feedback_relabels_a_training_text_instead_of_doubling_it(tmp_path: Path) -> None:
    plain = prepare_data(config(tmp_path))
    text, label = plain.train[0]
    give(tmp_path / "registry", [(text, "bad" if label == "good" else "good")])
    fed = prepare_data(config(tmp_path, with_feedback=True))
    assert [y for t, y in fed.train if t == text] == ["bad" if label == "good" else "good"]
    assert len(fed.train) == len(plain.train)


def test_the_background_trigger_counts_new_labels_since_the_newest_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    app = AppConfig.model_validate({"registry_dir": str(registry.root), "classifier": {
        "retrain_after_feedback": 2, "models": [{"name": "reviews", "path": "registry:reviews",
                                                 "train_config": str(_train_file(tmp_path))}]}})
    version = add_version(registry, "reviews", ["bad", "good"])
    registry.set_live("reviews", version)
    give(registry.root, [("one", "good")])
    assert new_feedback(registry, "reviews") == 1 and feedback_retrain_jobs(app) == []
    give(registry.root, [("two", "bad")])
    (job,) = feedback_retrain_jobs(app)
    assert job.probe["with_feedback"] and job.probe["promote_if_better"] and job.probe["rollout"] is False
    registry.set_training_status("reviews", TrainingStatus(state="training"))
    assert feedback_retrain_jobs(app) == []  # one run at a time
    registry.set_training_status("reviews", TrainingStatus(state="done"))
    record = Path(registry.get("reviews", version).path) / "maas_training.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "feedback_seen": 2}))
    assert new_feedback(registry, "reviews") == 0 and feedback_retrain_jobs(app) == []
    off = app.model_copy(update={"classifier": app.classifier.model_copy(update={"retrain_after_feedback": 0})})
    give(registry.root, [("three", "good"), ("four", "bad")])
    assert feedback_retrain_jobs(off) == [] and len(feedback_retrain_jobs(app)) == 1


def _train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train-reviews.yaml"
    path.write_text(f"task: reviews\ndataset:\n  path: {dataset(tmp_path)}\n")
    return path


def test_a_service_that_retrains_on_feedback_keeps_the_cpus_for_it(tmp_path: Path) -> None:
    model = {"name": "reviews", "path": "registry:reviews", "train_config": str(_train_file(tmp_path))}
    on = AppConfig.model_validate({"classifier": {"retrain_after_feedback": 5, "models": [model]}})
    off = AppConfig.model_validate({"classifier": {"models": [model]}})
    assert retrain_cpus(on) == 1.0 and retrain_cpus(off) == 0.0  # 2 workers x 0.5 CPU by default
    assert logical_cpus(on, [], 1) == logical_cpus(off, [], 1) + 1  # ceil(graph + 1) on a 1-CPU machine
