"""Feedback -> retrain on the real training pipeline (``long``: two small training runs, about
3 minutes on 2 cores): labels given through the feedback store make the background trigger plan a
``--with-feedback`` challenger, which trains on them and is scored on the same validation and test
examples as the version before it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maas.config import AppConfig
from maas.endpoints.feedback.api import Feedback
from maas.endpoints.feedback.protocol import FeedbackRequest
from maas.storage.feedback import RememberedInput
from maas.storage.registry import ModelRegistry
from pipelines.training.background_training import feedback_retrain_jobs, run_jobs
from pipelines.training.train import train_classifier
from tests.conftest import small_train_config

pytestmark = [pytest.mark.integration, pytest.mark.long]
REVIEWS = [("The blender stopped working after two weeks.", "negative"),
           ("The package was delivered on Tuesday afternoon.", "neutral"),
           ("The soup was delicious and the staff were attentive.", "positive")]


def test_feedback_retrains_a_challenger_on_the_same_held_out_data(ray_cluster: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    config = small_train_config("sentiment", registry, head_init="probe", fine_tune=False)
    first = train_classifier(config)
    feedback = Feedback(tmp_path / "batches", registry, lambda model: model)
    for i, (text, label) in enumerate(REVIEWS):
        feedback.remember(f"classify-{i}", RememberedInput(kind="classify", model="sentiment", model_id="sentiment/v1",
                                                           texts=[text], labels=first.labels), "ann")
        feedback.give(FeedbackRequest(response_id=f"classify-{i}", label=label), "ann")
    train_file = tmp_path / "train-sentiment.yaml"
    train_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"registry_dir"})))
    app = AppConfig.model_validate({"registry_dir": str(registry), "classifier": {
        "retrain_after_feedback": len(REVIEWS),
        "models": [{"name": "sentiment", "path": "registry:sentiment", "train_config": str(train_file)}]}})
    (job,) = feedback_retrain_jobs(app)
    assert run_jobs([job]) == {"sentiment": "ok"}
    v1, v2 = ModelRegistry(registry).versions("sentiment")
    assert v2.metrics["feedback_examples"] == len(REVIEWS) and v1.metrics["feedback_examples"] == 0
    assert v2.metrics["test_examples"] == v1.metrics["test_examples"]
    assert v2.config["with_feedback"] and v2.data_hash != v1.data_hash
    assert feedback_retrain_jobs(app) == []  # nothing new since v2
