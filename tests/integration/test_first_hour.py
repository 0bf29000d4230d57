"""The first hour: the service answers before its classifier is trained; the classifier is
trained in the background (the same function ``maas serve`` starts), answers 503 with
``Retry-After`` meanwhile, and goes live with no restart; its fine-tuned challenger goes live
only if it beats the probe on validation.

A dedicated application (route prefix ``/firsthour``) on the session's Serve, with a fresh
registry: the embedded encoder and one registry classifier with no version. (No generator: the
encoder answering at once shows the application serves while its classifier trains; a vLLM
start here cost the suite a minute and a half.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import STARTUP_TIMEOUT_S, wait_healthy

pytestmark = pytest.mark.integration

APP = "firsthour"
PREFIX = "/firsthour"
ENCODER = "firsthour-minilm"
CLASSIFIER = "mood"  # a registry name of its own, in a registry of its own
TRAINING_BOUND_S = 900.0
"""Generous bound for the tiny probe and challenger runs on a loaded 2-core machine."""
ROOT = Path(__file__).resolve().parents[2]
TINY_TRAINING = {"task": "sentiment", "num_workers": 2, "cpus_per_worker": 0.5, "epochs": 1,
                 "batch_size": 16, "max_seq_len": 32, "max_train_examples": 240,
                 "max_eval_examples": 64, "seed": 0}


@pytest.fixture(scope="module")
def first_hour(service: str, minilm_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    """The application with an untrained classifier; yields (base URL, its config, registry)."""
    from ray import serve

    from maas.config import AppConfig
    from pipelines.app import build_app

    home = tmp_path_factory.mktemp("firsthour")
    train_file = home / "train-mood.yaml"
    train_file.write_text(yaml.safe_dump(TINY_TRAINING))
    config = AppConfig.model_validate({
        "classifier": {"models": [{"name": CLASSIFIER, "path": f"registry:{CLASSIFIER}",
                                   "train_config": str(train_file)}],
                       "deployment": {"num_cpus": 0.1}},
        "encoder": {"models": [{"name": ENCODER, "path": str(minilm_dir)}],
                    "deployment": {"num_cpus": 0.1}},
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"deployment": {"num_cpus": 0.05}},
        "registry_dir": str(home / "registry"),
    })
    serve.run(build_app(config), name=APP, route_prefix=PREFIX, blocking=False)
    base = service + PREFIX
    try:
        wait_healthy(base, STARTUP_TIMEOUT_S)
        yield base, config, home / "registry"
    finally:
        serve.delete(APP)


def replica_ids() -> dict[str, list[str]]:
    """The RUNNING replicas of every deployment of this app."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()["applications"][APP]["deployments"]
    return {name: sorted(r["replica_id"] for r in d["replicas"] if r["state"] == "RUNNING")
            for name, d in details.items()}


def classify(http: httpx.Client) -> httpx.Response:
    return http.post("/v1/classify", json={"model": CLASSIFIER, "input": ["I love this!", "Awful."]})


def card(http: httpx.Client) -> dict[str, Any]:
    return {c["id"]: c for c in http.get("/v1/models").json()["data"]}[CLASSIFIER]


def test_serves_first_trains_in_the_background_and_promotes_only_the_better(
        first_hour: tuple[str, Any, Path]) -> None:
    from maas.storage.registry import ModelRegistry
    from pipelines.training.background_training import plan_jobs, start_background_training

    base, config, registry_dir = first_hour
    with httpx.Client(base_url=base, timeout=120) as http:
        embedding = http.post("/v1/embeddings", json={"model": ENCODER, "input": "Say hi."})
        assert embedding.status_code == 200 and len(embedding.json()["data"][0]["embedding"]) == 384
        assert_not_ready(classify(http), card(http), "not_trained")
        before = replica_ids()

        jobs, untrainable = plan_jobs(config)
        assert [job.name for job in jobs] == [CLASSIFIER] and untrainable == []
        training = start_background_training(jobs, config.registry_dir)
        assert_not_ready(classify(http), card(http), "training")

        live = wait_for(lambda: classify(http).status_code == 200, "the probe version answers")
        print(f"\nfirst hour: the probe version answered after {live:.0f} s")
        answer = classify(http).json()
        assert answer["model"] == f"{CLASSIFIER}/v1" and answer["data"][0]["labels"] == [
            "negative", "neutral", "positive"]
        assert card(http)["status"] == "ready" and card(http)["version"] == "v1"
        import ray

        assert ray.get(training, timeout=TRAINING_BOUND_S) == {CLASSIFIER: "ok"}
        assert replica_ids() == before, "a deployment was restarted"
        assert_promotion_by_validation(ModelRegistry(registry_dir), classify(http).json()["model"])
        assert card(http)["training"]["state"] == "done"
    assert_models_list_shows_both_metrics(registry_dir)


def assert_not_ready(response: httpx.Response, model_card: dict[str, Any], status: str) -> None:
    """503 ``model_not_ready`` with ``Retry-After`` and the OpenAI body; the card says why."""
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "model_not_ready", response.text
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert model_card["status"] == status and model_card["version"] is None, model_card


def wait_for(condition: Any, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < TRAINING_BOUND_S:
        if condition():
            return time.monotonic() - start
        time.sleep(2)
    raise AssertionError(f"not within {TRAINING_BOUND_S:.0f} s: {what}")


def assert_promotion_by_validation(registry: Any, served_id: str) -> None:
    """v1 is the probe, v2 the fine-tuned challenger; the live one is the better on validation."""
    v1, v2 = registry.versions(CLASSIFIER)
    assert v1.config["fine_tune"] is False and v2.config["fine_tune"] is True
    f1 = {v.version: v.metrics["validation_macro_f1"] for v in (v1, v2)}
    expected = "v2" if f1["v2"] > f1["v1"] else "v1"
    print(f"first hour: validation macro-F1 probe {f1['v1']:.3f}, challenger {f1['v2']:.3f}: "
          f"{expected} live")
    assert registry.live_version(CLASSIFIER) == expected and served_id == f"{CLASSIFIER}/{expected}"


def assert_models_list_shows_both_metrics(registry_dir: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "maas.cli", "models", "list", "--registry-dir",
                             str(registry_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    assert "val-F1" in lines[0] and "test-F1" in lines[0]
    rows = [line for line in lines if f"{CLASSIFIER}/v" in line]
    assert len(rows) == 2 and "probe" in rows[0] and "fine-tune" in rows[1], listed.stdout
    assert sum(row.startswith("*") for row in rows) == 1
