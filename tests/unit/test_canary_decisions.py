"""maas/serving/canary.py and maas/storage/canary_store.py: the split, a failing canary answered by
the live version, rollback on errors and on slowness, promotion through the rule, every decision
stored with its evidence. Tallies are injected; the calls are fakes that inject faults."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from deployments.ingress_classifiers import ClassifierMethods
from maas.config import AppConfig, CanaryConfig, PromotionConfig
from maas.endpoints.encoding.protocol import ClassifyRequest
from maas.engines.encoders import Classification
from maas.protocol.errors import InvalidRequestError
from maas.serving.canary import CanaryKey, CanaryTraffic, judge
from maas.serving.cold_start import ColdStarts, ReplicaCounts
from maas.serving.promotion import PromotionEvidence
from maas.storage.canary_store import ArmTally, CanaryRecord, CanaryStore, CanaryTally
from maas.storage.registry import ModelRegistry, RegistryError
from maas.storage.shadow_stats import ShadowLog, ShadowRecord, ShadowTally

LABELS = ["negative", "positive"]
CANARY = CanaryConfig(max_error_rate_margin=0.05, max_p95_latency_ratio=2.0, min_requests=10,
                      promote_after_requests=50, latency_samples=100)
RULE = PromotionConfig(min_shadow_texts=10)


def arm(requests: int, errors: int = 0, seconds: float = 0.05) -> ArmTally:
    return ArmTally(requests=requests, errors=errors, latencies_s=[seconds] * (requests - errors))


def record(live: ArmTally, canary: ArmTally, held: bool = False) -> CanaryRecord:
    return CanaryRecord(version="v2", live_version="v1", percent=50, live=live, canary=canary, held=held)


def evidence(better: bool = True, agreement: int = 10) -> Any:
    def of(_: CanaryRecord) -> PromotionEvidence:
        return PromotionEvidence(live_metrics={"validation_macro_f1": 0.80},
                                 challenger_metrics={"validation_macro_f1": 0.85 if better else 0.80},
                                 shadow=ShadowRecord(live_version="v1", challenger_version="v2", requests=10,
                                                     texts=10, agreements=agreement))
    return of


# ----------------------------------------------------------------------------- judging


def test_nothing_is_decided_before_min_requests() -> None:
    assert judge(CANARY, RULE, record(arm(100), arm(9, errors=9)), evidence()) is None


def test_rollback_when_the_error_rate_exceeds_the_live_ones_by_the_margin() -> None:
    decision = judge(CANARY, RULE, record(arm(100, errors=1), arm(20, errors=2)), evidence())
    assert decision is not None and decision.action == "rolled_back"
    assert decision.reason == "error rate 0.100 exceeds the live version's 0.010 by more than 0.05"
    assert decision.evidence["canary_error_rate"] == 0.1 and decision.evidence["live_errors"] == 1
    assert decision.evidence["max_error_rate_margin"] == 0.05 and decision.evidence["min_requests"] == 10


def test_errors_within_the_margin_keep_it_running() -> None:
    assert judge(CANARY, RULE, record(arm(100, errors=1), arm(20, errors=1)), evidence()) is None


def test_rollback_when_the_p95_latency_exceeds_the_live_ones_times_the_ratio() -> None:
    decision = judge(CANARY, RULE, record(arm(40, seconds=0.05), arm(20, seconds=0.15)), evidence())
    assert decision is not None and decision.action == "rolled_back"
    assert decision.evidence["canary_p95_ms"] == 150.0 and decision.evidence["live_p95_ms"] == 50.0
    assert "p95 latency 150.0 ms exceeds the live version's 50.0 ms times 2.0" == decision.reason


def test_a_somewhat_slower_canary_is_within_the_ratio() -> None:
    assert judge(CANARY, RULE, record(arm(40, seconds=0.05), arm(20, seconds=0.09)), evidence()) is None


def test_promoted_after_enough_requests_within_margins_when_the_rule_passes() -> None:
    decision = judge(CANARY, RULE, record(arm(50), arm(50)), evidence())
    assert decision is not None and decision.action == "promoted"
    assert decision.evidence["rule"]["canary_passed"] and decision.evidence["canary_requests"] == 50


def test_held_once_when_the_rule_does_not_pass() -> None:
    decision = judge(CANARY, RULE, record(arm(50), arm(50)), evidence(better=False))
    assert decision is not None and decision.action == "held"
    assert decision.reason == "not better on validation (validation_macro_f1)"
    assert judge(CANARY, RULE, record(arm(60), arm(60), held=True), evidence(better=False)) is None
    # a held canary is still rolled back when it goes bad
    bad = judge(CANARY, RULE, record(arm(60), arm(80, errors=20), held=True), evidence(better=False))
    assert bad is not None and bad.action == "rolled_back"


# ----------------------------------------------------------------------------- the registry


def registry_with(root: Path, versions: int = 2, labels: list[list[str]] | None = None) -> ModelRegistry:
    registry = ModelRegistry(root)
    for i in range(versions):
        with registry.new_version("sentiment", {}) as (_, folder):
            metrics = {"validation_macro_f1": 0.80 + 0.05 * i}
            record_ = {"labels": (labels or [LABELS] * versions)[i], "metrics": metrics}
            (folder / "maas_training.json").write_text(json.dumps(record_))
    registry.set_live("sentiment", "v1")
    return registry


def test_start_refuses_the_live_version_and_other_labels(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, labels=[LABELS, ["a", "b"]])
    store = CanaryStore(registry)
    with pytest.raises(RegistryError, match="is live"):
        store.start("sentiment", "v1", 50)
    with pytest.raises(RegistryError, match="allow-label-change"):
        store.start("sentiment", "v2", 50)
    with pytest.raises(RegistryError, match="percent"):
        store.start("sentiment", "v2", 150, allow_label_change=True)
    assert store.start("sentiment", "v2", 50, allow_label_change=True).action == "started"


def test_tallies_add_up_bounded_and_a_promotion_makes_the_version_live(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    store = CanaryStore(registry)
    store.start("sentiment", "v2", 25)
    for _ in range(3):
        assert store.add("sentiment", "v2", CanaryTally(live=arm(4), canary=arm(4)), 10,
                         lambda r: None) is None
    running = store.active("sentiment")
    assert running is not None and (running.live.requests, running.canary.requests) == (12, 12)
    assert len(running.canary.latencies_s) == 10  # bounded
    assert store.add("sentiment", "v1", CanaryTally(), 10, lambda r: None) is None  # not the running canary

    decision = store.add("sentiment", "v2", CanaryTally(canary=arm(40)), 10,
                         lambda r: judge(CANARY, RULE, r, evidence()))
    assert decision is not None and decision.action == "promoted"
    assert registry.live_version("sentiment") == "v2" and store.active("sentiment") is None
    assert [d.action for d in store.read("sentiment").decisions] == ["started", "promoted"]


def test_a_rolled_back_version_is_no_challenger_any_more(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    store = CanaryStore(registry)
    store.start("sentiment", "v2", 50)
    assert registry.challenger("sentiment") == "v2"
    decision = store.add("sentiment", "v2", CanaryTally(live=arm(20), canary=arm(20, errors=20)), 10,
                         lambda r: judge(CANARY, RULE, r, evidence()))
    assert decision is not None and decision.action == "rolled_back"
    assert registry.live_version("sentiment") == "v1" and registry.challenger("sentiment") is None
    state = store.read("sentiment")
    assert state.active is None and state.rolled_back == ["v2"]
    assert state.decisions[-1].evidence["canary_errors"] == 20


def test_stop_and_replace_are_recorded(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, versions=3)
    store = CanaryStore(registry)
    assert store.stop("sentiment") is None
    store.start("sentiment", "v2", 10)
    store.start("sentiment", "v3", 10)
    assert store.stop("sentiment") is not None
    actions = [(d.action, d.version) for d in store.read("sentiment").decisions]
    assert actions == [("started", "v2"), ("cancelled", "v2"), ("started", "v3"), ("cancelled", "v3")]


# ----------------------------------------------------------------------------- routing


def result(label: str = "positive") -> Classification:
    return Classification(label=label, probs=[0.1, 0.9], labels=LABELS, num_tokens=3)


class Calls:
    """Classify calls: the live version answers; the canary answers or raises ``error`` (a fault)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[str] = []

    async def __call__(self, model_id: str, texts: list[str]) -> list[Classification]:
        self.calls.append(model_id)
        if model_id == "sentiment/v2" and self.error is not None:
            raise self.error
        return [result() for _ in texts]


def routing(calls: Calls, saved: list[tuple[CanaryKey, CanaryTally]], percent: float = 50) -> CanaryTraffic:
    running = CanaryRecord(version="v2", live_version="v1", percent=percent)
    return CanaryTraffic(CANARY, lambda name: running if name == "sentiment" else None, calls,
                         lambda events: None, lambda key, tally: saved.append((key, tally)),
                         rng=random.Random(0), persist_every_s=0.01)


@pytest.mark.parametrize("percent", [0.5, 10, 50, 100])
def test_the_canary_answers_its_share(percent: float) -> None:
    async def scenario() -> tuple[int, list[tuple[CanaryKey, CanaryTally]]]:
        saved: list[tuple[CanaryKey, CanaryTally]] = []
        traffic = routing(Calls(), saved, percent)
        answered = [(await traffic.answer("sentiment", "sentiment/v1", ["x"]))[0] for _ in range(2000)]
        await traffic.drain()
        return answered.count("sentiment/v2"), saved

    by_canary, saved = asyncio.run(scenario())
    assert abs(by_canary / 2000 - percent / 100) < 0.03
    assert sum(t.canary.requests for _, t in saved) == by_canary
    assert sum(t.live.requests for _, t in saved) == 2000 - by_canary


def test_pinned_versions_are_not_routed() -> None:
    async def scenario() -> str:
        return (await routing(Calls(), [], 100).answer("sentiment/v1", "sentiment/v1", ["x"]))[0]

    assert asyncio.run(scenario()) == "sentiment/v1"


def test_a_failing_canary_is_answered_by_the_live_version(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[list[str], list[tuple[CanaryKey, CanaryTally]]]:
        saved: list[tuple[CanaryKey, CanaryTally]] = []
        traffic = routing(Calls(RuntimeError("engine died: client text")), saved, 100)
        answered = [(await traffic.answer("sentiment", "sentiment/v1", ["x"]))[0] for _ in range(3)]
        await traffic.drain()
        return answered, saved

    with caplog.at_level(logging.WARNING, logger="maas.serving.canary"):
        answered, saved = asyncio.run(scenario())
    assert answered == ["sentiment/v1"] * 3
    (key, tally), = saved
    assert key == CanaryKey("sentiment", "v1", "v2") and (tally.canary.requests, tally.canary.errors) == (3, 3)
    assert tally.live.requests == 0  # the retries are not the live version's figures
    assert "RuntimeError" in caplog.text and "client text" not in caplog.text


def test_a_4xx_of_the_canary_is_answered_by_the_live_version_not_counted() -> None:
    async def scenario() -> tuple[str, list[tuple[CanaryKey, CanaryTally]]]:
        saved: list[tuple[CanaryKey, CanaryTally]] = []
        traffic = routing(Calls(InvalidRequestError("too long")), saved, 100)
        answered, _ = await traffic.answer("sentiment", "sentiment/v1", ["x"])
        await traffic.drain()
        return answered, saved

    assert asyncio.run(scenario()) == ("sentiment/v1", [])


# ----------------------------------------------------------------------------- the ingress


class Ingress(ClassifierMethods):
    """The ingress's classification over a real registry; the canary version's calls fail."""

    def __init__(self, registry_dir: Path) -> None:
        self.classifier = object()  # type: ignore[assignment]
        self._setup_classifiers(AppConfig.model_validate({
            "classifier": {"models": [{"name": "sentiment", "path": "registry:sentiment"}],
                           "shadow": {"fraction": 0.0},
                           "canary": CANARY.model_dump(), "promotion": RULE.model_dump()},
            "registry_dir": str(registry_dir)}))
        self.events: list[Any] = []
        self.recorder = type("R", (), {"record_many": lambda _, events: self.events.extend(events)})()
        self.canary.persist_every_s = 0.01
        self.calls = Calls(RuntimeError("engine died"))
        self.cold = ColdStarts({}, ReplicaCounts(dict, 2.0))  # no scale-to-zero deployment

    async def _call_classifier(self, model_id: str, texts: list[str]) -> Any:
        return await self.calls(model_id, texts)


def test_the_ingress_rolls_a_failing_canary_back_and_clients_see_no_error(tmp_path: Path) -> None:
    registry = registry_with(tmp_path / "registry")
    CanaryStore(registry).start("sentiment", "v2", 50)

    async def scenario() -> tuple[Ingress, list[str]]:
        ingress = Ingress(tmp_path / "registry")
        answered = []
        for _ in range(60):
            answered.append((await ingress.classify(ClassifyRequest(model="sentiment", input="x"))).model)
            await asyncio.sleep(0.001)
        await ingress.canary.drain()
        return ingress, answered

    ingress, answered = asyncio.run(scenario())
    assert set(answered) == {"sentiment/v1"}
    card = ingress._classifier_card("sentiment", 64)
    assert card.canary is not None and card.canary.running is None
    assert [d.action for d in card.canary.decisions] == ["started", "rolled_back"]
    assert card.canary.decisions[-1].evidence["canary_error_rate"] == 1.0
    assert ("maas_canary_decisions", {"model": "sentiment", "live_version": "v1", "canary_version": "v2",
                                      "decision": "rolled_back"}, 1) in ingress.events


def test_the_ingress_promotes_a_good_canary(tmp_path: Path) -> None:
    registry = registry_with(tmp_path / "registry")
    ShadowLog(registry).add("sentiment", "v1", "v2", ShadowTally(requests=20, texts=20, agreements=20))
    CanaryStore(registry).start("sentiment", "v2", 100)

    async def scenario() -> list[str]:
        ingress = Ingress(tmp_path / "registry")
        ingress.calls.error = None
        answered = []
        for _ in range(80):
            answered.append((await ingress.classify(ClassifyRequest(model="sentiment", input="x"))).model)
            await asyncio.sleep(0.001)
        await ingress.canary.drain()
        return answered

    answered = asyncio.run(scenario())
    assert registry.live_version("sentiment") == "v2" and "sentiment/v2" in answered
    decision = CanaryStore(registry).read("sentiment").decisions[-1]
    assert decision.action == "promoted" and decision.evidence["rule"]["agreement"] == 1.0


# ----------------------------------------------------------------------------- the CLI


def test_rollout_canary_and_models_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from maas.cli import main as maas_main

    registry = registry_with(tmp_path)
    args = ["--registry-dir", str(tmp_path)]
    assert maas_main(["rollout", "sentiment", "v2", "--canary", "25", *args]) == 0
    assert "canary of sentiment/v2 started against live v1: 25%" in capsys.readouterr().out
    CanaryStore(registry).add("sentiment", "v2", CanaryTally(live=arm(3), canary=arm(2, errors=1)), 10,
                              lambda r: None)
    assert maas_main(["models", "list", *args]) == 0
    listing = capsys.readouterr().out
    assert ("  canary of sentiment: v2 at 25% against live v1: canary 2 requests (1 errors, p95 50.0 ms), "
            "live 3 requests (0 errors, p95 50.0 ms)") in listing
    assert "started v2 (live v1): 25% of requests" in listing
    assert maas_main(["rollout", "sentiment", "v1", "--canary", "10", *args]) == 2  # the live version
    assert "is live" in capsys.readouterr().err
    assert maas_main(["rollout", "sentiment", "v2", "--canary", "0", *args]) == 0
    assert "canary of sentiment/v2 stopped" in capsys.readouterr().out
    assert CanaryStore(registry).active("sentiment") is None and registry.live_version("sentiment") == "v1"
    # a plain rollout is the operator's decision: it ends a running canary
    assert maas_main(["rollout", "sentiment", "v2", "--canary", "25", *args]) == 0
    assert maas_main(["rollout", "sentiment", "v2", *args]) == 0
    assert "the running canary of 'sentiment' is cancelled" in capsys.readouterr().out
    last = CanaryStore(registry).read("sentiment").decisions[-1]
    assert (last.action, last.reason) == ("cancelled", "ended by `maas rollout` of v2")
    assert registry.live_version("sentiment") == "v2"
