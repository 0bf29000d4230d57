"""maas/serving/promotion.py: better on validation, agrees (shadow) or beats on feedback, passed
its canary; every check's figures in the verdict."""

from __future__ import annotations

import pytest

from maas.config import PromotionConfig
from maas.serving.promotion import FeedbackAccuracy, PromotionEvidence, promotion_verdict
from maas.storage.shadow_stats import ShadowRecord

RULE = PromotionConfig(min_validation_gain=0.0, min_agreement=0.9, min_shadow_texts=50,
                       min_feedback_gain=0.02, min_feedback_labels=20)


def shadow(texts: int, agreements: int) -> ShadowRecord:
    return ShadowRecord(live_version="v1", challenger_version="v2", requests=texts, texts=texts,
                        agreements=agreements)


def evidence(live: float = 0.80, challenger: float = 0.83, shadowed: ShadowRecord | None = None,
             feedback: FeedbackAccuracy | None = None, canary: bool = True) -> PromotionEvidence:
    return PromotionEvidence(live_metrics={"validation_macro_f1": live},
                             challenger_metrics={"validation_macro_f1": challenger},
                             shadow=shadow(100, 95) if shadowed is None else shadowed,
                             feedback=feedback, canary_passed=canary)


def test_better_agreeing_and_canaried_goes_live() -> None:
    verdict = promotion_verdict(RULE, evidence())
    assert verdict.allowed and verdict.reasons == []
    assert verdict.checks["agreement"] == 0.95 and verdict.checks["challenger_validation"] == 0.83


@pytest.mark.parametrize(("live", "challenger"), [(0.83, 0.83), (0.85, 0.83)])
def test_not_better_on_validation_is_refused(live: float, challenger: float) -> None:
    verdict = promotion_verdict(RULE, evidence(live=live, challenger=challenger))
    assert not verdict.allowed and verdict.reasons == ["not better on validation (validation_macro_f1)"]


def test_a_missing_metric_is_not_better() -> None:
    missing = PromotionEvidence(live_metrics={}, challenger_metrics={"validation_macro_f1": 0.9},
                                shadow=shadow(100, 100), canary_passed=True)
    assert not promotion_verdict(RULE, missing).checks["validation_ok"]


@pytest.mark.parametrize("shadowed", [shadow(100, 80), shadow(10, 10)])  # disagrees; too few texts
def test_no_agreement_and_no_feedback_is_refused(shadowed: ShadowRecord) -> None:
    verdict = promotion_verdict(RULE, evidence(shadowed=shadowed))
    assert not verdict.allowed and verdict.reasons == [
        "neither agrees with the live version (shadow) nor beats it on feedback"]


def test_beating_the_live_version_on_feedback_replaces_agreement() -> None:
    feedback = FeedbackAccuracy(labels=40, live_accuracy=0.60, challenger_accuracy=0.75)
    verdict = promotion_verdict(RULE, evidence(shadowed=shadow(100, 50), feedback=feedback))
    assert verdict.allowed and verdict.checks["beats_on_feedback"] and not verdict.checks["agrees"]


@pytest.mark.parametrize("feedback", [FeedbackAccuracy(labels=10, live_accuracy=0.5, challenger_accuracy=0.9),
                                      FeedbackAccuracy(labels=40, live_accuracy=0.70, challenger_accuracy=0.71)])
def test_too_little_feedback_or_too_small_a_gain_does_not_count(feedback: FeedbackAccuracy) -> None:
    assert not promotion_verdict(RULE, evidence(shadowed=shadow(100, 50), feedback=feedback)).allowed


def test_without_a_passed_canary_nothing_goes_live() -> None:
    verdict = promotion_verdict(RULE, evidence(canary=False))
    assert not verdict.allowed and verdict.reasons == ["has not passed its canary"]
