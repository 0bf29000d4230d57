"""The first hour: untrained registry classifiers are planned for background training, answer
503 ``model_not_ready`` until live, challengers go live only when better on validation, and the
console prints a line per phase."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from maas.config import AppConfig, EncoderModelConfig
from maas.console import Console, TrainingProgress
from maas.edge.http import error_response
from maas.protocol.errors import ModelNotFoundError, ModelNotReadyError
from maas.storage.registry import ModelRegistry, TrainingStatus
from maas.storage.served_classifiers import ServedClassifiers
from pipelines.training.background_training import job_for, logical_cpus, mark_unfinished, plan_jobs
from pipelines.training.train import TrainConfig, _should_go_live
from tests.unit.test_registry import add_version as stored_version

SMALL = {"task": "sentiment", "max_train_examples": 240, "max_eval_examples": 64, "epochs": 1,
         "max_seq_len": 32, "batch_size": 16}


def add_version(registry: ModelRegistry, name: str, validation_f1: float | None) -> str:
    return stored_version(registry, name, ["a", "b"], validation_f1=validation_f1)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def served(registry: ModelRegistry) -> ServedClassifiers:
    return ServedClassifiers([EncoderModelConfig(name="sentiment", path="registry:sentiment")], registry)


def test_a_model_in_training_is_503_with_retry_after(registry: ModelRegistry) -> None:
    classifiers = served(registry)
    assert classifiers.ready_names() == []
    registry.set_training_status("sentiment", TrainingStatus(state="training", phase="fine-tune",
                                                             step=10, total=40, eta_s=95))
    with pytest.raises(ModelNotReadyError) as caught:
        classifiers.resolve("sentiment")
    error = pickle.loads(pickle.dumps(caught.value))  # it crosses Ray processes
    assert error.status_code == 503 and error.code == "model_not_ready" and error.retry_after_s == 95
    assert "step 10/40" in error.message
    response = error_response(error)
    body = json.loads(response.body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "95"
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["param"] == "model"
    with pytest.raises(ModelNotFoundError):  # an unknown model stays a 404
        classifiers.resolve("nope")
    add_version(registry, "sentiment", 0.6)
    registry.set_live("sentiment", "v1")
    assert classifiers.resolve("sentiment") == "sentiment/v1" and classifiers.ready_names() == ["sentiment"]


def test_a_failed_training_says_so(registry: ModelRegistry) -> None:
    registry.set_training_status("sentiment", TrainingStatus(state="failed", detail="DataError: no rows"))
    with pytest.raises(ModelNotReadyError, match="training failed .DataError: no rows."):
        served(registry).resolve("sentiment")


def test_a_run_cut_short_by_a_stop_is_not_training_forever(registry: ModelRegistry) -> None:
    registry.set_training_status("topic", TrainingStatus(state="training", phase="linear probe"))
    registry.set_training_status("sentiment", TrainingStatus(state="done", detail="sentiment/v1 live"))
    mark_unfinished(["topic", "sentiment", "never-trained"], str(registry.root))
    topic = registry.training_status("topic")
    assert topic is not None and topic.state == "failed" and "stopped with `maas serve`" in topic.detail
    assert registry.training_status("sentiment") == TrainingStatus(
        state="done", detail="sentiment/v1 live", updated_at=registry.training_status("sentiment").updated_at)
    assert registry.training_status("never-trained") is None
    with pytest.raises(ModelNotReadyError, match="training failed .stopped with `maas serve`"):
        ServedClassifiers([EncoderModelConfig(name="topic", path="registry:topic")], registry).resolve("topic")


def app_config(registry: ModelRegistry, train_file: Path) -> AppConfig:
    return AppConfig.model_validate({
        "registry_dir": str(registry.root),
        "classifier": {"models": [
            {"name": "sentiment", "path": "registry:sentiment", "train_config": str(train_file)},
            {"name": "topic", "path": "registry:topic"},
            {"name": "custom", "path": "registry:custom"},
        ]},
        "encoder": {"models": [{"name": "minilm", "path": "embedded:all-minilm-l6-v2"}]},
    })


def test_untrained_registry_models_are_planned_probe_first(registry: ModelRegistry, tmp_path: Path) -> None:
    import yaml

    train_file = tmp_path / "train.yaml"
    train_file.write_text(yaml.safe_dump(SMALL))
    jobs, untrainable = plan_jobs(app_config(registry, train_file))
    assert [job.name for job in jobs] == ["sentiment", "topic"] and untrainable == ["custom"]
    sentiment, topic = jobs
    probe, challenger = TrainConfig.model_validate(sentiment.probe), TrainConfig.model_validate(sentiment.challenger)
    assert (probe.fine_tune, probe.head_init, probe.max_train_examples) == (False, "probe", 240)
    assert challenger.fine_tune and challenger.promote_if_better and challenger.rollout is False
    assert TrainConfig.model_validate(topic.challenger).max_windows == 4  # cluster/train-topic.yaml
    add_version(registry, "sentiment", 0.6)
    registry.set_live("sentiment", "v1")
    jobs, _ = plan_jobs(app_config(registry, train_file))
    assert [job.name for job in jobs] == ["topic"]  # a live model is not retrained
    config = app_config(registry, train_file)
    assert logical_cpus(config, jobs, 2) >= 2 and logical_cpus(config, jobs, 64) == 64


def test_probe_only_needs_a_probe_and_a_probe_only_config_has_no_challenger() -> None:
    with pytest.raises(ValidationError, match="head_init: probe"):
        TrainConfig.model_validate({**SMALL, "fine_tune": False})
    job = job_for("sentiment", {**SMALL, "fine_tune": False, "head_init": "probe"}, None)
    assert job.challenger is None


def report(validation_f1: float) -> SimpleNamespace:
    return SimpleNamespace(training={"validation_macro_f1": validation_f1})


def test_a_challenger_goes_live_only_if_better_on_validation(registry: ModelRegistry) -> None:
    challenger = TrainConfig.model_validate({**SMALL, "promote_if_better": True, "rollout": False})
    assert _should_go_live(registry, "sentiment", challenger, report(0.1))  # the first version
    add_version(registry, "sentiment", 0.70)
    registry.set_live("sentiment", "v1")
    assert not _should_go_live(registry, "sentiment", challenger, report(0.69))
    assert not _should_go_live(registry, "sentiment", challenger, report(0.70))  # a tie keeps the live one
    assert _should_go_live(registry, "sentiment", challenger, report(0.71))
    plain = TrainConfig.model_validate(SMALL)  # without the rule: rollout as before
    assert not _should_go_live(registry, "sentiment", plain, report(0.99))
    assert _should_go_live(registry, "sentiment", plain.model_copy(update={"rollout": True}), report(0.1))


def test_the_console_prints_a_line_per_phase_not_per_step(registry: ModelRegistry) -> None:
    out = io.StringIO()
    progress = TrainingProgress(registry, ["sentiment"], Console(out))
    updates = [TrainingStatus(state="training", phase="queued"),
               TrainingStatus(state="training", phase="linear probe"),
               *[TrainingStatus(state="training", phase="fine-tune", step=s, total=50, eta_s=60 - s)
                 for s in range(0, 50, 10)],
               TrainingStatus(state="training", phase="evaluating"),
               TrainingStatus(state="done", detail="sentiment/v2 stored, not live")]
    for status in updates:
        registry.set_training_status("sentiment", status)
        progress.poll()
        if status.phase == "linear probe":  # the probe version goes live
            add_version(registry, "sentiment", 0.61)
            registry.set_live("sentiment", "v1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert "sentiment: linear probe" in lines[0]
    assert lines[1].endswith("sentiment/v1 is live: validation macro-F1 0.610, test macro-F1 0.500")
    assert "sentiment: fine-tune" in lines[2]
    assert lines[3].endswith("sentiment: done: sentiment/v2 stored, not live") and not progress.running()


def test_a_failed_background_run_is_recorded_and_the_others_go_on(registry: ModelRegistry,
                                                                   tmp_path: Path) -> None:
    from pipelines.training.background_training import run_jobs

    missing = {"task": "reviews", "dataset": {"path": str(tmp_path / "missing.csv")}}
    broken = job_for("reviews", {**missing, "head_init": "probe", "fine_tune": False},
                     str(registry.root))
    outcomes = run_jobs([broken])
    assert outcomes["reviews"].startswith("DataError")
    status = registry.training_status("reviews")
    assert status is not None and status.state == "failed" and "missing.csv" in status.detail
    with pytest.raises(ModelNotReadyError, match="training failed"):
        ServedClassifiers([EncoderModelConfig(name="reviews", path="registry:reviews")], registry).resolve("reviews")
