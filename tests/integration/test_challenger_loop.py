"""The challenger loop on one running service, no restart (``long``: a training run): ``sentiment/v1``
answers; clients label some answers by ``POST /v1/feedback``; ``maas train --with-feedback``'s
pipeline trains a challenger on them; shadow traffic compares it with the live version; a canary
answers half the requests; the promotion rule decides, with the feedback scored by both versions
in its evidence. At the end ``sentiment``'s live version is the one before and the challenger is
retired (no challenger), as the other tests expect."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from maas.cli import main as maas_main
from maas.storage.canary_store import CanaryStore
from maas.storage.feedback import load_feedback
from maas.storage.registry import ModelRegistry
from pipelines.training.train import train_classifier
from tests.conftest import CLASSIFIER, small_train_config

pytestmark = [pytest.mark.integration, pytest.mark.long]

LABELLED = [("The blender stopped working after two weeks.", "negative"),
            ("The soup was delicious and the staff were attentive.", "positive"),
            ("The hotel room was dirty and the staff were rude.", "negative"),
            ("Great value, fast delivery, would buy again.", "positive")]
DECISION_TIMEOUT_S = 120


def decided(client: httpx.Client, version: str) -> dict:
    """Requests until the canary of ``version`` has a decision after ``started``; that decision."""
    deadline = time.monotonic() + DECISION_TIMEOUT_S
    while time.monotonic() < deadline:
        for text, _ in LABELLED:
            answer = client.post("/v1/classify", json={"model": CLASSIFIER, "input": text})
            assert answer.status_code == 200, answer.text
        card = client.get(f"/v1/models/{CLASSIFIER}").json()["canary"] or {}
        judged = [d for d in card.get("decisions", []) if d["version"] == version and d["action"] != "started"]
        if judged:
            return judged[-1]
    raise AssertionError(f"no canary decision in {DECISION_TIMEOUT_S} s")


def test_feedback_retrain_shadow_canary_and_the_rule(service: str, client: httpx.Client, registry_dir: Path) -> None:
    registry = ModelRegistry(registry_dir)
    live = registry.live_version(CLASSIFIER)
    assert live is not None and registry.challenger(CLASSIFIER) is None
    for text, label in LABELLED:  # answers, then their correct labels
        answer = client.post("/v1/classify", json={"model": CLASSIFIER, "input": text}).json()
        given = client.post("/v1/feedback", json={"response_id": answer["id"], "label": label})
        assert given.status_code == 200, given.text
    assert set(LABELLED) <= set(load_feedback(registry_dir, CLASSIFIER))

    result = train_classifier(small_train_config(CLASSIFIER, registry_dir, with_feedback=True,
                                                 promote_if_better=False, rollout=False))
    challenger = result.model_ref.rpartition("/")[2]
    try:
        assert not result.live and registry.challenger(CLASSIFIER) == challenger
        assert registry.get(CLASSIFIER, challenger).metrics["feedback_examples"] >= len(LABELLED)
        for text, _ in LABELLED:  # shadowed (fraction 1.0 in the session config)
            assert client.post("/v1/classify", json={"model": CLASSIFIER, "input": text}).status_code == 200
        assert maas_main(["rollout", CLASSIFIER, challenger, "--canary", "50",
                          "--registry-dir", str(registry_dir)]) == 0
        decision = decided(client, challenger)
    finally:
        CanaryStore(registry).stop(CLASSIFIER)
        if registry.live_version(CLASSIFIER) != challenger:
            registry.set_live(CLASSIFIER, challenger)
        registry.set_live(CLASSIFIER, live)  # the challenger is `previous`: no challenger any more
    print(f"challenger {challenger}: {decision}")
    assert registry.live_version(CLASSIFIER) == live and registry.challenger(CLASSIFIER) is None
    assert decision["action"] in ("promoted", "held", "rolled_back")
    if decision["action"] != "rolled_back":
        rule = decision["evidence"]["rule"]
        assert rule["feedback_labels"] >= len(LABELLED)  # both versions scored the labelled feedback
        assert 0 <= rule["live_feedback_accuracy"] <= 1 and 0 <= rule["challenger_feedback_accuracy"] <= 1
        assert "agreement" in rule and "validation_ok" in rule
