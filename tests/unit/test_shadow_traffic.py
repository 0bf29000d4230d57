"""maas/serving/shadow.py and the ingress's classify: a sampled share of live classify requests goes
to the challenger after the answer, bounded, its errors counted, its agreement tallied."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from deployments.ingress_classifiers import ClassifierMethods
from maas.config import AppConfig, ShadowConfig
from maas.endpoints.encoding.protocol import ClassifyRequest
from maas.engines.encoders import Classification
from maas.serving.cold_start import ColdStarts, ReplicaCounts
from maas.serving.shadow import ShadowPair, ShadowTraffic, compare
from maas.storage.registry import ModelRegistry
from maas.storage.shadow_stats import ShadowLog, ShadowTally

LABELS = ["negative", "positive"]
PAIR = ShadowPair("sentiment", "v1", "v2")


def result(label: str, top: float = 0.9) -> Classification:
    probs = [top, 1 - top] if label == "negative" else [1 - top, top]
    return Classification(label=label, probs=probs, labels=LABELS, num_tokens=3)


class Challenger:
    """A fake challenger (fakes inject slowness and faults only): answers ``labels`` once
    ``gate`` is open, or raises ``error``."""

    def __init__(self, labels: list[str] | None = None, error: Exception | None = None) -> None:
        self.labels = labels
        self.error = error
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, model_id: str, texts: list[str]) -> list[Classification]:
        self.calls.append((model_id, texts))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [result(label, 0.8) for label in (self.labels or ["positive"] * len(texts))]


class Recorded:
    """What the shadow traffic hands to the metrics and to the registry."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, str], float]] = []
        self.saved: list[tuple[ShadowPair, ShadowTally]] = []

    def record_many(self, events: list[tuple[str, dict[str, str], float]]) -> None:
        self.events.extend(events)

    def total(self, metric: str) -> float:
        return sum(value for name, _, value in self.events if name == metric)


def traffic(challenger: Challenger, recorded: Recorded, fraction: float = 1.0, max_in_flight: int = 4,
            challenger_id: str | None = "sentiment/v2", seed: int = 0) -> ShadowTraffic:
    return ShadowTraffic(ShadowConfig(fraction=fraction, max_in_flight=max_in_flight),
                         lambda name: challenger_id if name == "sentiment" else None, challenger,
                         recorded.events.extend, lambda pair, tally: recorded.saved.append((pair, tally)),
                         rng=random.Random(seed), persist_every_s=0.01)


def saved_total(recorded: Recorded) -> ShadowTally:
    total = ShadowTally()
    for _, tally in recorded.saved:
        total = total.plus(tally)
    return total


def answer(shadow: ShadowTraffic, model: str = "sentiment", live_id: str = "sentiment/v1",
           labels: tuple[str, ...] = ("positive",)) -> bool:
    return shadow.after_answer(model, live_id, [f"text {i}" for i in range(len(labels))],
                               [result(label) for label in labels], 0.01)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_the_configured_share_of_requests_is_shadowed(fraction: float) -> None:
    async def scenario() -> int:
        challenger, recorded = Challenger(), Recorded()
        shadow = traffic(challenger, recorded, fraction=fraction)
        started = 0
        for _ in range(2000):
            started += answer(shadow)
            await asyncio.sleep(0)  # the shadow call runs: none dropped
        await shadow.drain()
        assert len(challenger.calls) == started == saved_total(recorded).requests
        return started

    started = asyncio.run(scenario())
    assert abs(started / 2000 - fraction) < 0.03


def test_zero_fraction_never_looks_for_a_challenger() -> None:
    looked: list[str] = []
    shadow = ShadowTraffic(ShadowConfig(fraction=0.0), lambda name: looked.append(name), Challenger(),
                           lambda events: None, lambda pair, tally: None)
    assert not shadow.after_answer("sentiment", "sentiment/v1", ["x"], [result("positive")], 0.01)
    assert looked == []


def test_no_challenger_pinned_versions_and_the_live_version_itself_are_not_shadowed() -> None:
    async def scenario() -> None:
        recorded = Recorded()
        assert not answer(traffic(Challenger(), recorded, challenger_id=None))
        assert not answer(traffic(Challenger(), recorded), model="sentiment/v1")  # pinned: no challenger
        # a rollout between the answer and the lookup: the challenger is the live version now
        assert not answer(traffic(Challenger(), recorded), live_id="sentiment/v2")
        assert recorded.events == [] and recorded.saved == []

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- the bound


def test_shadow_calls_over_the_bound_are_dropped_not_queued() -> None:
    async def scenario() -> None:
        challenger, recorded = Challenger(), Recorded()
        challenger.gate.clear()  # a slow challenger: every call waits
        shadow = traffic(challenger, recorded, max_in_flight=2)
        started = [answer(shadow) for _ in range(5)]
        await asyncio.sleep(0)
        assert started == [True, True, False, False, False]
        assert shadow.in_flight == 2 and len(challenger.calls) == 2
        assert recorded.total("maas_shadow_dropped") == 3
        challenger.gate.set()
        await shadow.drain()
        assert shadow.in_flight == 0 and len(challenger.calls) == 2  # the dropped ones never ran
        total = saved_total(recorded)
        assert (total.requests, total.dropped, total.errors) == (2, 3, 0)
        assert answer(shadow)  # room again
        await shadow.drain()

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- agreement


def test_agreement_confidence_and_latency_are_tallied() -> None:
    live = [result("positive", 0.9), result("negative", 0.7), result("positive", 0.6)]
    challenger = [result("positive", 0.8), result("positive", 0.8), result("positive", 0.8)]
    tally, events = compare(PAIR, live, challenger, live_s=0.02, challenger_s=0.05)
    assert (tally.requests, tally.texts, tally.agreements) == (1, 3, 2)
    assert tally.live_confidence_sum == pytest.approx(2.2)
    assert tally.challenger_confidence_sum == pytest.approx(2.4)
    assert (tally.live_latency_s_sum, tally.challenger_latency_s_sum) == (0.02, 0.05)
    labels = {"model": "sentiment", "live_version": "v1", "challenger_version": "v2"}
    assert ("maas_shadow_agreements", labels, 2) in events and ("maas_shadow_texts", labels, 3) in events
    confidences = [e for e in events if e[0] == "maas_shadow_confidence"]
    assert sorted(e[1]["answered_by"] for e in confidences) == ["challenger"] * 3 + ["live"] * 3
    assert all(set(e[1]) <= {*labels, "answered_by"} for e in events)  # names and versions only


def test_agreement_over_requests_in_the_registry(tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry) -> None:
        log = ShadowLog(registry)
        shadow = ShadowTraffic(ShadowConfig(fraction=1.0), lambda name: "sentiment/v2",
                               Challenger(["positive", "positive"]), lambda events: None,
                               lambda pair, tally: log.add("sentiment", pair.live_version,
                                                           pair.challenger_version, tally),
                               persist_every_s=0.01)
        for labels in [("positive", "negative"), ("positive", "positive")]:
            answer(shadow, labels=labels)
        await shadow.drain()

    registry = ModelRegistry(tmp_path / "registry")
    asyncio.run(scenario(registry))
    record = ShadowLog(registry).get("sentiment", "v1", "v2")
    assert record is not None and (record.requests, record.texts, record.agreements) == (2, 4, 3)
    assert record.agreement() == 0.75 and record.mean_confidence() == pytest.approx((0.9, 0.8))


# ----------------------------------------------------------------------------- faults


def test_a_failing_challenger_is_counted_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Recorded:
        recorded = Recorded()
        shadow = traffic(Challenger(error=RuntimeError("engine died: secret client text")), recorded)
        assert answer(shadow)  # returns normally: the client's answer is not touched
        await shadow.drain()
        return recorded

    with caplog.at_level(logging.WARNING, logger="maas.serving.shadow"):
        recorded = asyncio.run(scenario())
    total = saved_total(recorded)
    assert (total.requests, total.errors, total.texts) == (1, 1, 0)
    assert recorded.total("maas_shadow_errors") == 1
    assert "RuntimeError" in caplog.text and "secret client text" not in caplog.text


def test_a_failed_registry_write_is_kept_for_the_next_one() -> None:
    async def scenario() -> list[ShadowTally]:
        writes: list[ShadowTally] = []

        def persist(pair: ShadowPair, tally: ShadowTally) -> None:
            if not writes:
                writes.append(ShadowTally())
                raise OSError("disk full")
            writes.append(tally)

        shadow = ShadowTraffic(ShadowConfig(fraction=1.0), lambda name: "sentiment/v2", Challenger(),
                               lambda events: None, persist, persist_every_s=0.01)
        answer(shadow)
        await shadow.drain()
        answer(shadow)
        await shadow.drain()
        return writes

    writes = asyncio.run(scenario())
    assert sum(w.requests for w in writes[1:]) == 2  # the failed write's tally was written later


# ----------------------------------------------------------------------------- the ingress


class Ingress(ClassifierMethods):
    """The ingress's classification over a real registry; the deployment calls are fakes that
    answer the live version at once and hold the challenger until its gate opens."""

    def __init__(self, registry_dir: Path, fraction: float) -> None:
        self.classifier = object()  # type: ignore[assignment]
        self.challenger = Challenger()
        self.challenger.gate.clear()
        self._setup_classifiers(AppConfig.model_validate({
            "classifier": {"models": [{"name": "sentiment", "path": "registry:sentiment"}],
                           "shadow": {"fraction": fraction, "max_in_flight": 4}},
            "registry_dir": str(registry_dir)}))
        self.recorded = Recorded()
        self.recorder = self.recorded  # type: ignore[assignment]
        self.cold = ColdStarts({}, ReplicaCounts(dict, 2.0))  # no scale-to-zero deployment
        self.shadow.persist_every_s = 0.01

    async def _call_classifier(self, model_id: str, texts: list[str]) -> Any:
        if model_id == self.classifiers.resolve("sentiment"):  # the live version
            return [result("positive") for _ in texts]
        return await self.challenger(model_id, texts)


def two_versions(root: Path) -> ModelRegistry:
    registry = ModelRegistry(root)
    for _ in range(2):
        with registry.new_version("sentiment", {}) as (_, folder):
            (folder / "maas_training.json").write_text(json.dumps({"labels": LABELS}))
    registry.set_live("sentiment", "v1")
    return registry


def test_the_client_answer_does_not_wait_for_the_challenger(tmp_path: Path) -> None:
    two_versions(tmp_path / "registry")

    async def scenario() -> Ingress:
        ingress = Ingress(tmp_path / "registry", fraction=1.0)
        response = await ingress.classify(ClassifyRequest(model="sentiment", input=["great", "fine"]))
        # answered by the live version while the challenger's call is still held
        assert response.model == "sentiment/v1" and [d.label for d in response.data] == ["positive"] * 2
        assert ingress.shadow.in_flight == 1 and not ingress.challenger.gate.is_set()
        card = ingress._classifier_card("sentiment", 64)
        assert card.challenger is not None and card.challenger.version == "v2" and card.challenger.shadow is None
        ingress.challenger.gate.set()
        await ingress.shadow.drain()
        return ingress

    ingress = asyncio.run(scenario())
    assert ingress.challenger.calls == [("sentiment/v2", ["great", "fine"])]
    shadow = ingress._classifier_card("sentiment", 64).challenger.shadow  # type: ignore[union-attr]
    assert shadow is not None and (shadow.live_version, shadow.requests, shadow.texts) == ("v1", 1, 2)
    assert shadow.agreement == 1.0 and shadow.errors == shadow.dropped == 0
    assert ingress.recorded.total("maas_shadow_requests") == 1


def test_no_challenger_no_card_entry_and_no_shadow(tmp_path: Path) -> None:
    registry = two_versions(tmp_path / "registry")
    registry.set_live("sentiment", "v2")

    async def scenario() -> Ingress:
        ingress = Ingress(tmp_path / "registry", fraction=1.0)
        ingress.challenger.gate.set()
        await ingress.classify(ClassifyRequest(model="sentiment", input="great"))
        return ingress

    ingress = asyncio.run(scenario())
    assert ingress.shadow.in_flight == 0 and ingress.challenger.calls == []
    assert ingress._classifier_card("sentiment", 64).challenger is None
