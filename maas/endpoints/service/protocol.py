"""The service family's protocol: the model objects of ``/v1/models``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from maas.protocol.base import WireModel, now

# ----------------------------------------------------------------------------- models


class ModelTraining(WireModel):
    """Where a registry classifier's training run stands (``maas status`` shows the same)."""

    state: Literal["training", "done", "failed"]
    phase: str = Field("", description="e.g. `queued`, `linear probe`, `fine-tune`, `evaluating`.")
    step: int | None = None
    total: int | None = None
    eta_s: float | None = Field(None, description="Estimated seconds left in this phase.")
    detail: str = Field("", description="The last result, or the error.")
    updated_at: str = ""


class ShadowSummary(WireModel):
    """What shadow traffic found for one (live version, challenger version) pair, over every
    ingress replica since the challenger appeared."""

    live_version: str = Field(description="The live version the shadowed requests were answered by.")
    requests: int = Field(description="Requests also sent to the challenger (answered or failed).")
    errors: int = Field(description="Of those, the ones the challenger failed (clients saw none).")
    dropped: int = Field(description="Sampled requests not shadowed: `max_in_flight` shadow calls were running.")
    texts: int = Field(description="Texts both versions answered.")
    agreement: float | None = Field(description="Share of those texts with the same top label.")
    live_confidence: float | None = Field(description="Mean top-label probability of the live version.")
    challenger_confidence: float | None = Field(description="The same for the challenger.")
    live_latency_ms: float | None = Field(description="Mean latency of the live call, answered shadow calls.")
    challenger_latency_ms: float | None = Field(description="Mean latency of the challenger's call, the same.")
    updated_at: str = Field("", description="When a replica last added to these figures (UTC).")


class ModelChallenger(WireModel):
    """A registry version newer than the live one and not live: shadowed, not answering clients."""

    version: str = Field(description="The challenger's registry version, e.g. `v3`.")
    shadow: ShadowSummary | None = Field(
        None, description="Shadow traffic's findings against the live version; none before the first shadowed request.")


class CanaryArm(WireModel):
    """One version's requests during a canary, over every ingress replica."""

    requests: int = Field(description="Requests sent to this version (answered or failed).")
    errors: int = Field(description="Of those, the failed ones (a canary's were answered by the live version).")
    error_rate: float | None = Field(description="errors / requests; none before the first request.")
    p95_ms: float | None = Field(description="p95 latency of the latest answered calls (milliseconds).")


class RunningCanary(WireModel):
    """A canary answering a share of the model's requests now."""

    version: str = Field(description="The canary version, e.g. `v3`.")
    live_version: str = Field(description="The live version it is compared with.")
    percent: float = Field(description="Share of the requests for the model's name it answers, in percent.")
    held: bool = Field(description="It passed its canary but the promotion rule did not (yet): it keeps running.")
    live: CanaryArm = Field(description="The live version's figures since the canary started.")
    canary: CanaryArm = Field(description="The canary version's figures.")
    started_at: str = Field("", description="When `maas rollout --canary` started it (UTC).")
    updated_at: str = Field("", description="When a replica last added to these figures (UTC).")


class CanaryDecisionView(WireModel):
    """One decision about a canary, as stored in the registry."""

    action: Literal["started", "held", "rolled_back", "promoted", "cancelled"]
    version: str = Field(description="The canary version decided on.")
    live_version: str = Field(description="The live version it was compared with.")
    at: str = Field(description="When (UTC).")
    reason: str = Field("", description="Why, for people.")
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="Counts, error rates, p95s (ms), thresholds and, for a promotion, the rule's checks.")


class ModelCanary(WireModel):
    """A registry classifier's canary: the running one, if any, and the latest decisions."""

    running: RunningCanary | None = Field(None, description="The canary running now; none between canaries.")
    decisions: list[CanaryDecisionView] = Field(
        default_factory=list, description="The latest decisions, oldest first (the registry keeps more).")


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "maas"
    capability: Literal["generate", "classify", "embed", "entities", "translate"]
    max_model_len: int | None = None
    version: str | None = Field(None, description="Live registry version (classifiers from the registry).")
    status: Literal["ready", "cold", "training", "failed", "not_trained"] = Field(
        "ready",
        description="`ready`: answers now. `cold`: its deployment scaled to zero (no replica "
        "running); the next request starts one and is answered after the cold start (503 "
        "`cold_start_timeout` with `Retry-After` past the deployment's `cold_start_timeout_s`). A "
        "registry classifier with no live version is `training` (its requests get 503 "
        "`model_not_ready` with `Retry-After`), `failed`, or `not_trained` (train it with `maas train`).",
    )
    training: ModelTraining | None = Field(
        None, description="A training run of this model in progress or ended (registry classifiers)."
    )
    challenger: ModelChallenger | None = Field(
        None, description="A registry classifier's challenger version and its shadow traffic statistics.")
    canary: ModelCanary | None = Field(
        None, description="A registry classifier's canary and its decisions; none if it never had one.")
    pairs: list[str] | None = Field(None, description="Language pairs, e.g. `en-pt` (translation models).")
    parent: str | None = Field(None, description="The base model a LoRA adapter runs on (as vLLM lists adapters).")


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


