"""``GET /v1/models/{id}``: one model's card, and a card's shadow statistics (plain Python)."""

from __future__ import annotations

from collections.abc import Iterable

from maas.endpoints.service.protocol import (
    CanaryArm,
    CanaryDecisionView,
    ModelCanary,
    ModelCard,
    RunningCanary,
    ShadowSummary,
)
from maas.protocol.errors import ModelNotFoundError
from maas.storage.canary_store import ArmTally, CanaryState
from maas.storage.shadow_stats import ShadowRecord

CARD_DECISIONS = 5
"""Decisions a card shows (``canary.json`` keeps more)."""


def model_card(cards: list[ModelCard], model_id: str, allowed: Iterable[str]) -> ModelCard:
    """The card of ``model_id``; unknown, or not allowed to the request's API key, is a 404
    (as ``/v1/models`` lists only what the key allows)."""
    allowed = set(allowed)
    for card in cards:
        if card.id == model_id and card.id in allowed:
            return card
    raise ModelNotFoundError(f"The model '{model_id}' does not exist.", param="model")


def shadow_summary(record: ShadowRecord) -> ShadowSummary:
    """The card's view of a stored shadow record: means and the agreement share."""
    live_conf, challenger_conf = record.mean_confidence()
    live_s, challenger_s = record.mean_latency_s()
    return ShadowSummary(
        live_version=record.live_version, requests=record.requests, errors=record.errors,
        dropped=record.dropped, texts=record.texts, agreement=_rounded(record.agreement(), 4),
        live_confidence=_rounded(live_conf, 4), challenger_confidence=_rounded(challenger_conf, 4),
        live_latency_ms=_rounded(live_s and live_s * 1000, 2),
        challenger_latency_ms=_rounded(challenger_s and challenger_s * 1000, 2),
        updated_at=record.updated_at)


def canary_summary(state: CanaryState) -> ModelCanary | None:
    """The card's view of a model's canary file; None if it never had a canary."""
    if state.active is None and not state.decisions:
        return None
    running = None
    if (record := state.active) is not None:
        running = RunningCanary(version=record.version, live_version=record.live_version, percent=record.percent,
                                held=record.held, live=_arm(record.live), canary=_arm(record.canary),
                                started_at=record.started_at, updated_at=record.updated_at)
    decisions = [CanaryDecisionView.model_validate(d.model_dump()) for d in state.decisions[-CARD_DECISIONS:]]
    return ModelCanary(running=running, decisions=decisions)


def _arm(tally: ArmTally) -> CanaryArm:
    p95 = tally.p95_s()
    return CanaryArm(requests=tally.requests, errors=tally.errors, error_rate=_rounded(tally.error_rate(), 4),
                     p95_ms=_rounded(p95 and p95 * 1000, 2))


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
