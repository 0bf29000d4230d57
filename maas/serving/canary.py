"""Canary: a share of a registry classifier's live requests answered by a new version, judged
against the live one, rolled back or promoted by itself.

The problem: a version that beats the live one on validation, and even agrees with it in shadow,
has still never answered a client. The mechanism: ``maas rollout NAME VERSION --canary PERCENT``
stores a running canary (:class:`maas.storage.canary_store.CanaryStore`). For each classify
request of the served name (not a pinned ``name/vN``), :meth:`CanaryTraffic.answer` draws: a
``percent`` share is answered by the canary version, the rest by the live one; both are timed
and counted per ingress replica. A canary call that fails is answered by the live version
instead, so the client sees no error from the canary; a server-side failure is counted as the
canary's error, a 4xx (the request's own fault) is not counted. About once a second a replica
adds its tallies to the registry and judges the sum (:func:`judge`, thresholds in ``classifier.canary``):

- **rolled back** once the canary has ``min_requests`` requests and its error rate exceeds the
  live version's by more than ``max_error_rate_margin``, or (both with ``min_requests`` answered
  calls) its p95 latency exceeds the live version's times ``max_p95_latency_ratio``;
- **promoted** (made live) after ``promote_after_requests`` canary requests within those margins,
  if the promotion rule (:mod:`maas.serving.promotion`) passes; if the rule does not pass yet the
  canary keeps running, ``held`` (written once), and is judged again with every write.

Every decision goes to the registry with its evidence (counts, error rates, p95s, thresholds,
the rule's checks) and to ``/metrics``; labels are served names and registry versions only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from maas.config import CanaryConfig, PromotionConfig
from maas.serving.promotion import FeedbackSource, PromotionEvidence, no_feedback, promotion_verdict
from maas.serving.shadow import Event, version_of
from maas.serving.tally_writer import TallyWriter
from maas.storage.canary_store import ArmTally, CanaryRecord, CanaryTally, Decision, evidence_of
from maas.storage.registry import ModelRegistry
from maas.storage.shadow_stats import ShadowLog

logger = logging.getLogger(__name__)

PERSIST_EVERY_S = 1.0
"""How long a replica gathers canary tallies before adding them to the registry in one write."""


@dataclass(frozen=True)
class CanaryKey:
    """A served name with its live version and the canary answering a share of its requests."""

    model: str
    live_version: str
    canary_version: str

    def labels(self) -> dict[str, str]:
        return {"model": self.model, "live_version": self.live_version, "canary_version": self.canary_version}


def thresholds(config: CanaryConfig) -> dict[str, Any]:
    return {"max_error_rate_margin": config.max_error_rate_margin,
            "max_p95_latency_ratio": config.max_p95_latency_ratio,
            "min_requests": config.min_requests, "promote_after_requests": config.promote_after_requests}


def judge(config: CanaryConfig, rule: PromotionConfig, record: CanaryRecord,
          evidence: Callable[[CanaryRecord], PromotionEvidence]) -> Decision | None:
    """The decision the summed figures of a running canary call for, or None (keep running)."""
    figures = {**evidence_of(record), **thresholds(config)}
    problem = _out_of_margins(config, record)
    if problem:
        return Decision(action="rolled_back", version=record.version, live_version=record.live_version,
                        reason=problem, evidence=figures)
    if record.canary.requests < config.promote_after_requests:
        return None
    verdict = promotion_verdict(rule, replace(evidence(record), canary_passed=True))
    figures |= {"rule": verdict.checks}
    if verdict.allowed:
        return Decision(action="promoted", version=record.version, live_version=record.live_version,
                        reason="passed its canary and the promotion rule", evidence=figures)
    if record.held:
        return None
    return Decision(action="held", version=record.version, live_version=record.live_version,
                    reason="; ".join(verdict.reasons), evidence=figures)


def _out_of_margins(config: CanaryConfig, record: CanaryRecord) -> str | None:
    """Why the canary must be rolled back, or None."""
    canary, live = record.canary, record.live
    if canary.requests < config.min_requests:
        return None
    canary_rate, live_rate = canary.error_rate() or 0.0, live.error_rate() or 0.0
    if canary_rate > live_rate + config.max_error_rate_margin:
        return (f"error rate {canary_rate:.3f} exceeds the live version's {live_rate:.3f} by more than "
                f"{config.max_error_rate_margin}")
    enough = min(config.min_requests, config.latency_samples)
    if len(canary.latencies_s) < enough or len(live.latencies_s) < enough:
        return None
    canary_p95, live_p95 = canary.p95_s() or 0.0, live.p95_s() or 0.0
    if canary_p95 > live_p95 * config.max_p95_latency_ratio:
        return (f"p95 latency {canary_p95 * 1000:.1f} ms exceeds the live version's {live_p95 * 1000:.1f} ms "
                f"times {config.max_p95_latency_ratio}")
    return None


class PromotionEvidenceOf:
    """The promotion rule's evidence of a canary from the registry: both versions' stored
    metrics, the shadow record of the pair, and labelled feedback from ``feedback``."""

    def __init__(self, registry: ModelRegistry, name: str, feedback: FeedbackSource = no_feedback) -> None:
        self.registry = registry
        self.name = name
        self.feedback = feedback

    def __call__(self, record: CanaryRecord) -> PromotionEvidence:
        live = self.registry.get(self.name, record.live_version)
        challenger = self.registry.get(self.name, record.version)
        shadow = ShadowLog(self.registry).get(self.name, record.live_version, record.version)
        return PromotionEvidence(live_metrics=live.metrics, challenger_metrics=challenger.metrics, shadow=shadow,
                                 feedback=self.feedback(self.name, record.live_version, record.version))


class CanaryTraffic:
    """One ingress replica's canary routing and tallies.

    ``canary_of(name)``: the running canary of a served name (``version``, ``percent``), or None;
    ``call(model_id, texts)``: classify with a model id; ``record(events)``: metric events, not
    waiting; ``persist(key, tally)``: add a tally to the registry and judge it, returning the
    decision (blocking: run in a thread).
    """

    def __init__(self, config: CanaryConfig, canary_of: Callable[[str], Any],
                 call: Callable[[str, list[str]], Awaitable[Sequence[Any]]],
                 record: Callable[[list[Event]], None],
                 persist: Callable[[CanaryKey, CanaryTally], Decision | None],
                 rng: random.Random | None = None, persist_every_s: float = PERSIST_EVERY_S) -> None:
        self.config = config
        self.canary_of = canary_of
        self.call = call
        self.record = record
        self.rng = rng or random.Random()
        self.writer: TallyWriter[CanaryKey, CanaryTally] = TallyWriter(
            persist, lambda a, b: a.plus(b, config.latency_samples), "canary tallies", persist_every_s,
            self._report)

    async def answer(self, model: str, live_id: str, texts: list[str]) -> tuple[str, Sequence[Any]]:
        """``(model id that answered, results)``: the canary version for a drawn share of a
        served name's requests while it has a canary, else the live version."""
        canary = self.canary_of(model)
        canary_id = f"{model}/{canary.version}" if canary is not None else live_id
        if canary_id == live_id:
            return live_id, await self.call(live_id, texts)
        key = CanaryKey(model, version_of(live_id), canary.version)
        if self.rng.random() * 100 < canary.percent:
            answered = await self._try_canary(key, canary_id, texts)
            if answered is not None:
                return canary_id, answered
            return live_id, await self.call(live_id, texts)  # the canary failed: the live version answers
        return live_id, await self._timed(key, "live", live_id, texts)

    async def _try_canary(self, key: CanaryKey, canary_id: str, texts: list[str]) -> Sequence[Any] | None:
        try:
            return await self._timed(key, "canary", canary_id, texts)
        except Exception as exc:  # noqa: BLE001 - the live version answers instead
            # a 4xx is not counted against the canary (the request's own fault, or the canary
            # version gone from the registry); the live version's answer, or its 4xx, is the client's
            logger.warning("canary call to %s failed: %s", canary_id, type(exc).__name__)
            return None

    async def _timed(self, key: CanaryKey, arm: str, model_id: str, texts: list[str]) -> Sequence[Any]:
        labels = {**key.labels(), "answered_by": arm}
        start = time.perf_counter()
        try:
            results = await self.call(model_id, texts)
        except Exception as exc:
            if getattr(exc, "status_code", 500) >= 500:
                self._add(key, arm, ArmTally(requests=1, errors=1),
                          [("maas_canary_requests", labels, 1), ("maas_canary_errors", labels, 1)])
            raise
        seconds = time.perf_counter() - start
        self._add(key, arm, ArmTally(requests=1, latencies_s=[seconds]),
                  [("maas_canary_requests", labels, 1), ("maas_canary_latency_seconds", labels, seconds)])
        return results

    async def drain(self) -> None:
        """Write what was gathered (tests, shutdown)."""
        await self.writer.drain()

    def _add(self, key: CanaryKey, arm: str, tally: ArmTally, events: list[Event]) -> None:
        self.record(events)
        self.writer.add(key, CanaryTally(**{arm: tally}))

    def _report(self, key: CanaryKey, decision: Decision | None) -> None:
        """Log and count a decision the registry write took."""
        if decision is not None:
            logger.info("canary %s/%s %s: %s", key.model, key.canary_version, decision.action, decision.reason)
            self.record([("maas_canary_decisions", {**key.labels(), "decision": decision.action}, 1)])
