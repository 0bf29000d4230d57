"""The promotion rule: whether a challenger version may go live by itself.

A challenger goes live only when all three hold (thresholds in ``classifier.promotion``,
:class:`maas.config.PromotionConfig`):

1. **better on validation**: its stored validation metric (``ModelVersion.metrics``, e.g.
   ``validation_macro_f1``) exceeds the live version's by more than ``min_validation_gain``;
2. **agrees with the live version, or beats it on labelled feedback**: shadow traffic's agreement
   (:class:`maas.storage.shadow_stats.ShadowRecord`) is at least ``min_agreement`` over at least
   ``min_shadow_texts`` texts, or, over at least ``min_feedback_labels`` labelled feedback
   examples, its accuracy exceeds the live version's by more than ``min_feedback_gain``;
3. **passed its canary** (:mod:`maas.serving.canary` decides that, within its margins).

Where feedback comes from is pluggable: a :data:`FeedbackSource` returns a
:class:`FeedbackAccuracy` for ``(name, live version, challenger version)`` or None
(:func:`no_feedback`, the default, until a feedback store provides one). The rule is plain
Python: :func:`promotion_verdict` takes the evidence and returns the verdict with every check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from maas.config import PromotionConfig
from maas.storage.shadow_stats import ShadowRecord


@dataclass(frozen=True)
class FeedbackAccuracy:
    """Both versions' accuracy on the same labelled feedback examples."""

    labels: int
    live_accuracy: float
    challenger_accuracy: float


FeedbackSource = Callable[[str, str, str], FeedbackAccuracy | None]
"""``(registry name, live version, challenger version)`` -> the versions' feedback accuracy, or None."""


def no_feedback(name: str, live: str, challenger: str) -> FeedbackAccuracy | None:
    """The feedback source while none is configured: no labelled feedback."""
    return None


@dataclass(frozen=True)
class PromotionEvidence:
    """What the rule looks at."""

    live_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    shadow: ShadowRecord | None = None
    feedback: FeedbackAccuracy | None = None
    canary_passed: bool = False


@dataclass(frozen=True)
class PromotionVerdict:
    """The rule's answer: ``allowed``, the checks that failed (``reasons``) and the figures."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def promotion_verdict(config: PromotionConfig, evidence: PromotionEvidence) -> PromotionVerdict:
    """Apply the rule; every check's figures are in ``checks`` (stored with the decision)."""
    validation_ok, validation = _validation(config, evidence)
    agrees, agreement = _agreement(config, evidence.shadow)
    beats, feedback = _feedback(config, evidence.feedback)
    reasons = []
    if not validation_ok:
        reasons.append(f"not better on validation ({config.validation_metric})")
    if not (agrees or beats):
        reasons.append("neither agrees with the live version (shadow) nor beats it on feedback")
    if not evidence.canary_passed:
        reasons.append("has not passed its canary")
    checks = {**validation, **agreement, **feedback, "canary_passed": evidence.canary_passed,
              "validation_ok": validation_ok, "agrees": agrees, "beats_on_feedback": beats}
    return PromotionVerdict(allowed=not reasons, reasons=reasons, checks=checks)


def _validation(config: PromotionConfig, evidence: PromotionEvidence) -> tuple[bool, dict[str, Any]]:
    live = evidence.live_metrics.get(config.validation_metric)
    challenger = evidence.challenger_metrics.get(config.validation_metric)
    ok = live is not None and challenger is not None and challenger - live > config.min_validation_gain
    return ok, {"validation_metric": config.validation_metric, "live_validation": live,
                "challenger_validation": challenger, "min_validation_gain": config.min_validation_gain}


def _agreement(config: PromotionConfig, shadow: ShadowRecord | None) -> tuple[bool, dict[str, Any]]:
    texts = shadow.texts if shadow else 0
    agreement = shadow.agreement() if shadow else None
    ok = agreement is not None and texts >= config.min_shadow_texts and agreement >= config.min_agreement
    return ok, {"shadow_texts": texts, "agreement": None if agreement is None else round(agreement, 4),
                "min_agreement": config.min_agreement, "min_shadow_texts": config.min_shadow_texts}


def _feedback(config: PromotionConfig, feedback: FeedbackAccuracy | None) -> tuple[bool, dict[str, Any]]:
    if feedback is None:
        return False, {"feedback_labels": 0}
    ok = (feedback.labels >= config.min_feedback_labels
          and feedback.challenger_accuracy - feedback.live_accuracy > config.min_feedback_gain)
    return ok, {"feedback_labels": feedback.labels, "live_feedback_accuracy": feedback.live_accuracy,
                "challenger_feedback_accuracy": feedback.challenger_accuracy,
                "min_feedback_gain": config.min_feedback_gain, "min_feedback_labels": config.min_feedback_labels}
